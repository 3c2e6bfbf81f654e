"""Benchmark: gzip-compressing an archived log, pmjobsd vs ``gzip -6`` on the same file, same run.

    python benchmarks/bench_compress.py [--size-mb 500] [--quick]

The file is generated log text in the app's format (``asctime - LEVEL -
message``), ~500 MB by default (``--quick``: 50 MB).  pmjobsd's number is the
whole ``compress_archive`` call: temp file, fsync, rename, fsync of the folder,
removal of the plain archive.  ``gzip -6 -c`` writes to a file without fsync.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pmjobsd.jobs.logs.compression import compress_archive

MESSAGES = [
    "Added password entry id={n}",
    "Vault unlocked for session {n}",
    "Backup created: password_manager_backup_{n}.zip",
    "Breach check finished: {n} passwords checked, 0 found",
    "Browser bridge request GET /v1/status from 127.0.0.1:{n}",
    "Failed login attempt {n} of 5",
    "Clipboard cleared after 30 seconds (entry {n})",
    "Security audit score {n}/100",
]
LEVELS = ["INFO"] * 8 + ["WARNING", "ERROR", "DEBUG"]


def make_log(path: Path, size_mb: int) -> int:
    """Write ``size_mb`` MB of varied log lines; return the size in bytes."""
    rng = random.Random(42)
    start = 1_764_300_000
    block = []
    for i in range(60_000):  # ~4 MB of distinct lines, then repeated with new timestamps
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start + i * 7))
        message = rng.choice(MESSAGES).format(n=rng.randrange(1, 10**6))
        block.append(f"{when},{rng.randrange(1000):03d} - {rng.choice(LEVELS)} - {message}\n")
    text = "".join(block).encode()
    target = size_mb * 1024 * 1024
    written = 0
    with open(path, "wb") as out:
        while written < target:
            chunk = text[: target - written]
            out.write(chunk)
            written += len(chunk)
    return written


def run(quick: bool = False, size_mb: int | None = None) -> list[dict]:
    size_mb = size_mb or (50 if quick else 500)
    gzip_bin = shutil.which("gzip")
    with tempfile.TemporaryDirectory(prefix="bench_compress_") as folder:
        archive = Path(folder) / "password_manager.log.20261128-033000"
        size = make_log(archive, size_mb)
        megabytes = size / 1e6

        baseline_seconds = None
        if gzip_bin:
            started = time.perf_counter()
            with open(Path(folder) / "baseline.gz", "wb") as out:
                subprocess.run([gzip_bin, "-6", "-c", str(archive)], stdout=out, check=True)
            baseline_seconds = time.perf_counter() - started
            baseline_size = os.path.getsize(Path(folder) / "baseline.gz")

        started = time.perf_counter()
        gz = compress_archive(archive)
        ours_seconds = time.perf_counter() - started
        ours_size = gz.stat().st_size

    ours = megabytes / ours_seconds
    baseline = megabytes / baseline_seconds if baseline_seconds else None
    notes = f"{megabytes:.0f} MB log text; pmjobsd output {ours_size / size:.1%} of input"
    if baseline_seconds:
        notes += f", gzip -6 output {baseline_size / size:.1%}"
    return [
        {
            "benchmark": "compress archived log (MB/s)",
            "pmjobsd": round(ours, 1),
            "baseline": round(baseline, 1) if baseline else None,
            "baseline_name": "gzip -6 (CLI)" if baseline else "gzip not installed",
            "unit": "MB/s",
            "ratio": round(ours / baseline, 2) if baseline else None,
            "notes": notes,
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=None, help="size of the log to compress (default 500)")
    parser.add_argument("--quick", action="store_true", help="50 MB instead of 500 MB")
    args = parser.parse_args()
    rows = run(quick=args.quick, size_mb=args.size_mb)
    keys = ["benchmark", "pmjobsd", "baseline", "baseline_name", "unit", "ratio", "notes"]
    widths = {key: max(len(key), *(len(str(row[key])) for row in rows)) for key in keys}
    print("  ".join(key.ljust(widths[key]) for key in keys))
    for row in rows:
        print("  ".join(str(row[key]).ljust(widths[key]) for key in keys))


if __name__ == "__main__":
    main()
