"""The vault jobs' shared files are committed only past the fence: a failed check leaves the file as it was."""

from __future__ import annotations

import json
import threading
import time

import pytest

from pmjobsd.api import JobFenced
from pmjobsd.core.context import JobContext
from pmjobsd.jobs.backup.checksums import ChecksumFile
from pmjobsd.jobs.breach.cache import encode_entry, merge_entries


def _fenced_context(tmp_path, newest: bool) -> JobContext:
    from pmjobsd.app.paths import AppPaths

    return JobContext(
        job_name="breach_cache_refresh",
        run_id="r",
        attempt=1,
        options=None,
        paths=AppPaths.resolve(data_dir=tmp_path),
        log=None,  # type: ignore[arg-type]
        deadline=time.monotonic() + 10,
        cancel_event=threading.Event(),
        fencing_token=7,
        fence=lambda: newest,
    )


def test_check_fence_raises_only_for_a_stale_token(tmp_path):
    _fenced_context(tmp_path, newest=True).check_fence()
    with pytest.raises(JobFenced, match="token 7 is no longer the newest"):
        _fenced_context(tmp_path, newest=False).check_fence()
    unfenced = _fenced_context(tmp_path, newest=False)
    unfenced.fencing_token = None  # no coordination, a device job, or run_local: nothing to fence
    unfenced.check_fence()


def test_a_fenced_breach_cache_merge_leaves_the_file_and_no_temp_file(tmp_path):
    cache = tmp_path / "breach_cache.json"
    cache.write_text(json.dumps({"ABCDE": [["x", 1]]}))
    before = cache.read_bytes()
    with pytest.raises(JobFenced):
        merge_entries(
            cache, {"FFFFF": encode_entry([["y", 2]])}, before_replace=_fenced_context(tmp_path, False).check_fence
        )
    assert cache.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")) == []
    merge_entries(
        cache, {"FFFFF": encode_entry([["y", 2]])}, before_replace=_fenced_context(tmp_path, True).check_fence
    )
    assert "FFFFF" in json.loads(cache.read_text())


def test_a_fenced_sha256sums_write_leaves_the_file_and_no_temp_file(tmp_path):
    sums = ChecksumFile.load(tmp_path)
    sums.record("password_manager_backup_20261201_030000.zip", "a" * 64)
    sums.save()
    before = sums.path.read_bytes()
    sums.record("password_manager_backup_20261202_030000.zip", "b" * 64)
    with pytest.raises(JobFenced):
        sums.save(before_replace=_fenced_context(tmp_path, False).check_fence)
    assert sums.path.read_bytes() == before
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".tmp")]
