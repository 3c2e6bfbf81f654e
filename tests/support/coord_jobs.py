"""A vault-scoped user job for the coordination tests: a start line, half a second of work, a fenced commit line.

The lines go to ``<data>/coord/`` (the shared app folder): ``starts`` and ``commits``, one
``<slot> <member> <token>`` line each.  A commit line is written only after ``ctx.check_fence()``,
so the commits are what a shared file would have received.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pmjobsd.api import JobContext, JobResult


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())  # one short write with O_APPEND: lines never interleave
    finally:
        os.close(fd)


def vault_tick(ctx: JobContext) -> JobResult:
    folder = Path(ctx.paths.data_dir) / "coord"
    folder.mkdir(exist_ok=True)
    member = ctx.options.get("member", "?")
    line = f"{ctx.slot} {member} {ctx.fencing_token}\n"
    _append(folder / "starts", line)
    end = time.monotonic() + float(ctx.options.get("work", 0.5))
    while time.monotonic() < end:
        ctx.check_cancelled()
        time.sleep(0.02)
    ctx.check_fence()
    _append(folder / "commits", line)
    return JobResult.ok(f"committed as {member}")
