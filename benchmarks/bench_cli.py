"""Wall time of the command line next to ``python -c "import requests"`` (issue 16).

    python benchmarks/bench_cli.py [--quick] [--runs N] [--repo PATH]

Each command is a fresh ``python -m pmjobsd ...`` process on a temporary HOME with the
five default jobs (as bench_idle): ``--version``, ``status --json`` with no daemon (the
document built from the settings and the history), ``status --json`` with a daemon
running (its answer over the control socket) and ``config validate``.  The baseline is
the same interpreter running ``python -c "import requests"``: what any tool that speaks
HTTP pays before doing anything.  The commands and the baseline take turns (round-robin,
so load on a shared machine falls on all of them alike); each row is the median of the
runs, ratio = pmjobsd / ``import requests``.  ``--repo`` measures another checkout (an
older commit, for before/after) with the same harness.  As bench_idle: from compiled
bytecode (the checkout byte-compiled once, PYTHONDONTWRITEBYTECODE dropped), as installed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_idle import bytecode_env, compile_checkout
from benchmarks.common import REPO, NotifySocket, home_env, print_table, row, write_settings

BUILTIN = [
    "browser_bridge_health",
    "log_rotation",
    "log_purge",
    "expiring_password_digest",
    "backup_integrity_check",
    "breach_cache_refresh",
]
BASELINE = "python -c 'import requests'"
FLOOR = "python -c pass"  # the interpreter's own start-up, which every row includes


def prepare_home(root: Path) -> None:
    definitions = {name: {"enabled": True, "catch_up": False} for name in BUILTIN}
    write_settings(root, {"timezone": "UTC", "alerts": {"desktop": False, "targets": []}, "definitions": definitions})


def env_for(root: Path, repo: Path) -> dict[str, str]:
    env = bytecode_env(home_env(root))
    env["PYTHONPATH"] = str(repo)  # the checkout measured, and nothing else of ours
    return env


def timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds from exec to exit of one run (it must succeed: exit 0 or 1, the WARN of status)."""
    started = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if result.returncode not in (0, 1):
        raise RuntimeError(f"{command} exited {result.returncode}: {result.stderr.decode()[-500:]}")
    return elapsed


def measure(runs: int, repo: Path = REPO) -> dict[str, list[float]]:
    """Seconds per run of each command and of the baseline, taken in turns."""
    pmjobsd = [sys.executable, "-m", "pmjobsd"]
    compile_checkout(repo)
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as folder:
        idle, busy = Path(folder) / "idle", Path(folder) / "busy"
        for root in (idle, busy):
            prepare_home(root)
        idle_env, busy_env = env_for(idle, repo), env_for(busy, repo)
        cases = {
            "pmjobsd --version": (pmjobsd + ["--version"], idle_env),
            "pmjobsd status --json, no daemon": (pmjobsd + ["status", "--json"], idle_env),
            "pmjobsd status --json, daemon running": (pmjobsd + ["status", "--json"], busy_env),
            "pmjobsd config validate": (pmjobsd + ["config", "validate"], idle_env),
            BASELINE: ([sys.executable, "-c", "import requests"], idle_env),
            FLOOR: ([sys.executable, "-c", "pass"], idle_env),
        }
        notify = NotifySocket(busy / "notify.sock")
        daemon_env = dict(busy_env, NOTIFY_SOCKET=str(notify.path))
        daemon = subprocess.Popen(
            pmjobsd + ["run", "--no-console"], env=daemon_env, cwd=folder, stdout=subprocess.DEVNULL
        )
        try:
            notify.wait_ready()
            notify.keep_draining()
            times: dict[str, list[float]] = {name: [] for name in cases}
            for command, env in cases.values():  # one untimed run each: files created, caches warm
                timed(command, env, Path(folder))
            for _ in range(runs):
                for name, (command, env) in cases.items():
                    times[name].append(timed(command, env, Path(folder)))
        finally:
            daemon.terminate()
            daemon.wait(30)
            notify.close()
    return times


def run(quick: bool = False, runs: int | None = None, repo: Path = REPO) -> list[dict]:
    count = runs or (10 if quick else 20)
    times = measure(count, repo)
    baseline = statistics.median(times[BASELINE]) * 1000
    floor = statistics.median(times[FLOOR]) * 1000
    rows = []
    for name, values in times.items():
        if name in (BASELINE, FLOOR):
            continue
        ms = sorted(v * 1000 for v in values)
        rows.append(
            row(
                f"CLI wall time: {name.removeprefix('pmjobsd ')}",
                statistics.median(ms),
                baseline,
                "import requests",
                "ms",
                f"median of {count} runs (min {ms[0]:.0f}, max {ms[-1]:.0f}), in turns with the baseline; "
                f"python -c pass {floor:.0f} ms",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 runs each")
    parser.add_argument("--runs", type=int, help="runs of each command (default 20)")
    parser.add_argument("--repo", type=Path, default=REPO, help="the pmjobsd checkout to measure")
    args = parser.parse_args()
    print_table(run(args.quick, args.runs, args.repo.resolve()))


if __name__ == "__main__":
    main()
