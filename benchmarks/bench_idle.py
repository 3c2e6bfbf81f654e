"""Idle cost and start-up of the real ``pmjobsd run`` next to a `schedule` loop and APScheduler 3.

    python benchmarks/bench_idle.py [--quick] [--seconds 60]

Three real processes, each on its own temporary HOME, each with the six
built-in jobs at their default cron times (pmjobsd: every built-in job
``enabled: true, catch_up: false``, no alert target, no desktop alerts, so
nothing runs and nothing leaves the machine):

* pmjobsd: ``python -m pmjobsd run`` with the default ``wake_interval`` (60 s);
* ``baselines/schedule_loop.py``: ``run_pending()`` then ``sleep(1)``, forever;
* ``baselines/apscheduler_background.py``: a BackgroundScheduler, 4 threads.

Every program runs from compiled bytecode, as an installed package does: pmjobsd's
modules are byte-compiled once first, and PYTHONDONTWRITEBYTECODE (which some shells
and sandboxes set) is dropped for the children, so no start compiles our source again
while the baselines' site-packages were compiled by pip.

Start-up: time from just before exec to the READY=1 datagram on a real
NOTIFY_SOCKET (each program sends it once its jobs are scheduled), and the
peak resident memory (VmHWM) at that moment; median of several starts.
Idle: the three run side by side; after a settling pause, CPU over the
window (on-CPU nanoseconds from /proc/PID/task/*/schedstat; utime+stime from
/proc/PID/stat, which counts 10 ms ticks, in the notes), voluntary context
switches summed over every thread (/proc/PID/task/*/status) and RSS.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    REPO,
    NotifySocket,
    ProcessSample,
    home_env,
    memory_kb,
    pmjobsd_command,
    print_table,
    row,
    write_settings,
)
from pmjobsd.core import cron, registry

HERE = Path(__file__).resolve().parent
SETTLE_SECONDS = 3.0


def default_crons() -> list[str]:
    """The cron fields of the built-in jobs' defaults (macros expanded: APScheduler reads fields only)."""
    return [cron.normalise(registry.load_builtin(name).defaults["cron"]) for name in registry.BUILTIN_JOBS]


def compile_checkout(repo: Path) -> None:
    """Byte-compile the measured checkout's package, as ``pip install`` does."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(repo / "pmjobsd")], check=True)


def bytecode_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` without PYTHONDONTWRITEBYTECODE: the .pyc files are read (and written), as installed."""
    return {key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"}


def commands() -> dict[str, list[str]]:
    return {
        "pmjobsd": pmjobsd_command(),
        "schedule loop": [sys.executable, str(HERE / "baselines/schedule_loop.py")],
        "APScheduler 3": [sys.executable, str(HERE / "baselines/apscheduler_background.py"), *default_crons()],
    }


def prepare_home(root: Path) -> None:
    definitions = {name: {"enabled": True, "catch_up": False} for name in registry.BUILTIN_JOBS}
    write_settings(root, {"timezone": "UTC", "alerts": {"desktop": False, "targets": []}, "definitions": definitions})


class Program:
    """One benchmarked program started on its own HOME with its own NOTIFY_SOCKET."""

    def __init__(self, name: str, command: list[str], root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.notify = NotifySocket(root / "notify.sock")
        self.stderr = open(root / f"{name.split()[0]}.stderr", "a")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            command, env=bytecode_env(home_env(root, self.notify.path)), stdout=subprocess.DEVNULL, stderr=self.stderr
        )

    def wait_ready(self) -> float:
        """Seconds from exec to READY=1."""
        try:
            ready = self.notify.wait_ready() - self.started
            self.notify.keep_draining()
            return ready
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} sent no READY=1; see {self.stderr.name}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(30)
        self.stderr.close()
        self.notify.close()


def measure_startup(root: Path, starts: int) -> dict[str, dict]:
    """Median exec-to-READY seconds and median VmHWM (kB) at READY, per program.

    The programs take turns (one start of each per round, after one untimed round that
    creates their files), so that load on a shared machine falls on all of them alike.
    """
    programs = commands()
    times: dict[str, list[float]] = {name: [] for name in programs}
    peaks: dict[str, list[int]] = {name: [] for name in programs}
    for round_number in range(starts + 1):
        for name, command in programs.items():
            program = Program(name, command, root / name.split()[0])
            ready = program.wait_ready()
            peak = memory_kb(program.proc.pid, "VmHWM")
            program.stop()
            if round_number:
                times[name].append(ready)
                peaks[name].append(peak)
    return {
        name: {"ready_s": statistics.median(times[name]), "hwm_kb": statistics.median(peaks[name])} for name in programs
    }


