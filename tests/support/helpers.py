"""Shared test helpers: build a job context on a temporary app home."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pmjobsd.app.paths import AppPaths
from pmjobsd.core.context import JobContext, Notice
from pmjobsd.core.privacy import EntryIdHasher
from pmjobsd.observe.joblog import EventLogger


def app_paths(home: Path) -> AppPaths:
    """The app's folders under a temporary home, as XDG defaults would place them."""
    return AppPaths.resolve(
        data_dir=home / ".local/share/secure-password-manager",
        config_dir=home / ".config/secure-password-manager",
        cache_dir=home / ".cache/secure-password-manager",
    )


def make_context(
    home: Path,
    job_name: str,
    options: Any = None,
    *,
    timeout: float = 60.0,
    app_settings: dict | None = None,
    notices: list[Notice] | None = None,
) -> JobContext:
    """A real JobContext for calling a job function directly; notices are collected in ``notices``."""
    paths = app_paths(home)
    run_id = uuid.uuid4().hex
    collected = notices if notices is not None else []
    return JobContext(
        job_name=job_name,
        run_id=run_id,
        attempt=1,
        options=options if options is not None else {},
        paths=paths,
        log=EventLogger("job", job=job_name, run_id=run_id, attempt=1),
        deadline=time.monotonic() + timeout,
        cancel_event=threading.Event(),
        app_settings=app_settings or {},
        hash_entry_id=EntryIdHasher.from_file(paths.id_key_path),
        notifier=collected.append,
    )
