"""breach_cache_refresh against a real HTTP server on 127.0.0.1 and real cache/state files."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pmjobsd.api import ValidationError, validate
from pmjobsd.core.context import Status
from pmjobsd.core.registry import job_function, load_builtin
from pmjobsd.jobs.breach import breach_cache_refresh
from pmjobsd.jobs.breach.breach_cache_refresh import STATE_FILE, BreachCacheRefreshOptions, run_refresh
from pmjobsd.jobs.breach.breach_cache_refresh_spec import JOB
from pmjobsd.jobs.breach.cache import encode_entry, merge_entries, read_cache
from pmjobsd.jobs.breach.hibp import RangeFormatError, RateGate, parse_range_body, parse_retry_after
from tests.support.fake_hibp import FakeHIBP
from tests.support.helpers import make_context

CANARY_PASSWORDS = ["canary-Hunter2-7f3a9", "canary-CorrectHorse-11b0"]


def sha1_parts(password: str) -> tuple[str, str]:
    digest = hashlib.sha1(password.encode()).hexdigest().upper()
    return digest[:5], digest[5:]


# --- the app's reading code ---------------------------------------------------------------
def _import_app_analyzer():
    """The real package (pip install --no-deps secure-password-manager==1.11.0), or None.

    Its import resolves BREACH_CACHE_FILE and creates the cache folder, so point XDG_CACHE_HOME
    at a throw-away folder meanwhile: tests never touch the real home."""
    import tempfile

    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="spm-import-")
    try:
        from secure_password_manager.utils import security_analyzer

        return security_analyzer
    except Exception:  # pragma: no cover - depends on the CI image
        return None
    finally:
        if saved is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = saved


app_analyzer = _import_app_analyzer()


def restated_check_password_breach(cache_file: Path, password: str) -> tuple[bool, int] | None:
    """Exact re-statement of the cached branch of check_password_breach and _get_cached_breach_data,
    secure_password_manager 1.11.0, utils/security_analyzer.py lines 17-26, 29-45 and 73-84.
    Returns None where the app would fall through to the network."""
    sha1_hash = hashlib.sha1(password.encode()).hexdigest().upper()
    prefix, suffix = sha1_hash[:5], sha1_hash[5:]
    if not os.path.exists(cache_file):
        return None
    try:
        with open(cache_file) as f:
            cache = json.load(f)
        cached_results = cache.get(prefix)
    except (OSError, json.JSONDecodeError):
        return None
    if cached_results is None:
        return None
    for hash_suffix, count in cached_results:
        if hash_suffix == suffix:
            return True, count
    return False, 0


def app_check(cache_file: Path, password: str, monkeypatch) -> tuple[bool, int]:
    """Ask the app's own check_password_breach (offline: a network call fails the test)."""
    expected = restated_check_password_breach(cache_file, password)
    assert expected is not None, "the app would have gone to the network"
    if app_analyzer is not None:
        monkeypatch.setattr(app_analyzer, "BREACH_CACHE_FILE", str(cache_file))

        def no_network(*args, **kwargs):
            raise AssertionError("the app went to the network: the cache did not answer")

        monkeypatch.setattr(app_analyzer.requests, "get", no_network)
        assert app_analyzer.check_password_breach(password) == expected
    return expected


def app_truncated_entry(pairs: list[tuple[str, int]], suffix: str) -> list[list]:
    """What the app caches when it stops reading at the first match (security_analyzer.py 53-62)."""
    out = []
    for hash_suffix, count in pairs:
        out.append([hash_suffix, count])
        if hash_suffix == suffix:
            break
    return out


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture()
def server():
    with FakeHIBP() as fake:
        yield fake


