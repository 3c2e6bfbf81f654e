"""The start journal: a run is on disk before its job is called, without waiting for SQLite.

The history writer commits rows in rounds on its own thread.  A worker that
waited for its start row's commit before calling the job (the price of "a run
that started is in the history after ``kill -9``") waited for a thread hand-off
and a transaction.  Instead the worker writes the start into this journal with
one ``pwrite`` and goes on; the writer clears the entry once the row is
committed.

The file (``starts.journal`` beside ``history.db``) is a fixed ring of
:data:`SLOTS` slots of :data:`SLOT_SIZE` bytes: all NUL is a free slot, else
one JSON array, NUL-padded, of what the start row holds.  A ``pwrite`` of one
slot is whole after a process crash (the kernel finishes the call; only a power
loss can lose it, as it can lose the last commits of the WAL with
``synchronous=NORMAL``).  Fixed slots need no truncation and bound the file:
when every slot holds an uncommitted start (the database has not taken writes
for a while), :meth:`StartJournal.write` returns None and the caller waits for
the commit as before.

Only one process owns the journal (an exclusive ``flock``, the daemon's or a
daemonless ``run-now``'s writer); any process opening the history adds the
entries it finds with ``INSERT OR IGNORE`` (:func:`read_rows`), so a start
that never reached the database is still in every reader's history, RUNNING
while its writer lives and INTERRUPTED once it is gone, and can never replace
a row the writer committed.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections import deque
from pathlib import Path

from pmjobsd.core.observers import RunRecord
from pmjobsd.system.files import open_private

SLOT_SIZE = 512
SLOTS = 256
_EMPTY = bytes(SLOT_SIZE)  # a free slot

# The start row's columns in a slot's array, in this order (history.py builds the row).
FIELDS = ("run_id", "attempt", "job", "trigger", "slot", "started_at", "pid", "pid_started", "member", "token")


def journal_path(history_path: Path) -> Path:
    return Path(history_path).parent / "starts.journal"


def _encode(record: RunRecord, pid: int, pid_started: float | None) -> bytes:
    slot = record.slot.isoformat() if record.slot else None
    values = [record.run_id, record.attempt, record.job, record.trigger.value, slot, record.started_at]
    return json.dumps([*values, pid, pid_started, record.member, record.token], separators=(",", ":")).encode()


def _decode(data: bytes) -> tuple | None:
    """A slot's entry as a tuple in :data:`FIELDS` order, or None (free, or not ours: skipped)."""
    text = data.rstrip(b"\0")
    if not text:
        return None
    try:
        values = json.loads(text)
    except ValueError:
        return None
    if not isinstance(values, list) or len(values) != len(FIELDS):
        return None
    run_id, attempt, job, trigger, slot, started_at, pid, pid_started, member, token = values
    if not (isinstance(run_id, str) and isinstance(job, str) and isinstance(trigger, str)):
        return None
    if not (isinstance(attempt, int) and isinstance(pid, int) and isinstance(started_at, (int, float))):
        return None
    return tuple(values)


def _entries(data: bytes) -> list[tuple[int, tuple]]:
    found = []
    for index in range(min(SLOTS, len(data) // SLOT_SIZE)):
        chunk = data[index * SLOT_SIZE : (index + 1) * SLOT_SIZE]
        if chunk != _EMPTY:
            entry = _decode(chunk)
            if entry is not None:
                found.append((index, entry))
    return found


def read_rows(history_path: Path) -> list[tuple]:
    """The journal's entries beside ``history_path`` (in :data:`FIELDS` order); [] when there is none.

    Read with the same care as the history (a link or a file not ours is refused, as nothing).
    """
    try:
        fd = open_private(journal_path(history_path), os.O_RDONLY)
    except OSError:
        return []
    try:
        data = os.pread(fd, SLOTS * SLOT_SIZE, 0)
    finally:
        os.close(fd)
    if not data.strip(b"\0"):
        return []
    return [entry for _, entry in _entries(data)]


def _allocate(fd: int, size: int) -> None:
    """Make the file ``size`` bytes, its blocks allocated where the system can (a full disk then fails no start)."""
    try:
        os.posix_fallocate(fd, 0, size)  # Linux, the BSDs; not macOS
    except (AttributeError, OSError):
        os.ftruncate(fd, size)


class StartJournal:
    """The owner's side: write a start into a free slot, clear it once its row is committed.

    ``leftover`` holds the entries a previous owner left (the runs that were
    starting when it died); their slots stay taken until :meth:`clear`.
    Raises OSError when the file cannot be opened, BlockingIOError when
    another process owns it.
    """

    def __init__(self, history_path: Path):
        self.path = journal_path(history_path)
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            data = os.pread(fd, SLOTS * SLOT_SIZE, 0)
            if len(data) < SLOTS * SLOT_SIZE:
                _allocate(fd, SLOTS * SLOT_SIZE)
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd
        self.leftover: list[tuple[int, tuple]] = _entries(data) if data.strip(b"\0") else []
        taken = {index for index, _ in self.leftover}
        # deque.popleft/append are atomic: workers take slots and the writer gives them back without a lock.
        self._free: deque[int] = deque(index for index in range(SLOTS) if index not in taken)
        for index in range(SLOTS):
            if index not in taken and data[index * SLOT_SIZE : (index + 1) * SLOT_SIZE].strip(b"\0"):
                self._clear(index)  # a torn or foreign slot: free it for good

    def write(self, record: RunRecord, pid: int, pid_started: float | None) -> int | None:
        """Write ``record``'s start into a free slot; its index, or None (no free slot, too long, I/O error)."""
        data = _encode(record, pid, pid_started)
        if len(data) > SLOT_SIZE or self._fd is None:
            return None
        try:
            index = self._free.popleft()
        except IndexError:
            return None
        try:
            # Short only when the disk is full and the file could not be allocated ahead (_allocate).
            whole = os.pwrite(self._fd, data.ljust(SLOT_SIZE, b"\0"), index * SLOT_SIZE) == SLOT_SIZE
        except OSError:
            whole = False
        if not whole:
            self._free.append(index)  # a part written is no entry (readers skip it); the next use overwrites it
            return None
        return index

    def clear(self, indices: list[int]) -> None:
        """The rows of slots ``indices`` are committed: free them (a failed clear keeps its slots taken).

        Neighbouring slots (the ring hands them out in order) are cleared by one ``pwrite``.
        """
        ordered = sorted(indices)
        start = 0
        for end in range(1, len(ordered) + 1):
            if end == len(ordered) or ordered[end] != ordered[end - 1] + 1:
                if self._clear(ordered[start], end - start):
                    self._free.extend(ordered[start:end])
                start = end

    def _clear(self, index: int, count: int = 1) -> bool:
        if self._fd is None:
            return False
        try:
            os.pwrite(self._fd, bytes(SLOT_SIZE * count), index * SLOT_SIZE)
        except OSError:
            return False
        return True

    def free_slots(self) -> int:
        return len(self._free)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # and the flock with it
