"""A polite client for the Pwned Passwords range API and the HIBP latest-breach endpoint.

Politeness is shared by every worker thread of a run through one :class:`RateGate`:
a client-side rate limit (requests start at most ``rate`` per second) and a
global pause when the server answers 429 with ``Retry-After``.  5xx answers,
answers not in the range format, connection resets and timeouts retry with
exponential backoff.  An answer
that is not in the range format is never returned as data.

Clock and sleep are injectable so rate limits and backoff are testable
without slow tests.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import requests
from requests.adapters import HTTPAdapter

from pmjobsd import __version__

USER_AGENT = f"pmjobsd/{__version__} (Secure Password Manager breach cache refresh)"
# A whole range answer: lines of 35 hex digits (the SHA-1 suffix), a colon, a count, CRLF between.
# Checked with one C-level match over the body, not a Python loop per line (2,000 bodies of ~1,000 lines).
_RANGE_BODY = re.compile(r"[0-9A-F]{35}:[0-9]{1,12}(?:(?:\r?\n)+[0-9A-F]{35}:[0-9]{1,12})*")
_RANGE_PAIR = re.compile(r"([0-9A-F]{35}):([0-9]{1,12})")
# Retry-After values above this are treated as "stop for this run" by callers.
MAX_RETRY_AFTER = 24 * 3600.0

Sleep = Callable[[float], None]
Clock = Callable[[], float]


class RangeFormatError(ValueError):
    """A 200 answer whose body is not ``SUFFIX:COUNT`` lines (HTML, JSON, binary, cut short)."""


def parse_range_body(text: str) -> list[list]:
    """Given a range answer body, return ``[[SUFFIX, count], ...]`` without padding lines.

    Raise RangeFormatError unless every non-empty line is ``35 hex:digits`` and
    at least one line is present (a real answer, padded or not, has hundreds).
    Padding lines (count 0, sent for ``Add-Padding: true``) are dropped.
    """
    body = text.strip("\r\n").upper()
    if not body:
        raise RangeFormatError("empty body")
    if _RANGE_BODY.fullmatch(body) is None:
        raise RangeFormatError("not SUFFIX:COUNT lines")
    return [[suffix, int(count)] for suffix, count in _RANGE_PAIR.findall(body) if count.strip("0")]


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class RateGate:
    """Spaces request starts ``1/rate`` seconds apart and pauses everyone after a 429.

    ``rate`` <= 0 means no client-side limit (the 429 pause still applies).
    ``wait()`` returns False, without waiting further, once ``stop`` is set.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep | None = None,
        stop: threading.Event | None = None,
    ):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock = clock
        self.stop = stop or threading.Event()
        # Waiting on the stop event (not time.sleep) lets a cancel wake every sleeper.
        self.sleep = sleep or (lambda seconds: self.stop.wait(seconds))
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._halted = threading.Event()
        self.pauses = 0

    def halt(self) -> None:
        """Start no more requests this run (the server asked for a longer wait than we may make)."""
        self._halted.set()

    def pause(self, seconds: float) -> None:
        """Hold every request start for ``seconds`` from now (a 429's Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock() + seconds)
            self.pauses += 1

    def paused_for(self) -> float:
        with self._lock:
            return max(0.0, self._paused_until - self.clock())

    def wait(self) -> bool:
        """Block until this caller may start a request; False if the run was stopped."""
        while not (self.stop.is_set() or self._halted.is_set()):
            with self._lock:
                now = self.clock()
                slot = max(now, self._next_slot, self._paused_until)
                if slot <= now:
                    self._next_slot = now + self.interval
                    return True
                delay = slot - now
            # Sleep outside the lock, then re-check: a 429 may have moved the pause meanwhile.
            self.sleep(delay)
        return False


@dataclass
class FetchResult:
    """Outcome of one prefix: ``kind`` is "refreshed", "unchanged" (304) or "failed"."""

    prefix: str
    kind: str
    entries: list | None = None
    etag: str | None = None
    bytes_received: int = 0
    requests: int = 0
    rate_limited: int = 0
    error: str | None = None  # a short category, never a URL or body


@dataclass
class RangeClient:
    """Fetches ``GET {api_base}/range/{PREFIX}`` with padding, ETags and retries.

    One pooled ``requests.Session`` serves all worker threads (plain GETs only,
    no cookies relied upon).  ``timeout`` bounds each request; ``time_left``
    (seconds until the run's deadline) bounds it further and stops retries.
    """

    api_base: str
    gate: RateGate
    session: requests.Session  # make_session() gives the pooled one the job uses
    timeout: float = 15.0
    retries: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 300.0
    time_left: Callable[[], float] = lambda: float("inf")
    wall_clock: Clock = time.time

    def __post_init__(self) -> None:
        self.api_base = self.api_base.rstrip("/")

    def close(self) -> None:
        self.session.close()

    def _sleep_backoff(self, attempt: int) -> None:
        self.gate.sleep(min(self.backoff_initial * 2**attempt, self.backoff_max))

    def fetch(self, prefix: str, etag: str | None = None) -> FetchResult:
        """Fetch one prefix; never raises for network or format problems."""
        result = FetchResult(prefix, "failed")
        headers = {"Add-Padding": "true"}
        if etag:
            headers["If-None-Match"] = etag
        failures = 0
        throttles = 0
        while True:
            if not self.gate.wait():
                result.error = "cancelled"
                return result
            remaining = self.time_left()
            if remaining <= 0.5:
                result.error = "deadline"
                return result
            result.requests += 1
            try:
                response = self.session.get(
                    f"{self.api_base}/range/{prefix}", headers=headers, timeout=min(self.timeout, remaining)
                )
                body = response.content  # reads (and decompresses) the whole answer
                result.bytes_received += _wire_bytes(response, body)
            except requests.Timeout:
                result.error = "timeout"
            except (
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ):
                result.error = "connection"
            except requests.RequestException:
                result.error = "request"
            else:
                status = response.status_code
                if status == 304:
                    result.kind, result.etag, result.error = "unchanged", response.headers.get("ETag", etag), None
                    return result
                if status == 200:
                    try:
                        result.entries = parse_range_body(body.decode("ascii"))
                    except (UnicodeDecodeError, RangeFormatError):
                        # Not the range format: never stored.  Retried like a 5xx (a proxy or CDN
                        # hiccup passes; a captive portal just uses up this prefix's retries).
                        result.error = "bad_format"
                    else:
                        result.kind, result.etag, result.error = "refreshed", response.headers.get("ETag"), None
                        return result
                elif status == 429:
                    throttles += 1
                    result.rate_limited += 1
                    wait = parse_retry_after(response.headers.get("Retry-After"), self.wall_clock())
                    wait = self.backoff_initial * 2**throttles if wait is None else wait
                    result.error = "rate_limited"
                    if wait > min(self.max_retry_after, self.time_left()) or throttles > self.retries + 2:
                        self.gate.halt()
                        return result
                    self.gate.pause(wait)
                    continue  # a 429 is the server pacing us, not a failure of this prefix
                else:
                    result.error = f"http_{status}"
                    if status < 500:
                        return result  # 4xx other than 429: retrying will not help
            failures += 1
            if failures > self.retries:
                return result
            self._sleep_backoff(failures - 1)


def _wire_bytes(response: requests.Response, body: bytes) -> int:
    # urllib3's tell() counts bytes read from the socket, i.e. compressed size.
    try:
        wire = int(response.raw.tell())
    except (AttributeError, TypeError, ValueError):
        wire = 0
    return wire or len(body)


def make_session(pool_size: int = 4, run_id: str | None = None) -> requests.Session:
    """One pooled session with pmjobsd's User-Agent (requests asks for gzip/deflate itself)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(1, pool_size))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    if run_id:
        session.headers["X-Request-ID"] = run_id  # the run id travels with its requests
    return session


@dataclass(frozen=True)
class LatestBreach:
    name: str
    added: str  # AddedDate as sent (ISO 8601); compared as text, which orders ISO dates


def fetch_latest_breach(session: requests.Session, breach_api_base: str, timeout: float) -> LatestBreach:
    """``GET {breach_api_base}/api/v3/latestbreach`` (no API key needed).

    Raise ValueError naming what was expected when the answer is not a breach object,
    ``requests.RequestException`` on network errors.
    """
    response = session.get(f"{breach_api_base.rstrip('/')}/api/v3/latestbreach", timeout=timeout)
    response.raise_for_status()
    try:
        data = response.json()
    except ValueError:
        raise ValueError("latestbreach: expected a JSON object, got a non-JSON body") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("Name"), str)
        or not isinstance(data.get("AddedDate"), str)
    ):
        raise ValueError("latestbreach: expected a JSON object with string 'Name' and 'AddedDate'")
    return LatestBreach(name=data["Name"], added=data["AddedDate"])
