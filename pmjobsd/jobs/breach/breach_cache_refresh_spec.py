"""Declaration of the built-in job ``breach_cache_refresh``: defaults, options and metrics.

Run by :mod:`pmjobsd.jobs.breach.breach_cache_refresh`.
"""

from __future__ import annotations

from typing import Annotated

from pmjobsd.api import Duration, JobMetric, JobSpec, Meta, Overlap, Struct, after


def _http_url(value: str) -> str:
    """An http(s) base URL without its trailing slash; the error does not quote it (a mirror's URL may hold a token)."""
    if not value.startswith(("https://", "http://")) or len(value.split("://", 1)[1].strip("/")) == 0:
        raise ValueError("expected an http(s) base URL such as https://api.pwnedpasswords.com")
    return value.rstrip("/")


HttpUrl = Annotated[str, after(_http_url)]


class BreachCacheRefreshOptions(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options under ``jobs.definitions.breach_cache_refresh.options``."""

    api_base: Annotated[HttpUrl, Meta(description="Pwned Passwords range API (or a mirror)")] = (
        "https://api.pwnedpasswords.com"
    )
    breach_api_base: Annotated[HttpUrl, Meta(description="HIBP API for /api/v3/latestbreach")] = (
        "https://haveibeenpwned.com"
    )
    check_latest_breach: Annotated[bool, Meta(description="ask latestbreach each run; a new breach refreshes all")] = (
        True
    )
    max_age: Annotated[Duration, Meta(gt=0, description="refresh a trusted entry at most once per this")] = 86400.0
    max_requests: Annotated[int, Meta(ge=1, description="per-run budget of prefixes fetched")] = 2000
    rate_limit: Annotated[float, Meta(ge=0, description="requests per second; 0 lifts the client-side limit")] = 10.0
    concurrency: Annotated[int, Meta(ge=1, le=32, description="requests in flight at once")] = 4
    request_timeout: Annotated[Duration, Meta(gt=0, description="timeout of one request")] = 15.0
    retries: Annotated[int, Meta(ge=0, le=10, description="retries of a prefix after 5xx, reset or timeout")] = 3
    backoff_initial: Annotated[Duration, Meta(ge=0, description="first retry delay; doubles each retry")] = 0.5
    max_retry_after: Annotated[Duration, Meta(ge=0, description="a longer 429 Retry-After ends the run's fetching")] = (
        300.0
    )
    min_plausible_suffixes: Annotated[
        int, Meta(ge=0, description="shorter entries are suspect (real ranges hold ~800)")
    ] = 100
    checkpoint_every: Annotated[int, Meta(ge=1, description="merge into the cache file after this many refreshed")] = (
        1000
    )
    checkpoint_interval: Annotated[Duration, Meta(gt=0, description="or after this long since the last merge")] = 120.0


JOB = JobSpec(
    name="breach_cache_refresh",
    func="pmjobsd.jobs.breach.breach_cache_refresh:run",
    description="Refresh the app's Pwned Passwords range cache: repair bad entries, then the stalest, politely",
    defaults={
        "cron": "0 */6 * * *",
        "timeout": "30m",
        "retries": 1,
        "jitter": "5m",
        "overlap": Overlap.SKIP,
        "catch_up": True,
        "backoff": {"initial": "5m", "factor": 2.0, "max": "1h"},
        "scope": "vault",  # with jobs.coordination: once per slot for the whole group
        "on_holder_lost": "retry",  # idempotent: another machine may run a slot whose holder died
    },
    options_model=BreachCacheRefreshOptions,
    tags=("network", "app-cache"),
    metrics=(
        JobMetric(
            "prefixes_refreshed",
            "pmjobsd_breach_prefixes_refreshed",
            "HIBP range prefixes refreshed by the last breach cache refresh",
        ),
        JobMetric(
            "prefixes_failed",
            "pmjobsd_breach_prefixes_failed",
            "HIBP range prefixes that failed in the last breach cache refresh",
        ),
        JobMetric(
            "prefixes_in_cache", "pmjobsd_breach_prefixes_cached", "Prefixes in the breach cache after the last refresh"
        ),
    ),
)
