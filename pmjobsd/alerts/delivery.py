"""Delivery off the runner's threads: one worker thread and bounded queue per sink.

A sink that hangs or refuses delays only its own queue; the runner's call
(``submit``) never blocks.  When a queue is full the message is dropped and
reported as failed ("queue full") rather than held in memory without bound.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from pmjobsd.alerts.base import DeliveryError, Message, Sink
from pmjobsd.alerts.retry import send_with_retries
from pmjobsd.observe.joblog import EventLogger

# (sink, message, outcome "sent"|"failed", attempts, reason or None)
ResultCallback = Callable[[Sink, Message, str, int, "str | None"], None]
_STOP = object()


class SinkWorker:
    """Sends queued messages through one sink on its own daemon thread."""

    def __init__(
        self,
        sink: Sink,
        on_result: ResultCallback,
        *,
        queue_size: int = 32,
        attempts: int = 3,
        retry_delay: float = 2.0,
    ):
        self.sink = sink
        self._on_result = on_result
        self._attempts = attempts
        self._retry_delay = retry_delay
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pmjobsd-alert-{sink.kind}", daemon=True)
        self._thread.start()

    def submit(self, message: Message) -> bool:
        """Queue ``message`` without blocking; False (and a "failed" result) when it was dropped."""
        if self._stopping.is_set():
            self._on_result(self.sink, message, "failed", 0, "daemon stopping")
            return False
        try:
            self._queue.put_nowait(message)
            return True
        except queue.Full:
            self._on_result(self.sink, message, "failed", 0, "queue full")
            return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                attempts = send_with_retries(
                    self.sink, item, attempts=self._attempts, initial_delay=self._retry_delay, stop_event=self._stopping
                )
            except DeliveryError as exc:
                self._on_result(self.sink, item, "failed", self._attempts, exc.reason)
            else:
                self._on_result(self.sink, item, "sent", attempts, None)
            if self._stopping.is_set() and self._queue.empty():
                return  # closing, and close() found the queue too full for its stop marker

    def close(self, deadline: float) -> bool:
        """Stop after the queued messages (no more retry pauses); True if the thread ended by ``deadline``."""
        self._stopping.set()
        try:
            self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            return False
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()


def log_result(log: EventLogger) -> Callable[[Sink, Message, str, int, str | None], None]:
    """A result callback writing ``alert.sent`` / ``alert.failed`` with the sink kind only."""

    def report(sink: Sink, message: Message, outcome: str, attempts: int, reason: str | None) -> None:
        fields = {
            "sink": sink.kind,
            "kind": message.kind,
            "job": message.fields.get("job"),
            "run_id": message.fields.get("run_id"),
            "attempts": attempts,
        }
        if outcome == "sent":
            log.info("alert.sent", **fields)
        else:
            log.warning("alert.failed", error=reason, **fields)

    return report
