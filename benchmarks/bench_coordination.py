"""Coordination through Redis: what a claim costs per run, the group side's calls, and the failover time.

    python benchmarks/bench_coordination.py [--quick]

Everything runs against a real ``redis-server`` started here on a free
127.0.0.1 port (no persistence), with redis-py as the daemon uses it
(``coord.engine.connect``).  Per-call rows are the median of many calls, each
timed alone with ``time.perf_counter``; the baseline is the round trips the
call cannot avoid (one ``PING`` per Redis call it makes), so the ratio is
what the Lua scripts and the client add on top of the network.

* claim + release per run: ``coord.claims.Claims`` (SET NX with an expiry and
  the fencing counter's INCR, one Lua script; then the release script) when it
  is there, else the same two steps as two inline scripts (named in the notes);
* one heartbeat (``coord.group.Heartbeat.beat``: one Lua script) and one
  published run (``XADD ... MAXLEN ~``, what ``RunPublisher`` does per run);
* failover: two real ``pmjobsd run`` daemons (one shared data folder, their own
  state folders), a vault job with ``on_holder_lost: retry`` that runs for
  20 s, lease 2 s; the holder is ``kill -9``ed mid-run and the row is the time
  until the other daemon starts the same slot.  Needs the claim side
  (``coord.coordinator``); without it the row says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO, print_table, row
from pmjobsd.coord import engine, keys

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
LEASE = 2.0

# Used only while coord.claims is not there: the same atomic steps (claim: SET NX PX + INCR; release:
# delete if still ours), so the figure is comparable; the real scripts replace it once they land.
_CLAIM_INLINE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
  return token
end
return false
"""
_RELEASE_INLINE = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '|' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(folder), "--logfile", str(folder / "redis.log")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = engine.connect(url, member="bench", timeout=1.0)
    for _ in range(500):
        try:
            client.ping()
            break
        except Exception:
            time.sleep(0.02)
    client.close()
    return proc, url


def median_us(call, count: int) -> float:
    for _ in range(min(50, count)):  # warm: connection made, scripts loaded
        call()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def claim_rows(url: str, count: int) -> list[dict]:
    client = engine.connect(url, member="bench", timeout=5.0)
    ping = median_us(client.ping, count)
    slots = iter(range(10**9))
    if importlib.util.find_spec("pmjobsd.coord.claims") is not None:
        from pmjobsd.coord.claims import Claims

        claims = Claims(client, group="bench", member="bench", lease=LEASE)

        def claim_release() -> None:
            claim = claims.claim("job", str(next(slots)))
            assert claim.won
            claims.release(claim)

        how = "coord.claims.Claims claim() + release()"
    else:
        claim_script, release_script = client.register_script(_CLAIM_INLINE), client.register_script(_RELEASE_INLINE)

        def claim_release() -> None:
            key = keys.claim("bench", "job", str(next(slots)))
            assert claim_script(keys=[key, keys.token("bench", "job")], args=["bench", int(LEASE * 1000)])
            release_script(keys=[key], args=["bench"])

        how = "inline SET NX PX + INCR and compare-and-delete scripts (coord.claims not on this branch)"
    claim = median_us(claim_release, count)

    from pmjobsd.coord.group import Heartbeat, run_entry
    from pmjobsd.coord.state import CoordinationState
    from pmjobsd.core.observers import RunRecord

    heartbeat = Heartbeat(url, "bench", "bench", 30.0, CoordinationState("bench", "bench", url), host="bench")
    beat = median_us(heartbeat.beat, count)
    heartbeat.stop()
    now = time.time()
    record = RunRecord("0" * 32, "breach_cache_refresh", 1, "schedule", datetime.now(timezone.utc), now, "OK", now)
    entry = run_entry(record, "bench", "bench", 12)
    stream = keys.runs("bench")
    publish = median_us(lambda: client.xadd(stream, entry, maxlen=10_000, approximate=True), count)  # type: ignore[arg-type]
    length = client.xlen(stream)
    client.close()
    return [
        row(
            "claim + release of one slot", claim, 2 * ping, "2 PINGs (the round trips it needs)", "us",
            f"median of {count}; {how}; one PING {ping:.0f} us; local redis-server, redis-py",
        ),
        row(
            "one heartbeat (member key + members set)", beat, ping, "1 PING", "us",
            f"median of {count}; Heartbeat.beat(): one Lua script (HMGET, HSET, PEXPIRE, ZADD, ZREMRANGEBYSCORE)",
        ),
        row(
            "publish one run to the group stream", publish, ping, "1 PING", "us",
            f"median of {count}; XADD MAXLEN ~ 10000 (stream held {length} entries after); off the runner's thread",
        ),
    ]  # fmt: skip


