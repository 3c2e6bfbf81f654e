"""Built-in job ``log_rotation``: rotate the app's log, ``jobs.log`` and extra files; gzip old archives.

It runs every 5 minutes and rotates a log that reached ``max_size`` (default
50 MB), or, once a slot of ``every`` (default ``30 3 * * 0``, Sunday 03:30) has
passed since its last rotation, any log of at least ``min_size`` (default:
non-empty).  A run with nothing due costs one ``stat()`` per log.
Options also: ``files`` (extra logs; relative names are in the log folder),
``compress_after_days`` (default: settings ``jobs.retention.compress_after_days``).
A file that fails is reported by path and the others are still done (WARN).
"""

from __future__ import annotations

import time
from pathlib import Path

from pmjobsd.api import JobContext, JobResult, validate
from pmjobsd.jobs.logs.archives import log_files, reopening_files
from pmjobsd.jobs.logs.compression import archives_to_compress, clean_partials, compress_archive
from pmjobsd.jobs.logs.log_rotation_spec import LogRotationOptions
from pmjobsd.jobs.logs.retention import retention_settings
from pmjobsd.jobs.logs.rotate import RotationError, rotate_file, rotation_in_flight
from pmjobsd.jobs.logs.triggers import Rotations, job_zone, last_slot


def run(ctx: JobContext) -> JobResult:
    options = (
        ctx.options if isinstance(ctx.options, LogRotationOptions) else validate(LogRotationOptions, ctx.options or {})
    )
    compress_after = options.compress_after_days
    if compress_after is None:
        compress_after = retention_settings(ctx.app_settings).compress_after_days
    reopening = reopening_files(ctx.paths)
    rotations = Rotations(ctx.state_dir)
    now = time.time()
    slot = last_slot(options.every, now, job_zone(ctx.app_settings))
    rotated: list[str] = []
    compressed: list[str] = []
    errors: dict[str, str] = {}
    bytes_rotated = 0
    for live in log_files(ctx.paths, None, options.files):
        ctx.check_cancelled()
        try:
            size = live.stat().st_size
        except OSError:
            size = 0  # missing (rotate_file reports what else is wrong)
        over = options.max_size is not None and size >= int(options.max_size)
        # An interrupted rotation (its journal left behind) is finished at the next run, due or not.
        if over or rotations.due_by_time(live, slot, now) or rotation_in_flight(live):
            try:
                outcome = rotate_file(
                    live,
                    min_size=1 if over else int(options.min_size),
                    strategy="rename" if live in reopening else "auto",
                )
            except RotationError as exc:
                errors[str(live)] = str(exc)
                ctx.log.warning("log.rotate_failed", path=str(live), error=str(exc))
                continue
            if outcome.action in ("renamed", "copytruncated"):
                rotated.append(str(live))
                bytes_rotated += outcome.bytes
                reason = "max_size" if over else "every"
                ctx.log.info("log.rotated", path=str(live), method=outcome.action, bytes=outcome.bytes, reason=reason)
            # A slot is used up whether or not the log was big enough to rotate.
            rotations.rotated(live, now)
        for archive in _compress_old(ctx, live, time.time() - compress_after * 86400, errors):
            compressed.append(str(archive))
    rotations.save()
    metrics = {
        "files_rotated": len(rotated),
        "bytes_rotated": bytes_rotated,
        "archives_compressed": len(compressed),
        "errors": len(errors),
    }
    details = {"rotated": rotated, "compressed": compressed, "errors": errors}
    summary = f"rotated {len(rotated)} logs, compressed {len(compressed)} archives"
    if errors:
        first = next(iter(errors.values()))
        return JobResult.warn(f"{summary}; {len(errors)} failed: {first}", details=details, metrics=metrics)
    return JobResult.ok(summary, details=details, metrics=metrics)


def _compress_old(ctx: JobContext, live: Path, older_than: float, errors: dict[str, str]) -> list[Path]:
    done: list[Path] = []
    try:
        clean_partials(live)
        candidates = archives_to_compress(live, older_than)
    except OSError as exc:
        errors[str(live.parent)] = f"cannot list archives of {live}: {exc.strerror or exc}"
        return done
    for archive in candidates:
        ctx.check_cancelled()
        try:
            done.append(compress_archive(archive, check=ctx.check_cancelled))
        except RotationError as exc:
            errors[str(archive)] = str(exc)
            ctx.log.warning("log.compress_failed", path=str(archive), error=str(exc))
    return done