class FakeClock:
    """Monotonic clock whose sleep advances it: rate limits and Retry-After cost no real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(round(seconds, 3))
            self.now += seconds


def options(server: FakeHIBP, **overrides) -> BreachCacheRefreshOptions:
    base = dict(
        api_base=server.base,
        breach_api_base=server.base,
        rate_limit=0,
        concurrency=4,
        min_plausible_suffixes=50,
        request_timeout=5,
        backoff_initial=0.01,
    )
    base.update(overrides)
    return validate(BreachCacheRefreshOptions, base)


def write_app_cache(home: Path, cache: dict) -> Path:
    """Write the cache as the app does (json.dump, umask mode)."""
    path = make_context(home, "x").paths.breach_cache_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(cache, f)
    return path


def full_entry(server: FakeHIBP, prefix: str) -> list[list]:
    return [[s, c] for s, c in server.pairs(prefix)]


def prefixes(n: int, start: int = 0) -> list[str]:
    return [f"{i:05X}" for i in range(start, start + n)]


def run(home: Path, opts, **kw):
    ctx = make_context(home, "breach_cache_refresh", opts)
    return ctx, run_refresh(ctx, **kw)


# --- format and helpers -------------------------------------------------------------------------
def test_the_app_package_is_what_we_test_against(tmp_path, monkeypatch):
    """The installed app is the version the re-statement quotes, and its own reader answers a
    cache exactly as the re-statement does (a listed suffix, an unlisted one, an empty entry)."""
    # Informative when the package is missing: the re-statement is then the only check.
    if app_analyzer is None:
        pytest.skip("secure-password-manager not installed; using the exact re-statement only")
    from importlib.metadata import version

    assert version("secure-password-manager") == "1.11.0"
    (listed_prefix, listed_suffix), (other_prefix, _) = (sha1_parts(p) for p in CANARY_PASSWORDS)
    cache_file = tmp_path / "breach_cache.json"
    cache_file.write_text(json.dumps({listed_prefix: [["0" * 35, 1], [listed_suffix, 42]], other_prefix: []}))
    assert app_check(cache_file, CANARY_PASSWORDS[0], monkeypatch) == (True, 42)
    assert app_check(cache_file, CANARY_PASSWORDS[1], monkeypatch) == (False, 0)
    cache_file.write_text(json.dumps({listed_prefix: [["0" * 35, 1]]}))
    assert app_check(cache_file, CANARY_PASSWORDS[0], monkeypatch) == (False, 0)


def test_parse_range_body_drops_padding_and_rejects_other_formats():
    body = (
        "0018A45C4D1DEF81644B54AB7F969B88D65:10\r\n00D4F6E8FA6EECAD2A3AA415EEC418D38EC:0\r\n"
        "011053FD0102E94D6AE2F8B83D76FAF94F6:1"
    )
    assert parse_range_body(body) == [
        ["0018A45C4D1DEF81644B54AB7F969B88D65", 10],
        ["011053FD0102E94D6AE2F8B83D76FAF94F6", 1],
    ]
    for garbage in ["", "<html></html>", '{"a": 1}', "0018A45C4D1DEF81644B54AB7F969B88D65:10\r\n011053FD01"]:
        with pytest.raises(RangeFormatError):
            parse_range_body(garbage)


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("2", now=0) == 2.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 5) == pytest.approx(5.0)
    assert parse_retry_after("soon", now=0) is None


def test_rate_gate_spaces_requests_and_pauses_everyone():
    clock = FakeClock()
    gate = RateGate(10, clock=clock, sleep=clock.sleep)
    start = clock()
    for _ in range(11):
        assert gate.wait()
    assert clock() - start == pytest.approx(1.0)  # 11 starts at 10/s span 1 s
    gate.pause(3)
    before = clock()
    assert gate.wait()
    assert clock() - before == pytest.approx(3.0)
    gate.stop.set()
    assert gate.wait() is False


def test_registered_with_defaults_and_options_validated():
    spec = load_builtin("breach_cache_refresh")
    assert spec is JOB and job_function(spec).load() is breach_cache_refresh.run
    assert spec.defaults["cron"] == "0 */6 * * *" and spec.defaults["timeout"] == "30m"
    assert spec.defaults["retries"] == 1
    assert BreachCacheRefreshOptions().rate_limit == 10 and BreachCacheRefreshOptions().max_age == 86400
    assert validate(BreachCacheRefreshOptions, {"max_age": "12h"}).max_age == 43200
    with pytest.raises(ValidationError) as err:
        validate(BreachCacheRefreshOptions, {"api_base": "ftp://T0KEN@mirror", "concurrency": 0, "surprise": 1})
    assert [loc for loc, _ in err.value.problems] == [("api_base",), ("concurrency",), ("surprise",)]
    assert "T0KEN" not in str(err.value)  # a mirror's URL may carry a token: the words never quote it


# --- the job ---------------------------------------------------------------------------------------
def test_repairs_truncated_and_empty_entries_first_and_the_app_reads_them(server, home, jobs_log, monkeypatch):
    (pw_truncated, pw_empty) = CANARY_PASSWORDS
    p1, s1 = sha1_parts(pw_truncated)
    p2, s2 = sha1_parts(pw_empty)
    server.extra[p1] = [(s1, 4242)]
    server.extra[p2] = [(s2, 77)]
    # The app stopped reading p1 at the first match of *another* password, before s1.
    pairs = server.pairs(p1)
    other = pairs[len(pairs) // 3 - 1][0] if pairs[len(pairs) // 3 - 1][0] != s1 else pairs[0][0]
    truncated = app_truncated_entry(pairs, other)
    assert [s1, 4242] not in truncated
    trusted_looking = prefixes(3, start=0x10)  # full, plausible, but never fetched by pmjobsd
    cache = {p1: truncated, p2: [], **{p: full_entry(server, p) for p in trusted_looking}}
    cache_path = write_app_cache(home, cache)
    assert app_check(cache_path, pw_truncated, monkeypatch) == (False, 0)  # the app's bug, before
    assert app_check(cache_path, pw_empty, monkeypatch) == (False, 0)

    ctx, result = run(home, options(server, max_requests=2, concurrency=1))

    assert result.status is Status.OK, result.summary
    fetched = [r["path"][-5:] for r in server.range_requests()]
    assert sorted(fetched) == sorted([p1, p2])  # the budget went to the suspect entries
    assert result.metrics["prefixes_repaired"] == 2
    assert result.details["due_by_reason"] == {"malformed_or_empty": 1, "not_fetched_by_pmjobsd": 4} or result.details[
        "due_by_reason"
    ] == {"malformed_or_empty": 1, "implausibly_short": 1, "not_fetched_by_pmjobsd": 3}
    assert app_check(cache_path, pw_truncated, monkeypatch) == (True, 4242)
    assert app_check(cache_path, pw_empty, monkeypatch) == (True, 77)
    after = read_cache(cache_path)
    assert all(count > 0 for pair_list in after.values() for _, count in pair_list)  # padding dropped
    assert after[trusted_looking[0]] == cache[trusted_looking[0]]


def test_speaks_the_api_politely_and_uses_etags(server, home):
    cache_path = write_app_cache(home, {p: [] for p in prefixes(6)})
    _, first = run(home, options(server))
    assert first.status is Status.OK and first.metrics["prefixes_refreshed"] == 6
    requests_seen = server.range_requests()
    for request in requests_seen:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers["add-padding"] == "true"
        assert headers["user-agent"].startswith("pmjobsd/")
        assert "gzip" in headers["accept-encoding"]
        assert "if-none-match" not in headers
        assert len(headers["x-request-id"]) == 32
    # Compressed transfer: bytes counted are what crossed the wire, less than the text.
    text_size = sum(len("\r\n".join(f"{s}:{c}" for s, c in server.pairs(p))) for p in prefixes(6))
    assert 0 < first.metrics["bytes_transferred"] < text_size
    stored = read_cache(cache_path)
    assert stored[prefixes(6)[0]] == full_entry(server, prefixes(6)[0])

    # Fresh within max_age: nothing is asked again.
    server.requests.clear()
    _, second = run(home, options(server))
    assert second.status is Status.OK and "fresh" in second.summary and server.range_requests() == []

    # max_age passed: conditional requests, 304 keeps the entry and counts as fresh.
    before = cache_path.read_bytes()
    _, third = run(home, options(server, max_age=0.001))
    assert third.metrics["prefixes_unchanged"] == 6 and third.metrics["prefixes_refreshed"] == 0
    assert all(r["headers"].get("If-None-Match") for r in server.range_requests())
    assert cache_path.read_bytes() == before

    # The range changed upstream: new data is stored and counted (counts only).
    server.version = 2
    _, fourth = run(home, options(server, max_age=0.001))
    assert fourth.metrics["prefixes_refreshed"] == 6 and fourth.metrics["increased_breach_counts"] > 0
    assert read_cache(cache_path)[prefixes(6)[0]] == full_entry(server, prefixes(6)[0])


def test_stalest_first_within_budget(server, home):
    write_app_cache(home, {p: [] for p in prefixes(5)})
    run(home, options(server))
    state = sqlite3.connect(make_context(home, "breach_cache_refresh").state_dir / STATE_FILE)
    ages = {"00000": 5, "00001": 1, "00002": 3, "00003": 4, "00004": 2}  # days ago
    for prefix, days in ages.items():
        state.execute("UPDATE prefixes SET fetched_at=? WHERE prefix=?", (time.time() - days * 86400, prefix))
    state.commit()
    state.close()
    server.requests.clear()
    _, result = run(home, options(server, max_requests=2, concurrency=1, max_age="36h"))
    assert [r["path"][-5:] for r in server.range_requests()] == ["00000", "00003"]
    assert result.details["over_budget"] == 2


def test_429_pauses_all_requests_for_retry_after(server, home):
    write_app_cache(home, {p: [] for p in prefixes(4)})
    server.faults["00000"] = ["429:2"]
    clock = FakeClock()
    _, result = run(home, options(server, concurrency=1, rate_limit=100), monotonic=clock, sleep=clock.sleep)
    assert result.status is Status.OK, result.summary
    assert result.metrics["prefixes_refreshed"] == 4 and result.metrics["rate_limited_responses"] == 1
    assert 2.0 in clock.sleeps  # the Retry-After pause, on the injected clock
    assert sum(clock.sleeps) >= 2.0 + 3 * 0.01 - 1e-9  # and the 100/s spacing of the other starts


def test_429_longer_than_allowed_stops_the_run(server, home):
    write_app_cache(home, {p: [] for p in prefixes(6)})
    server.faults["00000"] = ["429:3600"]
    _, result = run(home, options(server, concurrency=1))
    assert result.status is Status.FAIL
    assert result.details["failures_by_error"] == {"rate_limited": 1}
    assert result.metrics["prefixes_skipped"] == 5 and len(server.range_requests()) == 1


def test_5xx_and_resets_retry_with_backoff_and_persistent_failure_is_left_as_it_was(server, home):
    cache = {p: [] for p in prefixes(4)}
    cache["00003"] = [["0" * 35, 1]]  # what the app had for the prefix that will keep failing
    cache_path = write_app_cache(home, cache)
    server.faults["00000"] = ["500", "500"]
    server.faults["00001"] = ["cut"]
    server.faults["00003"] = ["500"] * 10
    clock = FakeClock()
    _, result = run(home, options(server, retries=2, backoff_initial=0.5), sleep=clock.sleep, monotonic=clock)
    assert result.status is Status.WARN, result.summary
    assert result.metrics["prefixes_refreshed"] == 3 and result.metrics["prefixes_failed"] == 1
    assert result.details["failures_by_error"] == {"http_500": 1}
    assert sorted(clock.sleeps) == sorted([0.5, 1.0, 0.5, 0.5, 1.0])  # exponential backoff per prefix
    stored = read_cache(cache_path)
    assert stored["00003"] == [["0" * 35, 1]]  # left as it was
    assert stored["00000"] == full_entry(server, "00000")


@pytest.mark.parametrize("fault", ["html", "json", "binary", "partial_line", "cut"])
def test_garbage_answers_are_never_stored(server, home, fault):
    original = {"00000": [["A" * 35, 3]], "00001": []}
    cache_path = write_app_cache(home, original)
    server.faults = {"00000": [fault] * 5, "00001": [fault] * 5}
    _, result = run(home, options(server, retries=1))
    assert result.status is Status.FAIL and result.metrics["prefixes_failed"] == 2
    assert read_cache(cache_path) == original


def test_slow_answer_times_out_and_others_still_refresh(server, home):
    write_app_cache(home, {p: [] for p in prefixes(3)})
    server.faults["00001"] = ["slow:1.0"]
    _, result = run(home, options(server, request_timeout=0.2, retries=0))
    assert result.status is Status.WARN
    assert result.details["failures_by_error"] == {"timeout": 1} and result.metrics["prefixes_refreshed"] == 2


APP_WRITER = """
import json, os, sys
cache_file = sys.argv[1]
entry = [["B" * 35, 9]]
try:
    from secure_password_manager.utils import security_analyzer as app
    app.BREACH_CACHE_FILE = cache_file
    write = app._cache_breach_data
