"""Benchmark: refresh N cached prefixes against a local range server, pmjobsd vs the app's approach.

pmjobsd: ``run_refresh`` twice from the same starting cache, once with the job's
defaults (client-side ``rate_limit`` 10/s, 4 in flight: what users run against
HIBP) and once with the limit lifted (``rate_limit=0``, 8 in flight: what the
code itself can do).  Either way a pooled keep-alive session and one merge of
the cache file per checkpoint.
Baseline (the app, ``utils/security_analyzer.py``): per prefix one ``requests.get``
(no session) and one call of the app's real ``_cache_breach_data``, which
re-reads and rewrites the whole JSON file.  All three start from the same cache:
N prefixes with full entries, against the same server.

The baseline is slow (seconds per prefix once the cache holds 2,000 full entries),
so in full mode it is timed, prefix by prefix, on a sample (40 by default,
``--sample``) and scaled to N: the figure is an *estimate*, and the row's name
says so with the sample size.  Each rewrite is the whole file, whose size stays
constant, so the cost per prefix is flat; the notes give the sample's median and
range to show it.  ``--quick`` times the baseline on every prefix (no scaling).
Run: ``python benchmarks/bench_breach.py [--quick] [--sample N]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from benchmarks.common import print_table, row  # noqa: E402
from pmjobsd.jobs.breach.breach_cache_refresh import BreachCacheRefreshOptions, run_refresh  # noqa: E402
from tests.support.fake_hibp import range_for  # noqa: E402
from tests.support.helpers import make_context  # noqa: E402

try:
    from secure_password_manager.utils import security_analyzer as app_analyzer
except Exception:  # pragma: no cover
    app_analyzer = None

FULL_SAMPLE = 40
PADDING = 200
DEFAULTS = BreachCacheRefreshOptions()


def _app_cache_breach_data(cache_file: str, prefix: str, hashes: list) -> None:
    """The app's writer: the real one when installed, else security_analyzer.py lines 87-108 restated."""
    if app_analyzer is not None:
        app_analyzer.BREACH_CACHE_FILE = cache_file
        app_analyzer._cache_breach_data(prefix, hashes)
        return
    cache = {}
    try:
        with open(cache_file) as f:
            cache = json.load(f)
    except (OSError, json.JSONDecodeError):
        pass
    cache[prefix] = hashes
    with open(cache_file, "w") as f:
        json.dump(cache, f)


def _app_refresh_one(base: str, cache_file: str, prefix: str) -> int:
    """One prefix the app's way (security_analyzer.py 47-66, without the early stop)."""
    response = requests.get(f"{base}/range/{prefix}")
    response.raise_for_status()
    hashes = []
    for line in response.text.splitlines():
        parts = line.split(":")
        if len(parts) == 2:
            hashes.append((parts[0], int(parts[1])))
    _app_cache_breach_data(cache_file, prefix, hashes)
    return len(response.content)


def _seed_cache(path: Path, range_size: int, prefixes: list[str]) -> None:
    """The cache as of range version 1; the server answers version 2 (every count changed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({p: [[s, c] for s, c in range_for(p, 1, range_size)] for p in prefixes}))


class _ServerProcess:
    """The local range server in its own process, so it does not share the benchmark's GIL."""

    def __init__(self, range_size: int, padding: int):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fake_hibp", str(range_size), str(padding), "2"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.base = self.process.stdout.readline().strip()

    def __enter__(self) -> _ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@dataclass
class Measurements:
    """What one run measured; ``rows_from`` turns it into result rows."""

    count: int
    range_size: int
    file_size: int
    default_seconds: float  # pmjobsd, the job's default rate limit and concurrency
    default_writes: int
    lifted_seconds: float  # pmjobsd, rate_limit=0, 8 in flight
    lifted_writes: int
    app_per_prefix: list[float] = field(default_factory=list)  # the baseline, each timed prefix
    writer: str = "app's real _cache_breach_data"

    @property
    def app_seconds(self) -> float:
        """The baseline's time for all ``count`` prefixes: measured, or scaled from the sample."""
        return sum(self.app_per_prefix) * self.count / len(self.app_per_prefix)

    @property
    def estimated(self) -> bool:
        return len(self.app_per_prefix) < self.count


def example_measurements() -> Measurements:
    """Figures of the shape of a full run (for the tests of ``rows_from``)."""
    return Measurements(2000, 800, 74_700_000, 201.0, 3, 23.4, 2, [7.1] * FULL_SAMPLE)


