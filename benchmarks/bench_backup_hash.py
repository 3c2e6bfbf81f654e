"""Benchmark: hash-and-verify throughput over the backups, pmjobsd next to coreutils, same run.

    python benchmarks/bench_backup_hash.py [--size-mb 1024] [--quick]

Builds ~``size_mb`` MB of backups the way the app zips them (ZIP_DEFLATED; a
real vault plus an incompressible export member standing in for the encrypted
export), 8 files by default (``--quick``: 64 MB).  Rows, each side by side on
the same files in the same run, best of 2 (the files are in the page cache
for both, so this measures hashing, not the disk):

* ``sha256 of every backup``: :func:`pmjobsd.jobs.backup.checksums.sha256_file` vs ``sha256sum FILES``
* ``job, hash check only``: a whole ``backup_integrity_check`` run whose backups
  are already recorded (``verify_latest=0``: hash and compare with SHA256SUMS)
  vs ``sha256sum -c SHA256SUMS``
* ``job, full check``: every backup fully verified (hash, zip CRCs, extract,
  integrity_check, completeness) vs ``sha256sum -c`` plus ``unzip -tq``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pmjobsd.jobs.backup import backup_integrity_check as job
from pmjobsd.jobs.backup.checksums import sha256_file
from tests.support.appfixtures import canary_entry, create_vault, write_key_files
from tests.support.helpers import app_paths, make_context

FILES = 8


def _build(home: Path, size_mb: int) -> list[Path]:
    """FILES backups totalling about size_mb MB (one built, then copied under new names)."""
    paths = app_paths(home)
    write_key_files(paths.data_dir)
    vault = create_vault(paths.vault_path, [canary_entry(i, age_days=30) for i in range(200)])
    folder = paths.backups_dir
    folder.mkdir(parents=True)
    now = int(time.time())
    first = folder / f"password_manager_backup_{now - 86400 * FILES}.zip"
    import zipfile

    per_file = size_mb * 1024 * 1024 // FILES
    with zipfile.ZipFile(first, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("passwords_export.dat", "w") as member:  # streamed: no whole file in memory
            left = per_file
            while left > 0:
                chunk = os.urandom(min(left, 1 << 22))
                member.write(chunk)
                left -= len(chunk)
        archive.write(vault, "passwords.db")
        for name in ("secret.key", "auth.json", "crypto.salt"):
            archive.write(paths.data_dir / name, name)
        archive.writestr(
            "metadata.json", f'{{"version": "2.0", "timestamp": {now - 86400 * FILES}, "description": "bench"}}'
        )
    backups = [first]
    for i in range(1, FILES):
        copy = folder / f"password_manager_backup_{now - 86400 * (FILES - i)}.zip"
        shutil.copyfile(first, copy)
        backups.append(copy)
    # Age them past the settle time, as backups of earlier days would be.
    for backup in backups:
        os.utime(backup, (now - 3600, now - 3600))
    return backups


def _best(func, repeat: int = 2) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def _row(name: str, megabytes: float, ours: float, baseline: float | None, baseline_name: str, notes: str) -> dict:
    ours_rate = megabytes / ours
    base_rate = megabytes / baseline if baseline else None
    return {
        "benchmark": name,
        "pmjobsd": round(ours_rate, 1),
        "baseline": round(base_rate, 1) if base_rate else None,
        "baseline_name": baseline_name,
        "unit": "MB/s",
        "ratio": round(ours_rate / base_rate, 2) if base_rate else None,
        "notes": notes,
    }


def run(quick: bool = False, size_mb: int | None = None) -> list[dict]:
    size_mb = size_mb or (64 if quick else 1024)
    free_mb = shutil.disk_usage(tempfile.gettempdir()).free // (1024 * 1024)
    if free_mb < size_mb * 2:
        raise SystemExit(f"need about {size_mb * 2} MB free in {tempfile.gettempdir()}, have {free_mb} MB")
    sha256sum = shutil.which("sha256sum")
    unzip = shutil.which("unzip")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_backup_hash_") as folder:
        home = Path(folder) / "home"
        backups = _build(home, size_mb)
        megabytes = sum(b.stat().st_size for b in backups) / 1e6
        backup_dir = backups[0].parent
        for backup in backups:  # warm the page cache for both sides
            sha256_file(backup)

        ours = _best(lambda: [sha256_file(b) for b in backups])
        base = (
            _best(lambda: subprocess.run([sha256sum, *map(str, backups)], check=True, capture_output=True))
            if sha256sum
            else None
        )
        rows.append(
            _row(
                "sha256 of every backup",
                megabytes,
                ours,
                base,
                "sha256sum FILES",
                f"{len(backups)} files, {megabytes:.0f} MB, 1 MiB reads",
            )
        )

        def job_run(options):
            result = job.run(make_context(home, "backup_integrity_check", options))
            assert result.status.value == "OK", result.summary
            return result

        full = job.BackupCheckOptions(verify_latest=len(backups))
        job_run(full)  # first run records every backup in SHA256SUMS
        ours = _best(lambda: job_run(job.BackupCheckOptions(verify_latest=0)))

        def verify_with_coreutils():
            subprocess.run([sha256sum, "-c", "--quiet", "SHA256SUMS"], cwd=backup_dir, check=True, capture_output=True)

        base = _best(verify_with_coreutils) if sha256sum else None
        rows.append(
            _row(
                "job, hash check only",
                megabytes,
                ours,
                base,
                "sha256sum -c SHA256SUMS",
                "whole backup_integrity_check run incl. live vault integrity_check",
            )
        )

        ours = _best(lambda: job_run(full))

        def full_with_tools():
            verify_with_coreutils()
            for backup in backups:
                subprocess.run([unzip, "-tq", str(backup)], check=True, capture_output=True)

        base = _best(full_with_tools) if sha256sum and unzip else None
        rows.append(
            _row(
                "job, full check",
                megabytes,
                ours,
                base,
                "sha256sum -c + unzip -tq",
                "pmjobsd also extracts passwords.db, integrity-checks and compares it",
            )
        )
    return rows


def _print(rows: list[dict]) -> None:
    header = f"{'benchmark':<26} {'pmjobsd':>9} {'baseline':>9} {'ratio':>6}  unit  baseline_name / notes"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['benchmark']:<26} {row['pmjobsd']:>9} {row['baseline'] or '-':>9} {row['ratio'] or '-':>6}  "
            f"{row['unit']}  {row['baseline_name']} / {row['notes']}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=None, help="total size of the backups (default 1024)")
    parser.add_argument("--quick", action="store_true", help="64 MB")
    arguments = parser.parse_args()
    _print(run(quick=arguments.quick, size_mb=arguments.size_mb))