except Exception:
    def write(prefix, hashes):  # restated: security_analyzer.py lines 87-108 (read, update, rewrite in place)
        cache = {}
        if os.path.exists(cache_file):
            try:
                with open(cache_file) as f:
                    cache = json.load(f)
            except (OSError, json.JSONDecodeError):
                pass
        cache[prefix] = hashes
        with open(cache_file, "w") as f:
            json.dump(cache, f)
for line in sys.stdin:  # one prefix per line, written when pmjobsd's hook asks for it
    write(line.strip(), entry)
    print("written", flush=True)
"""


def test_concurrent_app_writer_keeps_its_prefixes(server, home, tmp_path, monkeypatch):
    """The app, in its own process, adds a prefix with its unlocked, in-place writer exactly
    between pmjobsd's read of the file and its rename: the merge notices and merges again."""
    from pmjobsd.jobs.breach import cache as breach_cache

    cache_path = write_app_cache(home, {p: [] for p in prefixes(40)})
    added = prefixes(3, start=0x80000)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "app-xdg")}
    app = subprocess.Popen(
        [sys.executable, "-c", APP_WRITER, str(cache_path)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    cues = iter(added)

    def app_writes_now(path: Path) -> None:
        prefix = next(cues, None)
        if prefix is None:
            return
        assert app.stdin is not None and app.stdout is not None
        app.stdin.write(prefix + "\n")
        app.stdin.flush()
        assert app.stdout.readline() == "written\n"  # the app's write is on disk before we go on
        assert prefix in read_cache(path)

    monkeypatch.setattr(breach_cache, "before_replace_hook", app_writes_now)
    try:
        _, result = run(home, options(server, concurrency=2, checkpoint_every=4))
    finally:
        assert app.stdin is not None
        app.stdin.close()
        assert app.wait(timeout=60) == 0
    assert next(cues, None) is None  # the app wrote all three times, inside pmjobsd's merges
    final = read_cache(cache_path)
    assert {p: final.get(p) for p in added} == {p: [["B" * 35, 9]] for p in added}  # every app write survived
    assert {p: final.get(p) for p in prefixes(40)} == {p: full_entry(server, p) for p in prefixes(40)}
    assert result.status is Status.OK, result.summary


def test_pmjobsd_writers_serialise_on_the_lock(tmp_path):
    path = tmp_path / "breach_cache.json"
    path.write_text("{}")

    def writer(base: int):
        for i in range(25):
            merge_entries(path, {f"{base + i:05X}": encode_entry([["C" * 35, i + 1]])})

    threads = [threading.Thread(target=writer, args=(base,)) for base in (0, 0x100, 0x200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(read_cache(path)) == 75


def test_corrupt_cache_is_moved_aside_and_rebuilt(server, home):
    cache_path = write_app_cache(home, {p: [] for p in prefixes(3)})
    run(home, options(server))
    damaged = b'{"00000": [["' + b"A" * 35 + b'", 3]], "0ABCD": [["12'  # cut mid-write
    cache_path.write_bytes(damaged)
    os.chmod(cache_path, 0o640)
    os.utime(cache_path, (time.time() - 120,) * 2)  # left broken (a crash), not being written now
    _, result = run(home, options(server))
    assert result.status is Status.WARN and "corrupt" in result.summary
    aside = list(cache_path.parent.glob("breach_cache.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged
    assert result.details["corrupt_file_moved_to"] == aside[0].name
    rebuilt = read_cache(cache_path)
    assert set(rebuilt) == set(prefixes(3)) | {"0ABCD"}  # known to state + names still legible
    assert rebuilt["0ABCD"] == full_entry(server, "0ABCD")
    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o600


def test_a_half_written_file_of_a_paused_app_is_left_alone(server, home):
    cache_path = write_app_cache(home, {p: [] for p in prefixes(3)})
    run(home, options(server))
    half = cache_path.read_bytes()[:20]  # the app truncated and stalled mid json.dump just now
    cache_path.write_bytes(half)
    _, result = run(home, options(server))
    assert cache_path.read_bytes() == half  # the app's write can still complete into this file
    assert not list(cache_path.parent.glob("breach_cache.json.corrupt-*"))
    assert result.status is Status.WARN and "corrupt_file_moved_to" not in result.details
    assert result.summary == "breach cache is being rewritten by the app; nothing refreshed this run"
    assert "written 30 s ago or less; the app may be writing it" in result.details["error"]


def test_cancel_half_way_saves_what_was_fetched(server, home):
    cache_path = write_app_cache(home, {p: [] for p in prefixes(40)})
    ctx = make_context(home, "breach_cache_refresh", options(server, concurrency=1, checkpoint_every=1000))
    server.on_request = lambda count: ctx.cancel_event.set() if count == 10 else None
    result = run_refresh(ctx)
    assert result.status is Status.WARN and result.details["cancelled"] is True
    refreshed = result.metrics["prefixes_refreshed"]
    assert 9 <= refreshed <= 11 and result.metrics["prefixes_skipped"] == 40 - refreshed
    assert "stopped early" in result.summary
    stored = read_cache(cache_path)
    assert sum(1 for p in prefixes(40) if stored[p]) == refreshed  # saved, though below the checkpoint size
    # The next run picks up where this one stopped.
    _, again = run(home, options(server))
    assert again.metrics["prefixes_refreshed"] == 40 - refreshed


def test_new_breach_refreshes_everything_regardless_of_max_age(server, home):
    write_app_cache(home, {p: [] for p in prefixes(5)})
    _, first = run(home, options(server))
    assert first.details["latest_breach"]["new"] is False
    server.requests.clear()
    _, second = run(home, options(server))
    assert "fresh" in second.summary and server.range_requests() == []
    server.latest = {"Name": "NewerBreach", "AddedDate": "2026-11-27T08:00:00Z"}
    _, third = run(home, options(server, max_requests=3))
    assert third.details["latest_breach"] == {"name": "NewerBreach", "added": "2026-11-27T08:00:00Z", "new": True}
    assert "new breach 'NewerBreach'" in third.summary
    assert third.details["due_by_reason"] == {"new_breach": 5} and third.details["full_refresh_pending"] == 2
    _, fourth = run(home, options(server))  # the rest, though not stale
    assert fourth.metrics["prefixes_unchanged"] + fourth.metrics["prefixes_refreshed"] == 2
    assert fourth.details["full_refresh_pending"] == 0


def test_latest_breach_unavailable_does_not_stop_the_refresh(server, home):
    write_app_cache(home, {p: [] for p in prefixes(2)})
    _, result = run(home, options(server, breach_api_base=server.base + "/nowhere"))
    assert result.status is Status.OK and result.details["latest_breach"] == {"error": "HTTPError"}


def test_no_cache_file_is_ok_and_writes_nothing(server, home):
    _, result = run(home, options(server))
    assert result.status is Status.OK and server.requests == []
    assert not make_context(home, "x").paths.breach_cache_path.exists()


def test_modes_kept_and_private_state(server, home):
    cache_path = write_app_cache(home, {p: [] for p in prefixes(2)})
    os.chmod(cache_path, 0o644)
    ctx, _ = run(home, options(server))
    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o644  # the app's file keeps its mode
    assert stat.S_IMODE((ctx.state_dir / STATE_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(ctx.state_dir.stat().st_mode) == 0o700
    assert not list(cache_path.parent.glob(".breach_cache.json.*.tmp"))


def test_privacy_no_hash_or_password_in_logs_or_result(server, home, jobs_log):
    cache = {}
    canaries = []
    for password in CANARY_PASSWORDS:
        prefix, suffix = sha1_parts(password)
        server.extra[prefix] = [(suffix, 31337)]
        cache[prefix] = []
        canaries += [password, prefix, suffix]
    write_app_cache(home, cache)
    server.faults[sha1_parts(CANARY_PASSWORDS[0])[0]] = ["500", "html"]
    _, result = run(home, options(server, retries=1))
    assert result.metrics["prefixes_refreshed"] == 1 and result.metrics["prefixes_failed"] == 1
    text = jobs_log.read_text() + result.summary + json.dumps(result.details) + json.dumps(result.metrics)
    assert "breach_cache.planned" in text and "breach_cache.prefix_failed" in text
    for canary in canaries:
        assert canary not in text


def test_a_file_the_app_is_still_writing_is_read_again_not_moved_aside(tmp_path):
    from pmjobsd.jobs.breach.cache import read_stable, summarise

    path = tmp_path / "breach_cache.json"
    whole = json.dumps({"00000": [["A" * 35, 1]]})
    path.write_text(whole[:10])  # the app truncated the file and is half-way through json.dump

    def finish():
        time.sleep(0.02)
        path.write_text(whole)

    thread = threading.Thread(target=finish)
    thread.start()
    _, data = read_stable(path, pause=0.3)
    thread.join()
    assert data == {"00000": summarise([["A" * 35, 1]])}  # what planning keeps of the entry
    assert not list(tmp_path.glob("*.corrupt-*"))


def test_unreadable_cache_fails_naming_the_file(server, home):
    cache_path = make_context(home, "x").paths.breach_cache_path
    cache_path.mkdir(parents=True)  # a folder where the file should be (root reads any mode)
    _, result = run(home, options(server))
    assert result.status is Status.FAIL and str(cache_path) in result.summary
    assert server.range_requests() == []


@pytest.mark.parametrize("fault", ["html", "json", "binary", "partial_line"])
def test_a_garbage_200_is_retried_and_the_good_answer_stored(server, home, fault):
    cache_path = write_app_cache(home, {"00000": [], "00001": []})
    server.faults = {"00000": [fault]}  # one garbage 200 (a captive portal, a proxy hiccup), then the range
    _, result = run(home, options(server, retries=2))
    assert result.status is Status.OK, result.summary
    assert result.metrics["prefixes_refreshed"] == 2 and result.metrics["requests_sent"] == 3
    assert read_cache(cache_path)["00000"] == full_entry(server, "00000")