def rows_from(m: Measurements) -> list[dict]:
    """The result rows; ratio = pmjobsd / baseline (``common.row``), as everywhere."""
    sample = len(m.app_per_prefix)
    if m.estimated:
        app = f"app: requests.get + full JSON rewrite per prefix (estimate: {sample} of {m.count} timed)"
        how = (
            f"app timed on {sample} of {m.count} prefixes, scaled x{m.count / sample:g} (median "
            f"{statistics.median(m.app_per_prefix):.2f} s per prefix, range {min(m.app_per_prefix):.2f}-"
            f"{max(m.app_per_prefix):.2f} s; each rewrite is the whole, constant-size file)"
        )
    else:
        app = "app: requests.get + full JSON rewrite per prefix"
        how = f"app timed on all {m.count} prefixes"
    shape = f"{m.count} prefixes x {m.range_size} suffixes (+{PADDING} padding lines), cache file {m.file_size / 1e6:.1f} MB"
    default = f"rate_limit {DEFAULTS.rate_limit:g}/s, {DEFAULTS.concurrency} in flight (the job's defaults)"
    return [
        row(
            f"refresh {m.count} cached prefixes, default rate limit (wall time)",
            m.default_seconds,
            m.app_seconds,
            app,
            "s",
            f"{shape}; pmjobsd {default}; {m.writer}; {how}",
        ),
        row(
            f"refresh {m.count} cached prefixes, rate limit lifted (wall time)",
            m.lifted_seconds,
            m.app_seconds,
            app,
            "s",
            "pmjobsd rate_limit 0, 8 in flight: the code's own speed, never used against HIBP",
        ),
        row(
            "requests per second, rate limit lifted",
            m.count / m.lifted_seconds,
            m.count / m.app_seconds,
            "app: sequential, new connection each" + (" (estimate)" if m.estimated else ""),
            "req/s",
            f"127.0.0.1 server in its own process; at the defaults pmjobsd makes "
            f"{m.count / m.default_seconds:.1f} req/s",
        ),
        row(
            f"cache file rewrites, {m.count} prefixes",
            m.default_writes,
            m.count,
            "app: one per prefix",
            "writes",
            f"each rewrite is the whole {m.file_size / 1e6:.1f} MB file; pmjobsd merges per checkpoint "
            f"(every {DEFAULTS.checkpoint_every} prefixes or {DEFAULTS.checkpoint_interval:g} s): "
            f"{m.default_writes} at the defaults, {m.lifted_writes} lifted",
        ),
    ]


def _refresh(home: Path, seed: Path, options: BreachCacheRefreshOptions, count: int) -> tuple[float, int]:
    """pmjobsd's refresh of a copy of ``seed``: (seconds, cache file writes)."""
    ctx = make_context(home, "breach_cache_refresh", options, timeout=3600)
    ctx.paths.breach_cache_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(seed, ctx.paths.breach_cache_path)
    started = time.perf_counter()
    result = run_refresh(ctx)
    seconds = time.perf_counter() - started
    assert result.metrics["prefixes_refreshed"] == count, result.summary
    return seconds, result.metrics["cache_writes"]


def measure(quick: bool = False, sample: int | None = None) -> Measurements:
    count, range_size = (200, 100) if quick else (2000, 800)
    sample = min(count, sample or (count if quick else FULL_SAMPLE))
    prefixes = [f"{i * 131:05X}" for i in range(count)]
    with _ServerProcess(range_size, padding=PADDING) as server, tempfile.TemporaryDirectory() as tmp:
        # Warm the server's generated ranges, so every side is timed against a server that only serves.
        warm = requests.Session()
        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda p: warm.get(f"{server.base}/range/{p}", headers={"Add-Padding": "true"}).content, prefixes
                )
            )
        warm.close()
        seed = Path(tmp) / "seed.json"
        _seed_cache(seed, range_size, prefixes)
        bases = dict(api_base=server.base, breach_api_base=server.base, check_latest_breach=False)

        default_seconds, default_writes = _refresh(
            Path(tmp) / "pm-default", seed, BreachCacheRefreshOptions(**bases, max_requests=count), count
        )
        lifted_seconds, lifted_writes = _refresh(
            Path(tmp) / "pm-lifted",
            seed,
            BreachCacheRefreshOptions(**bases, max_requests=count, rate_limit=0, concurrency=8),
            count,
        )

        # the app's approach, same server, same starting cache; every prefix timed on its own
        app_cache = Path(tmp) / "app" / "breach_cache.json"
        app_cache.parent.mkdir()
        shutil.copyfile(seed, app_cache)
        per_prefix = []
        for prefix in prefixes[:sample]:
            started = time.perf_counter()
            _app_refresh_one(server.base, str(app_cache), prefix)
            per_prefix.append(time.perf_counter() - started)
        file_size = seed.stat().st_size
    writer = "app's real _cache_breach_data" if app_analyzer else "app writer restated"
    return Measurements(
        count, range_size, file_size, default_seconds, default_writes, lifted_seconds, lifted_writes, per_prefix, writer
    )


def run(quick: bool = False, sample: int | None = None) -> list[dict]:
    return rows_from(measure(quick, sample))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 prefixes x 100 suffixes, the app timed on all")
    parser.add_argument("--sample", type=int, help=f"prefixes the app is timed on (full default {FULL_SAMPLE})")
    args = parser.parse_args()
    print_table(run(args.quick, args.sample))
