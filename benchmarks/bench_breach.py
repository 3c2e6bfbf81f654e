"""Benchmark: refresh N cached prefixes against a local range server, pmjobsd vs the app's approach.

pmjobsd: ``run_refresh`` with the client-side rate limit lifted (``rate_limit=0``),
pooled keep-alive session, 8 in flight, one merge of the cache file per run.
Baseline (the app, ``utils/security_analyzer.py``): per prefix one ``requests.get``
(no session) and one ``_cache_breach_data`` call, which re-reads and rewrites the
whole JSON file.  Both start from the same cache: N prefixes with full entries.

The baseline's cost per prefix is constant once the cache holds N full entries
(each rewrite is the whole file), so in full mode it is timed on a sample of
prefixes and scaled to N; the notes say so.  Run: ``python benchmarks/bench_breach.py [--quick]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from pmjobsd.jobs.breach.breach_cache_refresh import BreachCacheRefreshOptions, run_refresh  # noqa: E402
from tests.support.fake_hibp import range_for  # noqa: E402
from tests.support.helpers import make_context  # noqa: E402

try:
    from secure_password_manager.utils import security_analyzer as app_analyzer
except Exception:  # pragma: no cover
    app_analyzer = None


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


def run(quick: bool = False) -> list[dict]:
    count, range_size, sample = (200, 100, 40) if quick else (2000, 800, 4)
    prefixes = [f"{i * 131:05X}" for i in range(count)]
    rows: list[dict] = []
    with _ServerProcess(range_size, padding=200) as server, tempfile.TemporaryDirectory() as tmp:
        # Warm the server's generated ranges, so both sides are timed against a server that only serves.
        warm = requests.Session()
        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda p: warm.get(f"{server.base}/range/{p}", headers={"Add-Padding": "true"}).content, prefixes
                )
            )
        warm.close()

        # pmjobsd
        home = Path(tmp) / "pm"
        ctx = make_context(
            home,
            "breach_cache_refresh",
            BreachCacheRefreshOptions(
                api_base=server.base,
                breach_api_base=server.base,
                rate_limit=0,
                concurrency=8,
                max_requests=count,
                check_latest_breach=False,
            ),
            timeout=3600,
        )
        _seed_cache(ctx.paths.breach_cache_path, range_size, prefixes)
        file_size = ctx.paths.breach_cache_path.stat().st_size
        started = time.perf_counter()
        result = run_refresh(ctx)
        pm_seconds = time.perf_counter() - started
        assert result.metrics["prefixes_refreshed"] == count, result.summary
        pm_writes = result.metrics["cache_writes"]

        # the app's approach, same server, same starting cache
        app_home = Path(tmp) / "app"
        app_cache = app_home / "breach_cache.json"
        _seed_cache(app_cache, range_size, prefixes)
        started = time.perf_counter()
        for prefix in prefixes[:sample]:
            _app_refresh_one(server.base, str(app_cache), prefix)
        app_sample_seconds = time.perf_counter() - started
        app_seconds = app_sample_seconds * count / sample

    scaled = "" if sample == count else f"; timed on {sample} prefixes and scaled to {count} (constant file size)"
    shape = f"{count} prefixes x {range_size} suffixes (+200 padding lines), cache file {file_size / 1e6:.1f} MB"
    writer = "app's real _cache_breach_data" if app_analyzer else "app writer restated"
    rows.append(
        dict(
            benchmark=f"refresh {count} cached prefixes (wall time)",
            pmjobsd=round(pm_seconds, 2),
            baseline=round(app_seconds, 2),
            baseline_name="app: requests.get + full JSON rewrite per prefix",
            unit="s",
            ratio=round(app_seconds / pm_seconds, 1),
            notes=f"{shape}; rate limit lifted, 8 in flight; {writer}{scaled}",
        )
    )
    rows.append(
        dict(
            benchmark="requests per second",
            pmjobsd=round(count / pm_seconds, 1),
            baseline=round(count / app_seconds, 2),
            baseline_name="app: sequential, new connection each",
            unit="req/s",
            ratio=round(app_seconds / pm_seconds, 1),
            notes="127.0.0.1 server in its own process; the default rate_limit (10/s) is what pmjobsd uses against HIBP",
        )
    )
    rows.append(
        dict(
            benchmark="cache file rewrites",
            pmjobsd=pm_writes,
            baseline=count,
            baseline_name="app: one per prefix",
            unit="writes",
            ratio=round(count / max(pm_writes, 1), 1),
            notes=f"each rewrite is the whole {file_size / 1e6:.1f} MB file",
        )
    )
    return rows


def _print_table(rows: list[dict]) -> None:
    headers = ["benchmark", "pmjobsd", "baseline", "unit", "ratio", "baseline_name", "notes"]
    print(" | ".join(headers))
    for row in rows:
        print(" | ".join(str(row[key]) for key in headers))


if __name__ == "__main__":
    _print_table(run(quick="--quick" in sys.argv))
