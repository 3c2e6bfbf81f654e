"""User jobs for the control-socket tests, referenced as "tests.support.control_jobs:NAME"."""

from __future__ import annotations

import errno
import os

from pmjobsd.core.context import JobContext, JobResult


def hold_fds(ctx: JobContext) -> JobResult:
    """Open descriptors until the process hits EMFILE, hold them ``seconds``, then close them all."""
    held: list[int] = []
    try:
        while True:
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                if exc.errno != errno.EMFILE:
                    raise
                break
        ctx.cancel_event.wait(float(ctx.options.get("seconds", 3)))
    finally:
        for fd in held:
            os.close(fd)
    return JobResult.ok(f"held {len(held)} descriptors until EMFILE")
