"""Structured logging: ``jobs.log`` JSON lines (README, "The job log") and a console view.

Code logs *events*, not sentences: ``log.info("job.succeeded", job=..., status=...)``.
Every line carries ``ts`` (:func:`~pmjobsd.core.timestamps.utc_iso`), ``level``, ``component``,
``event``; free-text fields pass through :func:`scrub_text`.

Every run writes two lines, so this path is kept short: an event becomes a
``LogRecord`` without ``LogRecord.__init__``'s per-line lookups or the caller
lookup of ``Logger.log`` (nothing here prints a source line), its fields are
scrubbed once per record whatever the number of handlers, the JSON line is
encoded once by a prepared encoder with the timestamp's whole second reused
while it lasts, and jobs.log's handler formats outside its lock: the lock
covers only the ``stat`` and the ``write``, so four workers logging at once do
not queue behind each other's formatting.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from pythonjsonlogger.json import JsonEncoder, JsonFormatter

from pmjobsd.core.privacy import escape_control, scrub_text
from pmjobsd.core.timestamps import utc_iso
from pmjobsd.system.files import describe_error, ensure_private_dir, open_private

LOGGER_NAME = "pmjobsd"
# Fields whose values are free text and may quote a URL or an address.
_FREE_TEXT_FIELDS = ("error", "summary", "reason", "message_text")
# LogRecord attributes that an ``extra`` key may not overwrite.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# Where a record's scrubbed fields are kept once computed (underscore names are never fields).
_FIELDS_CACHE = "_pmjobsd_fields"
# python-json-logger's encoder (datetimes ISO, enums by value, anything else str()), made once:
# the same bytes as JsonFormatter's json.dumps(cls=JsonEncoder) without building one per line.
_ENCODER = JsonEncoder(ensure_ascii=True)
# The LogRecord attributes EventLogger.log sets without LogRecord.__init__ (which looks up the
# thread, the process and the source file's name for every line); the same names and kinds of
# values, so every handler and formatter sees an ordinary record.
_RECORD_DEFAULTS = {
    "args": (),
    "pathname": __file__,
    "filename": os.path.basename(__file__),
    "module": os.path.splitext(os.path.basename(__file__))[0],
    "exc_text": None,
    "stack_info": None,
    "lineno": 0,
    "funcName": "log",
    "processName": "MainProcess",
}
if "taskName" in logging.makeLogRecord({}).__dict__:  # Python 3.12+
    _RECORD_DEFAULTS["taskName"] = None


def _new_record(name: str, level: int, event: str, exc_info: Any, extra: dict[str, Any]) -> logging.LogRecord:
    """A LogRecord as ``Logger.makeRecord`` makes it, built from its attributes directly."""
    record = logging.LogRecord.__new__(logging.LogRecord)
    attributes = record.__dict__
    attributes.update(_RECORD_DEFAULTS)
    attributes.update(extra)
    created = time.time()
    thread = threading.current_thread()
    attributes.update(
        name=name,
        msg=event,
        levelno=level,
        levelname=logging.getLevelName(level),
        exc_info=exc_info,
        created=created,
        msecs=int((created - int(created)) * 1000) + 0.0,
        relativeCreated=(created - logging._startTime) * 1000,  # type: ignore[attr-defined]
        thread=thread.ident,
        threadName=thread.name,
        process=os.getpid(),
    )
    return record


class _SecondCache(threading.local):
    second: float | None = None
    prefix: str = ""


_second_cache = _SecondCache()


def _utc_iso(epoch: float) -> str:
    """:func:`utc_iso` of ``epoch``, the same characters, with the part up to the second reused within it."""
    # datetime.fromtimestamp rounds to the microsecond (half to even), then isoformat cuts to the ms.
    fraction, whole = math.modf(epoch)
    micro = round(fraction * 1e6)
    if micro >= 1_000_000 or micro < 0:
        return utc_iso(epoch)  # a carry into the next second (or a time before 1970): the slow way
    cache = _second_cache
    if cache.second != whole:
        cache.prefix = utc_iso(whole)[:-10]  # "2026-11-28T09:00:00" of "...:00.000+00:00"
        cache.second = whole
    return f"{cache.prefix}.{micro // 1000:03d}+00:00"


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
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        exc_info = fields.pop("exc_info", None)
        if exc_info:
            if isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            elif not isinstance(exc_info, tuple):
                exc_info = sys.exc_info()
        extra: dict[str, Any] = {}
        shown: dict[str, Any] = {}  # the fields as every handler shows them, scrubbed here once
        for key, value in {**self._bound, **fields}.items():
            if value is None:
                continue
            extra[f"field_{key}" if key in _RESERVED else key] = value
            shown[key] = scrub_text(value) if key in _FREE_TEXT_FIELDS and isinstance(value, str) else value
        extra[_FIELDS_CACHE] = shown
        # Logger.log would also look up the calling frame (findCaller), a cost on every line
        # that no output of ours shows: the caller is always this method.
        logger.handle(_new_record(logger.name, level, event, exc_info or None, extra))

    def debug(self, event: str, **fields: Any) -> None:
        self.log(logging.DEBUG, event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self.log(logging.INFO, event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log(logging.WARNING, event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log(logging.ERROR, event, **fields)


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The event fields of a record, free text scrubbed (once per record: every handler shares it).

    Returns a new dict each call, so a handler may change it.
    """
    cached = record.__dict__.get(_FIELDS_CACHE)
    if cached is None:
        cached = {}
        for key, value in record.__dict__.items():
            if key in _RESERVED or key.startswith("_"):
                continue
            if key in _FREE_TEXT_FIELDS and isinstance(value, str):
                value = scrub_text(value)
            cached[key.removeprefix("field_")] = value
        record.__dict__[_FIELDS_CACHE] = cached
    return dict(cached)


