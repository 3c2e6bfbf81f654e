"""Structured logging: ``jobs.log`` JSON lines (README, "The job log") and a console view.

Code logs *events*, not sentences: ``log.info("job.succeeded", job=..., status=...)``.
Every line carries ``ts`` (:func:`~pmjobsd.core.timestamps.utc_iso`), ``level``, ``component``,
``event``; free-text fields pass through :func:`scrub_text`.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from pmjobsd.core.privacy import scrub_text
from pmjobsd.core.timestamps import utc_iso
from pmjobsd.system.files import ensure_private_dir, open_private

LOGGER_NAME = "pmjobsd"
# Fields whose values are free text and may quote a URL or an address.
_FREE_TEXT_FIELDS = ("error", "summary", "reason", "message_text")
# LogRecord attributes that an ``extra`` key may not overwrite.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class EventLogger:
    """A logger that emits named events with fields, bound to a component and context."""

    def __init__(self, component: str, logger: logging.Logger | None = None, **bound: Any):
        self._logger = logger or logging.getLogger(LOGGER_NAME)
        self._bound = {"component": component, **bound}

    def bind(self, **fields: Any) -> EventLogger:
        """Return a logger whose every line also carries ``fields``."""
        bound = {**self._bound, **fields}
        component = bound.pop("component")
        return EventLogger(component, self._logger, **bound)

    def log(self, level: int, event: str, **fields: Any) -> None:
        if not self._logger.isEnabledFor(level):
            return
        exc_info = fields.pop("exc_info", None)
        extra = {}
        for key, value in {**self._bound, **fields}.items():
            if value is None:
                continue
            extra[f"field_{key}" if key in _RESERVED else key] = value
        self._logger.log(level, event, extra=extra, exc_info=exc_info)

    def debug(self, event: str, **fields: Any) -> None:
        self.log(logging.DEBUG, event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self.log(logging.INFO, event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log(logging.WARNING, event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log(logging.ERROR, event, **fields)


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The event fields of a record, free text scrubbed."""
    fields = {}
    for key, value in record.__dict__.items():
        if key in _RESERVED or key.startswith("_"):
            continue
        if key in _FREE_TEXT_FIELDS and isinstance(value, str):
            value = scrub_text(value)
        fields[key.removeprefix("field_")] = value
    return fields


class JobsJsonFormatter(JsonFormatter):
    """python-json-logger formatter producing the job log's field order and names."""

    def add_fields(self, log_record: dict, record: logging.LogRecord, message_dict: dict) -> None:
        log_record["ts"] = utc_iso(record.created)
        log_record["level"] = record.levelname
        log_record["component"] = getattr(record, "component", record.name)
        log_record["event"] = record.getMessage()
        for key, value in _record_fields(record).items():
            log_record.setdefault(key, value)
        if record.exc_info:
            traceback = self.formatException(record.exc_info)  # a list only with exc_info_as_array, not set here
            log_record["traceback"] = scrub_text(traceback if isinstance(traceback, str) else "\n".join(traceback))


class ConsoleFormatter(logging.Formatter):
    """One readable line per event for people watching a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = _record_fields(record)
        component = fields.pop("component", record.name)
        text = " ".join(f"{key}={value}" for key, value in fields.items())
        return f"{when} {record.levelname:<7} {component:<9} {record.getMessage()} {text}".rstrip()


class PrivateWatchedFileHandler(logging.handlers.WatchedFileHandler):
    """A WatchedFileHandler that creates its file 0600.

    WatchedFileHandler reopens the file when it was renamed or removed under
    us (rotation by rename); with copy-truncate it keeps appending (O_APPEND).
    """

    def _open(self):
        fd = open_private(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return os.fdopen(fd, "a", encoding=self.encoding or "utf-8")


def setup_logging(
    jobs_log_path: Path | None,
    *,
    console: bool | None = None,
    level: int = logging.INFO,
    extra_handlers: list[logging.Handler] | None = None,
) -> logging.Logger:
    """Configure the ``pmjobsd`` logger: JSON to ``jobs_log_path``, optional console.

    ``console=None`` means: human-readable lines on stderr when it is a terminal.
    Calling it again replaces the handlers (used on reload and in tests).
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(level)
    logger.propagate = False
    if jobs_log_path is not None:
        ensure_private_dir(jobs_log_path.parent)
        file_handler = PrivateWatchedFileHandler(jobs_log_path, encoding="utf-8")
        file_handler.setFormatter(JobsJsonFormatter())
        logger.addHandler(file_handler)
    if console is None:
        console = sys.stderr.isatty()
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(ConsoleFormatter())
        logger.addHandler(stream)
    for handler in extra_handlers or []:
        logger.addHandler(handler)
    return logger
