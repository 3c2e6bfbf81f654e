"""Log to the systemd journal with structured fields when journald is our stderr.

systemd sets ``JOURNAL_STREAM=<dev>:<inode>`` for a service whose stdout/stderr
is connected to journald; when it matches stderr, :func:`journal_handler`
returns a handler that sends each ``pmjobsd`` event natively, with one journal
field per event field (``EVENT``, ``COMPONENT``, ``JOB``, ``RUN_ID``,
``ATTEMPT``, ``STATUS``, ``DURATION_MS``, ``ENTRY_ID_HASH``, ``ERROR``, ...), so
``journalctl -u pmjobsd JOB=log_rotation`` works.  Otherwise (a terminal,
launchd, systemd-python not installed) it returns None and the caller keeps
its console handler.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from pmjobsd.observe.joblog import ConsoleFormatter, _record_fields

SYSLOG_IDENTIFIER = "pmjobsd"
# journald accepts upper-case ASCII letters, digits and '_', not starting with '_' (trusted fields).
_INVALID_FIELD_CHARS = re.compile(r"[^A-Z0-9_]")


def journal_field_name(key: str) -> str | None:
    """The journal field for an event field (``run_id`` -> ``RUN_ID``), None if unusable."""
    name = _INVALID_FIELD_CHARS.sub("_", key.upper()).lstrip("_")
    if not name or name[0].isdigit() or len(name) > 64:
        return None
    return name


def stderr_is_journal(environ: Mapping[str, str] | None = None, stream: Any = None) -> bool:
    """True when ``JOURNAL_STREAM`` names the device and inode of stderr (systemd.exec(5))."""
    environ = os.environ if environ is None else environ
    value = environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    stream = sys.stderr if stream is None else stream
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


_UNSET: Any = object()
_handler_class: Any = _UNSET


def _journal_handler_class() -> Any:
    """EventJournalHandler, built on systemd-python's JournalHandler at the first call; None without it.

    Imported only once stderr is known to be the journal: loading libsystemd costs a start that
    does not log there (a terminal, launchd, a benchmark) ~5 ms and ~1 MB for nothing.
    """
    global _handler_class
    if _handler_class is not _UNSET:
        return _handler_class
    try:  # the optional extra: builds against libsystemd
        from systemd.journal import JournalHandler as _JournalHandler
        from systemd.journal import send as _journal_send
    except ImportError:  # pragma: no cover - depends on the installation
        _handler_class = None
        return None

    class EventJournalHandler(_JournalHandler):
        """systemd-python's JournalHandler, sending event fields as journal fields.

        The stock handler forwards the whole LogRecord ``__dict__`` (lower-case
        names journald drops); this one sends MESSAGE (the readable line),
        PRIORITY, EVENT and the event's fields with free text already scrubbed.
        """

        def __init__(self, level: int = logging.NOTSET, sender_function: Callable[..., Any] | None = None):
            super().__init__(
                level, sender_function=sender_function or _journal_send, SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER
            )
            self.setFormatter(ConsoleFormatter())

        def emit(self, record: logging.LogRecord) -> None:
            try:
                fields: dict[str, Any] = dict(self._extra)
                fields["EVENT"] = record.getMessage()
                for key, value in _record_fields(record).items():
                    name = journal_field_name(key)
                    if name and name not in ("MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER"):
                        fields[name] = value
                fields.setdefault("COMPONENT", record.name)
                # The readable line without its clock: the journal stamps each entry itself.
                message = self.format(record).split(" ", 1)[-1]
                self.send(
                    message,
                    PRIORITY=format(self.map_priority(record.levelno)),
                    LOGGER=record.name,
                    THREAD_NAME=record.threadName,
                    CODE_FILE=record.pathname,
                    CODE_LINE=record.lineno,
                    CODE_FUNC=record.funcName,
                    **fields,
                )
            except Exception:
                self.handleError(record)

    _handler_class = EventJournalHandler
    return EventJournalHandler


def __getattr__(name: str) -> Any:
    # The names this module had when it imported systemd-python at once (tests read them).
    if name in ("_JournalHandler", "EventJournalHandler"):
        handler = _journal_handler_class()
        return None if handler is None else (handler.__mro__[1] if name == "_JournalHandler" else handler)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def journal_handler(
    environ: Mapping[str, str] | None = None,
    stream: Any = None,
    sender_function: Callable[..., Any] | None = None,
) -> logging.Handler | None:
    """A journal handler for the ``pmjobsd`` logger when stderr is journald, else None."""
    if not stderr_is_journal(environ, stream):
        return None
    handler_class = _journal_handler_class()
    if handler_class is None:
        return None
    handler: logging.Handler = handler_class(sender_function=sender_function)
    return handler
