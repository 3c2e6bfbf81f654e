"""Job ``breach_cache_refresh``: keep the app's Pwned Passwords range cache fresh.

Refreshes only prefixes already in ``breach_cache.json`` (pmjobsd never learns
new ones and never drops one), suspicious entries first (empty, malformed,
implausibly short, or not written by pmjobsd — the app caches truncated lists
and ``[]``), then the stalest, each at most once per ``max_age`` unless a new
breach was reported since.  Fetches politely (:mod:`pmjobsd.jobs.breach.hibp`), merges
atomically (:mod:`pmjobsd.jobs.breach.cache`), keeps ETags and fetch times in its
own state (:mod:`pmjobsd.jobs.breach.state`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pmjobsd.api import JobContext, JobResult, validate
from pmjobsd.jobs.breach import cache as breach_cache
from pmjobsd.jobs.breach.breach_cache_refresh_spec import BreachCacheRefreshOptions
from pmjobsd.jobs.breach.cache import CacheCorrupt, EntrySummary, encode_entry, fingerprint
from pmjobsd.jobs.breach.state import BreachState

# requests (through .hibp) is imported when the job runs, not when the settings name the job.
if TYPE_CHECKING:
    import requests

    from pmjobsd.jobs.breach.hibp import FetchResult, RangeClient

STATE_FILE = "breach_cache_state.sqlite"
# Why each prefix is due, most urgent first (lower rank runs first, whatever its age).
REASONS = ("malformed_or_empty", "implausibly_short", "not_fetched_by_pmjobsd", "new_breach", "stale")


@dataclass
class Planned:
    prefix: str
    reason: str
    etag: str | None


@dataclass
class Refreshed:
    """A prefix answered with a new list: the list as JSON text (a tenth of its objects' size),
    its fingerprint and its length."""

    text: str
    digest: str
    length: int


# What a prefix of a corrupt file is planned as: nothing usable, so it is refetched first.
UNUSABLE = EntrySummary(well_formed=False, length=0, digest="")


@dataclass
class Tally:
    refreshed: int = 0
    unchanged: int = 0
    failed: int = 0
    skipped: int = 0
    bytes_received: int = 0
    requests: int = 0
    rate_limited: int = 0
    new_suffixes: int = 0
    increased_counts: int = 0
    repaired: int = 0
    checkpoints: int = 0
    write_errors: int = 0
    errors: Counter = field(default_factory=Counter)


def plan_refresh(
    cache: dict[str, EntrySummary],
    known: dict,
    *,
    now: float,
    options: BreachCacheRefreshOptions,
    full_refresh_since: float | None,
) -> tuple[list[Planned], Counter]:
    """Given the cache's summaries and pmjobsd's state, return (prefixes to fetch in order, reasons counted).

    Order: by reason rank, then fewest recent failures, then stalest.  Cut to ``max_requests``.
    """
    ranked = []
    for prefix, entry in cache.items():
        if not isinstance(prefix, str) or not breach_cache.PREFIX.fullmatch(prefix):
            continue  # not a range prefix: the app's business, left untouched
        state = known.get(prefix)
        trusted = state is not None and state.fingerprint is not None and state.fingerprint == entry.digest
        fetched_at = state.fetched_at if state and state.fetched_at else 0.0
        if not entry.well_formed or not entry.length:
            reason = "malformed_or_empty"
        elif entry.length < options.min_plausible_suffixes:
            reason = "implausibly_short"
        elif not trusted:
            reason = "not_fetched_by_pmjobsd"
        elif full_refresh_since is not None and fetched_at < full_refresh_since:
            reason = "new_breach"
        elif now - fetched_at >= options.max_age:
            reason = "stale"
        else:
            continue
        # An ETag may only vouch for what pmjobsd itself stored: a 304 must not keep the app's truncated list.
        etag = state.etag if trusted and state is not None else None
        ranked.append((REASONS.index(reason), min(state.failures if state else 0, 3), fetched_at, prefix, reason, etag))
    ranked.sort()
    reasons = Counter(item[4] for item in ranked)
    return [Planned(item[3], item[4], item[5]) for item in ranked[: options.max_requests]], reasons


def run_refresh(
    ctx: JobContext,
    *,
    wall_clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] | None = None,
    session: requests.Session | None = None,
) -> JobResult:
    """The job, with its clocks, sleep and HTTP session injectable for tests and benchmarks."""
    from pmjobsd.jobs.breach.hibp import RangeClient, RateGate, make_session

    options = (
        ctx.options
        if isinstance(ctx.options, BreachCacheRefreshOptions)
        else validate(BreachCacheRefreshOptions, ctx.options or {})
    )
    cache_path = ctx.paths.breach_cache_path
    log = ctx.log
    details: dict = {}
    with BreachState(ctx.state_dir / STATE_FILE) as state:
        known = state.all()

        # 1. Read the cache; a corrupt one is planned from what we knew plus the names still legible.
        corrupt = False
        cache: dict[str, EntrySummary]
        try:
            _, cache = breach_cache.read_stable(cache_path)
        except breach_cache.CacheBusy as exc:
            return JobResult.warn(
                "breach cache is being rewritten by the app; nothing refreshed this run", details={"error": str(exc)}
            )
        except OSError as exc:
            return JobResult.fail(
                f"cannot read the breach cache {cache_path}: {exc.strerror or exc}",
                details={"error": exc.__class__.__name__},
            )
        except CacheCorrupt as exc:
            corrupt = True
            log.warning("breach_cache.corrupt", error=str(exc))
            cache = dict.fromkeys(set(known) | breach_cache.salvage_prefixes(cache_path), UNUSABLE)
        if not cache_path.exists() and not corrupt:
            return JobResult.ok(
                "no breach cache yet: the app has not checked a password", metrics={"prefixes_in_cache": 0}
            )

        gate = RateGate(options.rate_limit, clock=monotonic, stop=ctx.cancel_event, sleep=sleep)
        client = RangeClient(
            options.api_base,
            gate,
            session if session is not None else make_session(options.concurrency, ctx.run_id),
            timeout=options.request_timeout,
            retries=options.retries,
            backoff_initial=options.backoff_initial,
            max_retry_after=options.max_retry_after,
            time_left=ctx.time_left,
            wall_clock=wall_clock,
        )
        try:
            # 2. Risk-adaptive: a breach newer than the last one seen makes every entry due.
            new_breach = _check_latest_breach(ctx, options, state, client, wall_clock(), details)
            since_text = state.get_meta("full_refresh_since")
            full_refresh_since = float(since_text) if since_text else None

            # 3. Plan and fetch.
            planned, reasons = plan_refresh(
                cache, known, now=wall_clock(), options=options, full_refresh_since=full_refresh_since
            )
            log.info(
                "breach_cache.planned",
                prefixes_in_cache=len(cache),
                due=sum(reasons.values()),
                planned=len(planned),
                **{f"due_{key}": value for key, value in reasons.items()},
            )
            tally = _fetch_and_merge(
                ctx,
                options,
                client,
                state,
                cache,
                planned,
                cache_path,
                wall_clock,
                monotonic,
                corrupt,
                details,
            )
        finally:
            client.close()

        if full_refresh_since is not None:
            remaining = [p for p, s in state.all().items() if p in cache and (s.fetched_at or 0) < full_refresh_since]
            if not remaining:
                state.set_meta("full_refresh_since", None)
                state.commit()
            details["full_refresh_pending"] = len(remaining)

    return _result(ctx, options, tally, reasons, planned, cache, corrupt, new_breach, details)


def _check_latest_breach(
    ctx: JobContext,
    options: BreachCacheRefreshOptions,
    state: BreachState,
    client: RangeClient,
    now: float,
    details: dict,
) -> str | None:
    """Record the latest breach; return its name if it is newer than the last one seen."""
    if not options.check_latest_breach:
        return None
    import requests

    from pmjobsd.jobs.breach.hibp import fetch_latest_breach

    try:
        latest = fetch_latest_breach(
            client.session, options.breach_api_base, timeout=max(0.5, min(options.request_timeout, ctx.time_left()))
        )
    except (requests.RequestException, ValueError) as exc:
        error = exc.__class__.__name__ if isinstance(exc, requests.RequestException) else str(exc)
        ctx.log.warning("breach_cache.latest_breach_unavailable", error=error)
        details["latest_breach"] = {"error": error}
        return None
    seen_added, seen_name = state.get_meta("latest_breach_added"), state.get_meta("latest_breach_name")
    is_new = (
        seen_added is not None and (latest.added, latest.name) != (seen_added, seen_name) and latest.added >= seen_added
    )
    if seen_added is None or latest.added >= seen_added:  # a withdrawn breach must not rewind what we saw
        state.set_meta("latest_breach_added", latest.added)
        state.set_meta("latest_breach_name", latest.name)
    if is_new:
        # Persisted, so a run cut short by its budget or deadline keeps going next time.
        state.set_meta("full_refresh_since", repr(now))
        ctx.log.info("breach_cache.new_breach", breach=latest.name, added=latest.added)
    state.commit()
    details["latest_breach"] = {"name": latest.name, "added": latest.added, "new": is_new}
    return latest.name if is_new else None


def _fetch_and_merge(
    ctx: JobContext,
    options: BreachCacheRefreshOptions,
    client: RangeClient,
    state: BreachState,
    cache: dict,
    planned: list[Planned],
    cache_path: Path,
    wall_clock: Callable[[], float],
    monotonic: Callable[[], float],
    corrupt: bool,
    details: dict,
) -> Tally:
    from pmjobsd.jobs.breach.hibp import FetchResult

    tally = Tally()
    pending: dict[str, tuple[FetchResult, Refreshed]] = {}
    reason_of = {item.prefix: item.reason for item in planned}

    def fetch(item: Planned) -> tuple[FetchResult, Refreshed | None]:
        if ctx.cancelled:
            return FetchResult(item.prefix, "failed", error="cancelled"), None
        result = client.fetch(item.prefix, item.etag)
        entries = result.entries
        if result.kind != "refreshed" or entries is None:
            return result, None
        # Per-answer work stays in the worker: the main thread only merges and records.
        return result, Refreshed(encode_entry(entries), fingerprint(entries), len(entries))

    def checkpoint(force: bool = False) -> None:
        if not pending and not force:
            return
        updates = {prefix: refreshed.text for prefix, (_, refreshed) in pending.items()}
        try:
            report = breach_cache.merge_entries(cache_path, updates, before_replace=ctx.check_fence)
        except OSError as exc:  # lock timeout, disk full, app rewriting without pause
            tally.write_errors += 1
            tally.failed += len(pending)
            tally.refreshed -= len(pending)
            tally.errors["cache_write"] += len(pending)
            ctx.log.error("breach_cache.write_failed", error=exc.__class__.__name__, prefixes=len(pending))
            pending.clear()
            last_checkpoint[0] = monotonic()
            return
        _note_quarantine(ctx, report, details)
        for diff in report.diffs.values():
            tally.new_suffixes += diff.new_suffixes
            tally.increased_counts += diff.increased_counts
        fetched_at = wall_clock()
        # State follows the file: only what is on disk is recorded as fetched.
        for prefix, (result, refreshed) in pending.items():
            state.record_fetched(prefix, result.etag, fetched_at, refreshed.digest, refreshed.length)
        state.commit()
        if report.written:
            tally.checkpoints += 1
            ctx.log.info(
                "breach_cache.checkpoint",
                merged=len(pending),
                prefixes_total=report.prefixes_total,
                kept_from_others=report.kept_from_others,
                merge_retries=report.retries,
            )
        pending.clear()
        last_checkpoint[0] = monotonic()

    last_checkpoint = [monotonic()]
    total = len(planned)
    with ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="hibp") as pool:
        futures = [pool.submit(fetch, item) for item in planned]
        for done, future in enumerate(as_completed(futures), start=1):
            result, refreshed = future.result()
            tally.requests += result.requests
            tally.bytes_received += result.bytes_received
            tally.rate_limited += result.rate_limited
            if refreshed is not None:
                tally.refreshed += 1
                if REASONS.index(reason_of[result.prefix]) <= 2:
                    tally.repaired += 1
                pending[result.prefix] = (result, refreshed)
                # Each merge rewrites the whole file (tens of MB for a big vault): batch them.
                if (
                    len(pending) >= options.checkpoint_every
                    or monotonic() - last_checkpoint[0] >= options.checkpoint_interval
                ):
                    checkpoint()
            elif result.kind == "unchanged":
                tally.unchanged += 1
                state.record_unchanged(result.prefix, result.etag, wall_clock())
            elif result.error in ("cancelled", "deadline"):
                tally.skipped += 1
            else:
                tally.failed += 1
                tally.errors[result.error or "unknown"] += 1
                state.record_failed(result.prefix, result.error or "unknown")
                ctx.log.warning("breach_cache.prefix_failed", error=result.error, requests=result.requests)
            if done % 50 == 0 or done == total:
                ctx.progress(done / total if total else 1.0, f"{done} of {total} prefixes")
    checkpoint(force=corrupt)
    if corrupt and "corrupt_file_moved_to" not in details:
        # Nothing fetched: still move the damaged file aside so the app starts from a readable one.
        try:
            _note_quarantine(ctx, breach_cache.merge_entries(cache_path, {}, before_replace=ctx.check_fence), details)
        except OSError as exc:
            ctx.log.error("breach_cache.write_failed", error=exc.__class__.__name__, prefixes=0)
    state.commit()
    return tally


def _note_quarantine(ctx: JobContext, report: breach_cache.MergeReport, details: dict) -> None:
    if report.quarantined_to is not None:
        details["corrupt_file_moved_to"] = report.quarantined_to.name
        ctx.log.warning("breach_cache.corrupt_moved_aside", moved_to=report.quarantined_to.name)


def _result(
    ctx: JobContext,
    options: BreachCacheRefreshOptions,
    tally: Tally,
    reasons: Counter,
    planned: list[Planned],
    cache: dict,
    corrupt: bool,
    new_breach: str | None,
    details: dict,
) -> JobResult:
    due = sum(reasons.values())
    metrics = {
        "prefixes_in_cache": len(cache),
        "prefixes_due": due,
        "prefixes_planned": len(planned),
        "prefixes_refreshed": tally.refreshed,
        "prefixes_unchanged": tally.unchanged,
        "prefixes_failed": tally.failed,
        "prefixes_skipped": tally.skipped,
        "prefixes_repaired": tally.repaired,
        "bytes_transferred": tally.bytes_received,
        "requests_sent": tally.requests,
        "rate_limited_responses": tally.rate_limited,
        "new_breached_suffixes": tally.new_suffixes,
        "increased_breach_counts": tally.increased_counts,
        "cache_writes": tally.checkpoints,
    }
    details.update(
        {
            "due_by_reason": dict(reasons),
            "failures_by_error": dict(tally.errors),
            "over_budget": max(0, due - len(planned)),
            "cancelled": ctx.cancelled,
        }
    )
    parts = [
        f"{tally.refreshed} refreshed, {tally.unchanged} unchanged (304), {tally.failed} failed"
        f" of {len(planned)} due prefixes; {_size(tally.bytes_received)};"
        f" {tally.new_suffixes} new and {tally.increased_counts} raised breach counts"
    ]
    if tally.repaired:
        parts.append(f"{tally.repaired} suspect entries repaired")
    if new_breach:
        parts.append(f"new breach {new_breach!r} reported: refreshing all prefixes")
    moved_to = details.get("corrupt_file_moved_to")
    if moved_to:
        parts.append(f"cache file was corrupt: moved aside as {moved_to} and rebuilt")
    elif corrupt:
        parts.append("cache file was corrupt and could not be moved aside")
    if ctx.cancelled or tally.skipped:
        parts.append(f"stopped early, {tally.skipped} not fetched (saved what was fetched)")
    summary = "; ".join(parts)
    if not planned and not moved_to:
        return JobResult.ok(f"all {len(cache)} cached prefixes are fresh", details=details, metrics=metrics)
    if tally.failed and not (tally.refreshed or tally.unchanged):
        return JobResult.fail(summary, details=details, metrics=metrics)
    if tally.failed or tally.skipped or corrupt or moved_to or ctx.cancelled:
        return JobResult.warn(summary, details=details, metrics=metrics)
    return JobResult.ok(summary, details=details, metrics=metrics)


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"


def run(ctx: JobContext) -> JobResult:
    """Refresh the breach cache (see module docstring)."""
    return run_refresh(ctx)