def wait_clear_of_the_hour(window: float) -> None:
    """The hourly default job (jitter 30 s) must not run inside the window: wait past the hour if needed."""
    now = datetime.now(timezone.utc)
    seconds_to_hour = 3600 - (now.minute * 60 + now.second)
    if seconds_to_hour < window + SETTLE_SECONDS + 15:
        time.sleep(seconds_to_hour + 45)


def measure_idle(root: Path, window: float) -> dict[str, dict]:
    """Run the three programs side by side for ``window`` seconds; counters over the window per program."""
    wait_clear_of_the_hour(window)
    programs = [Program(name, command, root / f"idle-{name.split()[0]}") for name, command in commands().items()]
    try:
        for program in programs:
            program.wait_ready()
        time.sleep(SETTLE_SECONDS)
        before = {p.name: ProcessSample(p.proc.pid) for p in programs}
        time.sleep(window)
        return {p.name: ProcessSample(p.proc.pid).since(before[p.name]) for p in programs}
    finally:
        for program in programs:
            program.stop()


def run(quick: bool = False, seconds: float | None = None) -> list[dict]:
    window = seconds or (20.0 if quick else 60.0)
    compile_checkout(REPO)
    with tempfile.TemporaryDirectory(prefix="bench_idle_") as folder:
        root = Path(folder)
        for name in commands():
            prepare_home(root / name.split()[0])
            prepare_home(root / f"idle-{name.split()[0]}")
        starts = 5 if quick else 9
        startup = measure_startup(root, starts)
        idle = measure_idle(root, window)
    ours = idle["pmjobsd"]
    rows = []
    for baseline in ("schedule loop", "APScheduler 3"):
        other = idle[baseline]
        if ours["wakeups"] and other["wakeups"] >= ours["wakeups"]:
            compared = f"{other['wakeups'] / ours['wakeups']:.0f}x fewer for pmjobsd"
        else:
            compared = "pmjobsd wakes once per wake_interval (60 s); the baseline sleeps until its next fire time"
        rows += [
            row(
                f"idle wake-ups over {window:g} s",
                ours["wakeups"],
                other["wakeups"],
                baseline,
                "wake-ups",
                f"voluntary context switches summed over all threads ({ours['threads']} vs {other['threads']}); "
                f"{compared}",
            ),
            row(
                f"idle CPU over {window:g} s",
                ours["run_ms"],
                other["run_ms"],
                baseline,
                "ms",
                f"on-CPU time from /proc/PID/task/*/schedstat (ns); utime+stime from /proc/PID/stat: "
                f"{ours['cpu_s'] * 1000:.0f} vs {other['cpu_s'] * 1000:.0f} ms (10 ms ticks)",
            ),
            row(
                "idle RSS",
                ours["rss_kb"] / 1024,
                other["rss_kb"] / 1024,
                baseline,
                "MB",
                "VmRSS at the end of the window",
            ),
        ]
    aps, loop = startup["APScheduler 3"], startup["schedule loop"]
    rows += [
        row(
            "start-up: exec to READY=1",
            startup["pmjobsd"]["ready_s"] * 1000,
            aps["ready_s"] * 1000,
            "APScheduler 3",
            "ms",
            f"median of {starts} in turns; schedule loop {loop['ready_s'] * 1000:.0f} ms; pmjobsd validates settings, opens history, "
            "binds the control socket; all from compiled bytecode",
        ),
        row(
            "start-up: peak RSS (VmHWM)",
            startup["pmjobsd"]["hwm_kb"] / 1024,
            aps["hwm_kb"] / 1024,
            "APScheduler 3",
            "MB",
            f"at READY=1; schedule loop {loop['hwm_kb'] / 1024:.1f} MB",
        ),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 s idle window, 3 starts each")
    parser.add_argument("--seconds", type=float, help="idle window (default 60)")
    args = parser.parse_args()
    print_table(run(args.quick, args.seconds))


if __name__ == "__main__":
    main()