class JobsJsonFormatter(JsonFormatter):
    """python-json-logger formatter producing the job log's field order and names.

    :meth:`format` builds the line directly (the base class's generic field
    merging cost more than the rest of a run); :meth:`add_fields` says what a
    line holds, and the encoder is python-json-logger's own, so the bytes are
    the same as the base class would write.
    """

    def format(self, record: logging.LogRecord) -> str:
        log_record: dict[str, Any] = {}
        self.add_fields(log_record, record, {})
        return _ENCODER.encode(log_record)

    def add_fields(self, log_record: dict, record: logging.LogRecord, message_dict: dict) -> None:
        log_record["ts"] = _utc_iso(record.created)
        log_record["level"] = record.levelname
        log_record["component"] = getattr(record, "component", record.name)
        log_record["event"] = record.getMessage()
        for key, value in _record_fields(record).items():
            log_record.setdefault(key, value)
        if record.exc_info:
            traceback = self.formatException(record.exc_info)  # a list only with exc_info_as_array, not set here
            log_record["traceback"] = scrub_text(traceback if isinstance(traceback, str) else "\n".join(traceback))


class ConsoleFormatter(logging.Formatter):
    """One readable line per event for people watching a terminal; control characters in any field
    (a summary quoting a backup member name, an error) are shown as escapes, never sent to the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = _record_fields(record)
        component = fields.pop("component", record.name)
        text = " ".join(f"{key}={value}" for key, value in fields.items())
        return escape_control(f"{when} {record.levelname:<7} {component:<9} {record.getMessage()} {text}".rstrip())


class JobLogHandler(logging.Handler):
    """Appends each record as one line to ``jobs.log``; never raises into the code that logs.

    * Reopens the file when it was renamed, removed or replaced under us (rotation by
      rename; ``rm -rf logs``), recreating the folder 0700 and the file 0600 through
      :func:`~pmjobsd.system.files.open_private` (never through a link).
    * A line that cannot be written (full disk, a folder where the file should be) is
      counted, not raised: one warning on stderr at the first failure, then one line per
      ``REPORT_INTERVAL`` with the count, never a traceback.  While it fails, lines go to
      ``fallback`` (stderr when neither the console nor journald already gets them).
      When writing works again, ``log.lines_lost`` with the ``count`` goes to the file.
    * A line is written whole or not at all: a short write (the disk filled up mid-line)
      is cut back, so the file stays one JSON object per line.
    """

    REPORT_INTERVAL = 60.0

    def __init__(
        self,
        path: str | os.PathLike,
        encoding: str = "utf-8",
        *,
        fallback: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self.path = Path(path)
        self.baseFilename = str(self.path)  # the name logging's file handlers use
        self.encoding = encoding
        self.fallback = fallback
        self._clock = clock
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._lost = 0  # lines lost since writing last worked
        self._unreported = 0  # of those, not yet in a warning
        self._last_report = float("-inf")

    def open(self) -> None:
        """(Re)open the file now; raises OSError (:class:`UnsafePathError` for a link or a foreign folder)."""
        self._close_fd()
        ensure_private_dir(self.path.parent)
        fd = open_private(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        info = os.fstat(fd)
        self._fd, self._identity = fd, (info.st_dev, info.st_ino)

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd, self._identity = self._fd, None, None
            os.close(fd)

    def _reopen_if_needed(self) -> int:
        try:
            info = os.stat(self.path, follow_symlinks=False)
            identity: tuple[int, int] | None = (info.st_dev, info.st_ino)
        except FileNotFoundError:
            identity = None
        if self._fd is None or identity != self._identity:
            self.open()
        assert self._fd is not None
        return self._fd

    def _append(self, data: bytes) -> None:
        fd = self._reopen_if_needed()
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError:
            if written:  # no torn line: the next reader parses every line
                # O_APPEND: the part written is the file's end (the size is read only on failure,
                # not before every line).
                os.ftruncate(fd, os.fstat(fd).st_size - written)
            raise

    def handle(self, record: logging.LogRecord) -> logging.LogRecord | bool:  # type: ignore[override]
        """As ``Handler.handle``, but :meth:`emit` takes the lock itself, for the write alone."""
        accepted = self.filter(record)
        if isinstance(accepted, logging.LogRecord):  # Python 3.12+: a filter may return a new record
            record = accepted
        if accepted:
            self.emit(record)
        return accepted

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            data = line.encode(self.encoding, errors="backslashreplace")
        except Exception:
            self.handleError(record)  # a formatting bug, not a write failure
            return
        # Formatted above outside the lock; the lock keeps the file's identity, the descriptor and
        # the lost-line count consistent, and each line one whole write in the order of the writes.
        with self.lock:  # type: ignore[union-attr]
            try:
                if self._lost:
                    self._append(self._lost_line(record))
                self._append(data)
            except OSError as exc:
                self._failed(exc, line)
                return
            if self._lost:
                self._recovered()

    def _lost_line(self, record: logging.LogRecord) -> bytes:
        note = logging.makeLogRecord(
            {
                "name": record.name,
                "levelno": logging.WARNING,
                "levelname": "WARNING",
                "msg": "log.lines_lost",
                "component": "daemon",
                "count": self._lost,
                "path": self.baseFilename,
            }
        )
        return (self.format(note) + "\n").encode(self.encoding, errors="backslashreplace")

    def _failed(self, exc: OSError, line: str) -> None:
        first = self._lost == 0
        self._lost += 1
        self._unreported += 1
        if self.fallback is not None:
            _write_quietly(self.fallback, line)
        now = self._clock()
        if first and now - self._last_report >= self.REPORT_INTERVAL:
            where = "stderr" if self.fallback is not None else "the console or journald only"
            message = f"cannot write {self.baseFilename}: {describe_error(exc)}; log lines go to {where} until it works again (reported once a minute)"
        elif not first and now - self._last_report >= self.REPORT_INTERVAL:
            message = f"{self._unreported} lines not written to {self.baseFilename} since the last report: {describe_error(exc)}"
        else:
            return
        self._last_report, self._unreported = now, 0
        _write_quietly(sys.stderr, f"pmjobsd: {message}\n")

    def _recovered(self) -> None:
        _write_quietly(sys.stderr, f"pmjobsd: writing {self.baseFilename} again; {self._lost} lines were lost\n")
        self._lost = self._unreported = 0

    def close(self) -> None:
        self.acquire()
        try:
            self._close_fd()
        finally:
            self.release()
        super().close()


# The name the rotation tests' writer uses for pmjobsd's own handler.
PrivateWatchedFileHandler = JobLogHandler


def _write_quietly(stream: TextIO | None, text: str) -> None:
    """Write to a stream that may itself be broken (stderr on the full disk, or closed)."""
    if stream is None:
        return
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass


def setup_logging(
    jobs_log_path: Path | None,
    *,
    console: bool | None = None,
    level: int = logging.INFO,
    extra_handlers: list[logging.Handler] | None = None,
) -> logging.Logger:
    """Configure the ``pmjobsd`` logger: JSON to ``jobs_log_path``, optional console.

    ``console=None`` means: human-readable lines on stderr when it is a terminal.
    Raises OSError when jobs.log cannot be opened now (see :class:`JobLogHandler`).
    Calling it again replaces the handlers (used on reload and in tests).
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(level)
    logger.propagate = False
    if console is None:
        console = sys.stderr.isatty()
    if jobs_log_path is not None:
        # Lines that cannot reach jobs.log go to stderr, unless the console or journald has them anyway.
        fallback = None if console or extra_handlers else sys.stderr
        file_handler = JobLogHandler(jobs_log_path, fallback=fallback)
        file_handler.setFormatter(JobsJsonFormatter())
        file_handler.open()  # at start an unusable jobs.log is an error (one line), later a warning
        logger.addHandler(file_handler)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(ConsoleFormatter())
        logger.addHandler(stream)
    for handler in extra_handlers or []:
        logger.addHandler(handler)
    return logger
