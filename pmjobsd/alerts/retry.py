"""The shared retry helper: a few attempts with growing pauses, permanent errors not retried."""

from __future__ import annotations

import threading

from pmjobsd.alerts.base import DeliveryError, Message, Sink


def send_with_retries(
    sink: Sink,
    message: Message,
    *,
    attempts: int = 3,
    initial_delay: float = 1.0,
    factor: float = 4.0,
    stop_event: threading.Event | None = None,
) -> int:
    """Send ``message`` through ``sink``; return the number of attempts it took.

    Raise the last :class:`DeliveryError` once ``attempts`` are used up, at
    once for a permanent error, or when ``stop_event`` is set during a pause
    (the daemon is stopping).  Any other exception from a sink counts as a
    transient DeliveryError: a buggy sink must not kill the delivery thread.
    """
    stop_event = stop_event or threading.Event()
    delay = initial_delay
    for attempt in range(1, attempts + 1):
        try:
            sink.send(message)
            return attempt
        except DeliveryError as exc:
            error = exc
        except Exception as exc:
            error = DeliveryError(f"{type(exc).__name__} in sink")
        if error.permanent or attempt == attempts:
            raise error
        if stop_event.wait(delay):
            raise error
        delay *= factor
    raise AssertionError("unreachable")
