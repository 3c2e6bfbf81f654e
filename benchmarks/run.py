"""Run every benchmark on this machine; write benchmarks/results/latest.md and latest.json; print the table.

    python benchmarks/run.py [--quick] [--only idle,dispatch]

Each ``benchmarks/bench_*.py`` module runs in its own child process (one
module's threads, logging set-up or crash cannot touch the next), the core
ones first, then every per-job module in name order.  A module that fails
becomes one row saying so; the others still run.  About 14 minutes in full on
a 2-core machine (``--quick``: about 2).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import KEYS  # noqa: E402

CORE = ["bench_idle", "bench_dispatch", "bench_scale", "bench_runs"]
MODULE_TIMEOUT = 1200  # bench_breach takes ~9 minutes on a quiet 2-core machine (the app timed on 40 prefixes)


def module_names(only: list[str] | None) -> list[str]:
    """Core modules first, then the other bench_*.py files in name order."""
    others = sorted(path.stem for path in HERE.glob("bench_*.py") if path.stem not in CORE)
    names = CORE + others
    if only:
        names = [name for name in names if name.removeprefix("bench_") in only or name in only]
    return names


def run_module(name: str, quick: bool) -> tuple[list[dict], float]:
    """Run ``benchmarks.<name>.run(quick)`` in a child process; return its rows and the seconds it took."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, str(HERE / "run.py"), "--module", name, "--out", out.name] + (
            ["--quick"] if quick else []
        )
        started = time.perf_counter()
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=MODULE_TIMEOUT, cwd=HERE.parent)
            error = (
                None
                if result.returncode == 0
                else (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
            )
        except subprocess.TimeoutExpired:
            error = f"took longer than {MODULE_TIMEOUT} s"
        seconds = time.perf_counter() - started
        if error:
            return [{**dict.fromkeys(KEYS), "benchmark": name, "notes": f"FAILED: {error}"}], seconds
        return json.loads(Path(out.name).read_text()), seconds


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "commit": commit or "unknown",
        "versions": {package: version(package) for package in ("schedule", "APScheduler", "cronsim", "msgspec")},
    }


def _cell(value) -> str:
    return "–" if value is None else str(value)


def markdown(info: dict, modules: list[dict], quick: bool) -> str:
    versions = ", ".join(f"{name} {number}" for name, number in info["versions"].items())
    lines = [
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores), Python {info['python']}, {info['os']}; "
        f"pmjobsd commit {info['commit']}; {versions}{'; --quick' if quick else ''}.",
        "",
        "ratio = pmjobsd / baseline: below 1 is better for costs (ms, us, MB, wake-ups), above 1 for rates (MB/s, runs/s).",
        "",
        "| benchmark | pmjobsd | baseline | unit | ratio | baseline is | notes |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    for module in modules:
        for r in module["rows"]:
            lines.append(
                "| "
                + " | ".join(
                    _cell(r.get(key)).replace("|", "/")
                    for key in ("benchmark", "pmjobsd", "baseline", "unit", "ratio", "baseline_name", "notes")
                )
                + " |"
            )
    lines += ["", "Seconds per module: " + ", ".join(f"{m['module']} {m['seconds']:.0f}" for m in modules) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short idle window and small inputs")
    parser.add_argument("--only", help="comma-separated modules, e.g. idle,dispatch")
    parser.add_argument("--module", help=argparse.SUPPRESS)  # child mode: run one module
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.module:
        rows = importlib.import_module(f"benchmarks.{args.module}").run(quick=args.quick)
        Path(args.out).write_text(json.dumps(rows))
        return
    info, modules = machine(), []
    for name in module_names(args.only.split(",") if args.only else None):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows, seconds = run_module(name, args.quick)
        modules.append({"module": name, "seconds": round(seconds, 1), "rows": rows})
    text = markdown(info, modules, args.quick)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "latest.md").write_text(text)
    (results / "latest.json").write_text(
        json.dumps({"machine": info, "quick": args.quick, "modules": modules}, indent=2)
    )
    print(text)
    print(f"written: {results / 'latest.md'}, {results / 'latest.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
