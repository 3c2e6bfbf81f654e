"""Job functions the benchmarks schedule (as ``"callable": "benchmarks.probe_jobs:..."``)."""

from __future__ import annotations

import time


def record_start(ctx) -> None:
    """Append ``run_id start_time`` to ``options["out"]``; the start time is taken first thing."""
    started = time.time()
    with open(ctx.options["out"], "a") as out:
        out.write(f"{ctx.run_id} {started!r}\n")


def noop(ctx) -> None:
    """Does nothing: measures what running a job costs by itself."""


def mark_and_wait(ctx) -> None:
    """Append ``who slot start_time`` to ``options["out"]``, then run for ``options["seconds"]`` (cancellable)."""
    started = time.time()
    slot = getattr(ctx, "slot", None)
    slot = slot.isoformat() if hasattr(slot, "isoformat") else str(slot or "manual")
    with open(ctx.options["out"], "a") as out:
        out.write(f"{ctx.options['who']} {slot.replace(' ', 'T')} {started!r}\n")
    ctx.cancel_event.wait(float(ctx.options.get("seconds", 20)))