# --- failover ----------------------------------------------------------------------------------
def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "NOTIFY_SOCKET", "JOURNAL_STREAM"))}
    env.update(HOME=str(root), XDG_RUNTIME_DIR=str(root / "run"), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return env


def _settings(path: Path, url: str, member: str, marker: Path) -> None:
    from pmjobsd.core import registry

    definitions: dict = {name: {"enabled": False} for name in registry.BUILTIN_JOBS}
    definitions["vault_slow"] = {
        "cron": "0,30 * * * * *",
        "callable": "benchmarks.probe_jobs:mark_and_wait",
        "scope": "vault",
        "on_holder_lost": "retry",
        "catch_up": False,
        "timeout": 60,
        "options": {"out": str(marker), "who": member, "seconds": 20},
    }
    coordination = {"url": url, "group": "bench", "member": member, "lease": f"{LEASE}s"}
    jobs = {"timezone": "UTC", "wake_interval": "1s", "coordination": coordination, "definitions": definitions}
    path.write_text(json.dumps({"jobs": jobs}))
    path.chmod(0o600)


def _starts(marker: Path) -> list[tuple[str, str, float]]:
    """(member, slot, start time) of every start the probe job wrote."""
    if not marker.exists():
        return []
    return [(who, slot, float(at)) for who, slot, at in (line.split() for line in marker.read_text().splitlines())]


def _wait(predicate, timeout: float):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return None


def failover_seconds(url: str, root: Path) -> tuple[float | None, str]:
    """kill -9 of the holder mid-run -> the other daemon starts the slot; (seconds, note)."""
    root.mkdir(parents=True)
    (root / "run").mkdir(mode=0o700)
    marker = root / "starts.txt"
    daemons = {}
    for member in ("alpha", "beta"):
        settings = root / f"{member}.json"
        _settings(settings, url, member, marker)
        daemons[member] = subprocess.Popen(
            [sys.executable, "-m", "pmjobsd", "--settings", str(settings), "run", "--no-console"],
            env=_env(root),
            stdout=subprocess.DEVNULL,
            stderr=open(root / f"{member}.stderr", "w"),
        )
    try:
        first = _wait(lambda: _starts(marker), 45)
        if not first:
            return None, "no start within 45 s: " + (root / "alpha.stderr").read_text()[-200:]
        holder, slot, _ = first[0]
        time.sleep(0.5)  # mid-run
        killed_at = time.time()
        daemons[holder].send_signal(signal.SIGKILL)
        daemons[holder].wait(10)
        other = _wait(lambda: next((s for s in _starts(marker) if s[1] == slot and s[0] != holder), None), 30)
        if other is None:
            return None, f"the slot was not taken over within 30 s (holder {holder})"
        starts = [s for s in _starts(marker) if s[1] == slot]
        return other[2] - killed_at, f"slot started {len(starts)} times (holder, then the takeover)"
    finally:
        for proc in daemons.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)


def failover_rows(url: str, folder: Path, repeats: int) -> list[dict]:
    if importlib.util.find_spec("pmjobsd.coord.coordinator") is None:
        return [
            row(
                "failover: holder kill -9 -> slot run elsewhere", None, LEASE, "the lease", "s",
                "not measured: needs the claim side (coord.coordinator, branch s17a)",
            )
        ]  # fmt: skip
    results, notes = [], []
    for attempt in range(repeats):
        seconds, note = failover_seconds(url, folder / f"failover-{attempt}")
        notes.append(note)
        if seconds is not None:
            results.append(seconds)
    if not results:
        return [row("failover: holder kill -9 -> slot run elsewhere", None, LEASE, "the lease", "s", notes[-1])]
    return [
        row(
            "failover: holder kill -9 -> slot run elsewhere", statistics.median(results), LEASE, "the lease", "s",
            f"median of {len(results)} of {repeats}: {', '.join(f'{s:.2f}' for s in results)} s; two daemons, one "
            f"shared data folder, lease {LEASE:.0f} s, on_holder_lost retry; {notes[-1]}",
        )
    ]  # fmt: skip


def run(quick: bool = False) -> list[dict]:
    count = 500 if quick else 5000
    with tempfile.TemporaryDirectory(prefix="bench_coordination_") as name:
        folder = Path(name)
        proc, url = start_redis(folder)
        try:
            rows = claim_rows(url, count)
            rows += failover_rows(url, folder, 1 if quick else 3)
        finally:
            proc.kill()
            proc.wait(10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 calls instead of 5,000; one failover")
    print_table(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
