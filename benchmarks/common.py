"""Shared pieces of the core benchmarks: result rows, /proc readings, a temporary app home, sd_notify.

Every row has the keys of ``KEYS``; ``ratio`` is always ``pmjobsd / baseline``
(so for a cost below 1 is better, for a throughput above 1 is better).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KEYS = ["benchmark", "pmjobsd", "baseline", "baseline_name", "unit", "ratio", "notes"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def sig(value: float | None, digits: int = 3) -> float | None:
    """``value`` rounded to ``digits`` significant digits (None stays None)."""
    if value is None:
        return None
    return float(f"{value:.{digits}g}")


def row(
    benchmark: str, ours: float | None, baseline: float | None, baseline_name: str, unit: str, notes: str = ""
) -> dict:
    """One result row; ratio = pmjobsd / baseline."""
    ratio = sig(ours / baseline) if ours is not None and baseline else None
    return {
        "benchmark": benchmark,
        "pmjobsd": sig(ours),
        "baseline": sig(baseline),
        "baseline_name": baseline_name,
        "unit": unit,
        "ratio": ratio,
        "notes": notes,
    }


def print_table(rows: list[dict]) -> None:
    widths = {key: max(len(key), *(len(str(r.get(key))) for r in rows)) for key in KEYS if key != "notes"}
    print("  ".join(key.ljust(widths.get(key, 0)) for key in KEYS))
    for r in rows:
        print("  ".join(str(r.get(key)).ljust(widths.get(key, 0)) for key in KEYS))


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max of ``values``."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered), p99, ordered[-1]


# --- /proc ------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_counters(pid: int) -> dict[int, tuple[int, int]]:
    """tid -> (voluntary context switches, on-CPU nanoseconds from schedstat) for every thread."""
    counters = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
            run_ns = int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended while we looked
        switches = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt_switches")
        )
        counters[int(task.name)] = (switches, run_ns)
    return counters


def memory_kb(pid: int, key: str = "VmRSS") -> int:
    """A line of /proc/PID/status in kB: VmRSS (resident now) or VmHWM (peak resident)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class ProcessSample:
    """CPU, wake-ups and thread counters of one process at one moment."""

    def __init__(self, pid: int):
        self.pid = pid
        self.cpu = cpu_seconds(pid)
        self.threads = thread_counters(pid)

    def since(self, earlier: ProcessSample) -> dict:
        """Differences from ``earlier``; threads born in between count from zero."""
        wakeups = sum(now[0] - earlier.threads.get(tid, (0, 0))[0] for tid, now in self.threads.items())
        run_ns = sum(now[1] - earlier.threads.get(tid, (0, 0))[1] for tid, now in self.threads.items())
        return {
            "cpu_s": self.cpu - earlier.cpu,
            "wakeups": wakeups,
            "run_ms": run_ns / 1e6,
            "threads": len(self.threads),
            "rss_kb": memory_kb(self.pid),
        }


# --- a temporary app home ------------------------------------------------------------------
def home_env(root: Path, notify_socket: Path | None = None) -> dict[str, str]:
    """Environment for a child on the temporary HOME ``root`` (XDG folders, repo on the path)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM"))
    }
    (root / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
    env.update(
        HOME=str(root),
        XDG_RUNTIME_DIR=str(root / "run"),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
    )
    if notify_socket is not None:
        env["NOTIFY_SOCKET"] = str(notify_socket)
    return env


def write_settings(root: Path, jobs: dict) -> Path:
    """Write the app's settings.json under ``root`` with ``jobs`` as its ``"jobs"`` key."""
    config = root / ".config/secure-password-manager"
    config.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = config / "settings.json"
    path.write_text(json.dumps({"theme": "dark", "jobs": jobs}))
    return path


def pmjobsd_command() -> list[str]:
    return [sys.executable, "-m", "pmjobsd", "run", "--no-console"]


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET; records when READY=1 arrives."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until a datagram with READY=1 arrives; return time.perf_counter() at its arrival."""
        end = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                message = self.sock.recv(4096)
            except TimeoutError:
                raise TimeoutError(f"no READY=1 on {self.path} within {timeout:g}s") from None
            if b"READY=1" in message.split(b"\n"):
                return time.perf_counter()

    def keep_draining(self) -> None:
        """Read and drop every later datagram (WATCHDOG=1, STATUS=) on a thread, as systemd would.

        A Unix datagram queue holds only ~10 messages (net.unix.max_dgram_qlen):
        a sender whose messages are not read blocks.
        """
        self.sock.settimeout(None)

        def drain() -> None:
            try:
                while self.sock.recv(4096):
                    pass
            except OSError:
                pass  # closed

        threading.Thread(target=drain, name="notify-drain", daemon=True).start()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.path.unlink(missing_ok=True)


def _run_id(started: float, ids) -> str:
    """:func:`pmjobsd.core.runner.new_run_id` of ``started``, its random bits from ``ids`` (repeatable)."""
    raw = bytearray(int(started * 1000).to_bytes(6, "big") + ids.getrandbits(80).to_bytes(10, "big"))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def fill_history(path: Path, jobs: list[str], attempts: int, start: float, duration: float, payload=None) -> None:
    """``attempts`` finished attempts of ``jobs`` in turn, one a second from ``start``, every outcome.

    As the runner writes them: time-ordered 32-hex run ids (UUID version 7 of each start, its
    random bits seeded here) and, the runs being scheduled, each its slot.  Bulk-inserted without the summary triggers (a
    million rows in seconds), then the history is opened once more, which fills its
    ``job_summary`` as on an upgrade.
    """
    import random
    import sqlite3
    from datetime import datetime, timezone

    from pmjobsd.core.history import RunHistory

    RunHistory(path).close()  # the schema, the summary and its triggers
    statuses = ["OK", "OK", "WARN", "FAIL"]
    ids = random.Random(attempts)
    rows = (
        (_run_id(start + index, ids), 1, jobs[index % len(jobs)], "schedule",
         datetime.fromtimestamp(int(start + index), timezone.utc).isoformat(), start + index,
         start + index + duration, statuses[index % 4], "bench", None, int(duration * 1000), "{}",
         json.dumps(payload(index)) if payload else "{}", 1, 1, None, None, None)
        for index in range(attempts)
    )  # fmt: skip
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA cache_size = -262144")  # the indexes in memory while filling
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE job_summary")
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO runs VALUES ({', '.join('?' * 18)})", rows)  # the last two: member, token
        conn.execute("COMMIT")
    finally:
        conn.close()
    RunHistory(path).close()  # a history without the summary: filled once, as on upgrade
