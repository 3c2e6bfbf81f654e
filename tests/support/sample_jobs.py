"""User jobs for the end-to-end tests, referenced as "tests.support.sample_jobs:NAME".

They leave traces in files named by their options so tests can see what ran.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pmjobsd.core.context import JobContext, JobResult


def _mark(ctx: JobContext, text: str) -> None:
    marker = ctx.options.get("marker")
    if marker:
        with open(marker, "a") as handle:
            handle.write(f"{text} {ctx.run_id} {ctx.attempt} {time.time():.3f}\n")


def ok(ctx: JobContext) -> JobResult:
    """Succeeds at once."""
    _mark(ctx, "ok")
    return JobResult.ok("all good")


def warn(ctx: JobContext) -> JobResult:
    _mark(ctx, "warn")
    return JobResult.warn("something to look at")


def fail(ctx: JobContext) -> None:
    """Raises: the runner must record FAIL with the error."""
    _mark(ctx, "fail")
    raise RuntimeError("disk on fire (see https://hooks.example.org/T0KEN/secret)")


def flaky(ctx: JobContext) -> JobResult:
    """Fails until attempt ``succeed_on``."""
    _mark(ctx, "flaky")
    if ctx.attempt < int(ctx.options.get("succeed_on", 2)):
        raise RuntimeError(f"attempt {ctx.attempt} failed")
    return JobResult.ok(f"succeeded on attempt {ctx.attempt}")


def sleepy(ctx: JobContext) -> JobResult:
    """Sleeps ``seconds`` but honours the cancel flag."""
    _mark(ctx, "start")
    ctx.cancel_event.wait(float(ctx.options.get("seconds", 5)))
    ctx.check_cancelled()
    _mark(ctx, "end")
    return JobResult.ok("slept")


def stubborn(ctx: JobContext) -> JobResult:
    """Ignores the cancel flag: a thread Python cannot stop (bounded so the test process ends)."""
    _mark(ctx, "start")
    time.sleep(float(ctx.options.get("seconds", 30)))
    _mark(ctx, "end")
    return JobResult.ok("finally done")


def notify_pid(ctx: JobContext) -> JobResult:
    _mark(ctx, f"pid={os.getpid()}")
    return JobResult.ok(str(Path.cwd()) and "pid noted")


def slow_fail(ctx: JobContext) -> None:
    """Fails after ``seconds`` (the cancel flag cuts the wait short)."""
    _mark(ctx, "slow_fail")
    ctx.cancel_event.wait(float(ctx.options.get("seconds", 1)))
    raise RuntimeError(f"attempt {ctx.attempt} failed slowly")


def loaded_modules(ctx: JobContext) -> JobResult:
    """Reports which of ``options["modules"]`` the process running it has imported (in its summary)."""
    import sys

    names = [name for name in ctx.options.get("modules", []) if name in sys.modules]
    return JobResult.ok("loaded: " + ",".join(names))


def collector_state(ctx: JobContext) -> JobResult:
    """Reports whether the cyclic garbage collector of the process running it is on."""
    import gc

    return JobResult.ok(f"gc enabled: {gc.isenabled()}")
