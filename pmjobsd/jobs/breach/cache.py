"""The app's ``breach_cache.json``: read it like the app, merge into it like a database would.

Format (the app's own): ``{"ABCDE": [["<35 hex suffix>", count], ...], ...}``.  The app
reads ``cache.get(prefix)`` and iterates ``for suffix, count in entries``; it
rewrites the whole file, unlocked and non-atomically, whenever it learns a prefix.

:func:`merge_entries` therefore re-reads the file under a lock just before
writing, applies only the refreshed prefixes (whatever the app added meanwhile
survives), writes a temp file in the same folder, fsyncs it, checks that
nobody replaced the file while it was writing (retrying the merge if so) and
renames it into place with the original mode.  A corrupt file is moved aside
with a timestamp, never deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from pmjobsd.system.files import fsync_dir

PREFIX = re.compile(r"[0-9A-F]{5}")
_SUFFIXES = re.compile(r"[0-9A-F]*")
# A quoted prefix key in a damaged file, e.g. '"ABCDE":' — used to salvage names only.
_SALVAGE_KEY = re.compile(r'"([0-9A-F]{5})"\s*:')
NEW_FILE_MODE = 0o600
LOCK_TIMEOUT = 30.0
MERGE_ATTEMPTS = 5


class CacheCorrupt(ValueError):
    """The cache file is not a JSON object of prefix -> list (message names the file)."""


def read_cache(path: Path) -> dict:
    """Return the cache as a dict ({} if the file does not exist); raise CacheCorrupt."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheCorrupt(
            f"{path}: not valid JSON ({type(exc).__name__} at byte {getattr(exc, 'pos', '?')}); "
            "expected an object of 5-hex-digit prefixes to [[suffix, count], ...]"
        ) from None
    if not isinstance(data, dict):
        raise CacheCorrupt(
            f"{path}: top level is a JSON {type(data).__name__}; "
            "expected an object of 5-hex-digit prefixes to [[suffix, count], ...]"
        )
    return data


def entry_is_well_formed(value: object) -> bool:
    """True if ``value`` is a list of ``[35-hex suffix, int count]`` pairs the app can iterate."""
    if type(value) is not list:
        return False
    for pair in value:
        # type() checks, not isinstance: bool is an int, and this runs over millions of pairs.
        if (
            type(pair) is not list
            or len(pair) != 2
            or type(pair[0]) is not str
            or type(pair[1]) is not int
            or len(pair[0]) != 35
        ):
            return False
    # One C-level match over all suffixes instead of one regex call per pair.
    return _SUFFIXES.fullmatch("".join(pair[0] for pair in value)) is not None


def salvage_prefixes(path: Path) -> set[str]:
    """Prefix names still readable in a damaged file (for refetching; never their data)."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return set()
    return set(_SALVAGE_KEY.findall(text))


def quarantine(path: Path, now: float | None = None) -> Path:
    """Move a corrupt file aside as ``<name>.corrupt-<UTC timestamp>`` (never delete it)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    return target


# A file that fails to parse is taken for corrupt only once it is this old (seconds).
CORRUPT_AFTER = 30.0


class CacheBusy(OSError):
    """The file kept changing and never parsed: someone is writing it; try again later."""


@dataclass(frozen=True)
class Snapshot:
    """The parsed file and the (inode, mtime_ns, size) it was parsed at."""

    signature: tuple | None
    data: dict


@dataclass
class MergeReport:
    written: bool = False
    prefixes_total: int = 0
    quarantined_to: Path | None = None
    retries: int = 0  # times the file changed under us and the merge was redone
    kept_from_others: int = 0  # prefixes present in the file that this merge did not touch
    snapshot: Snapshot | None = None


def _signature(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def read_stable(path: Path, attempts: int = 5, pause: float = 0.05) -> tuple[tuple | None, dict]:
    """Read the cache with its signature; a file that fails to parse while it is still
    changing is the app mid-write (it truncates, then writes), so wait and read again.
    Raise CacheCorrupt only for a file that stays unreadable and unchanged."""
    for _ in range(attempts):
        before = _signature(path)
        try:
            return before, read_cache(path)
        except CacheCorrupt:
            time.sleep(pause)
            if before is not None and _signature(path) == before:
                # The app writes in place (truncate, then json.dump): a writer paused mid-file
                # (CPU starvation, suspend) leaves a recent, unchanging half file.  Only a file
                # left broken for a while is corrupt; moving a live write aside would lose it.
                if time.time() - before[1] / 1e9 < CORRUPT_AFTER:
                    raise CacheBusy(
                        f"{path}: unreadable but written {CORRUPT_AFTER:g} s ago or less; the app may be writing it"
                    ) from None
                raise
    # Still being written: not corrupt, just busy; the caller leaves it alone this time.
    raise CacheBusy(f"{path}: kept changing and never parsed in {attempts} reads")


def lock_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def merge_entries(
    path: Path,
    updates: dict[str, list],
    *,
    now: float | None = None,
    force_write: bool = False,
    snapshot: Snapshot | None = None,
) -> MergeReport:
    """Merge ``updates`` (prefix -> entries) into the cache file atomically.

    Under ``<file>.lock``: re-read the file, replace only the updated prefixes,
    write ``.breach_cache.json.*.tmp`` in the same folder, fsync, and rename
    over the original unless it changed meanwhile (then merge again).  A
    corrupt file is moved aside and rebuilt from ``updates``.  With no updates
    nothing is written unless the file is corrupt or ``force_write`` is set.
    ``snapshot`` (from an earlier read or merge) saves re-parsing a file that
    has not changed since; ``report.snapshot`` is the file as written.
    """
    report = MergeReport()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path_for(path)), timeout=LOCK_TIMEOUT, mode=NEW_FILE_MODE):
        for attempt in range(MERGE_ATTEMPTS):
            try:
                if snapshot is not None and attempt == 0 and _signature(path) == snapshot.signature:
                    before, current = snapshot.signature, snapshot.data
                else:
                    before, current = read_stable(path)
            except CacheCorrupt:
                report.quarantined_to = quarantine(path, now)
                # Rebuild on the last good reading when we have one, not on nothing.
                before, current = None, dict(snapshot.data) if snapshot is not None else {}
            if not updates and not force_write and report.quarantined_to is None:
                report.prefixes_total = len(current)
                return report
            mode = NEW_FILE_MODE
            if before is not None:
                mode = path.stat().st_mode & 0o777
            merged = dict(current)
            merged.update(updates)
            report.kept_from_others = sum(1 for key in current if key not in updates)
            temp_path = _write_temp(path, merged, mode)
            # The app writes without a lock: if it replaced the file while we wrote, merge again.
            if _signature(path) != before:
                os.unlink(temp_path)
                report.retries += 1
                continue
            os.replace(temp_path, path)
            fsync_dir(path.parent)
            report.written = True
            report.prefixes_total = len(merged)
            report.snapshot = Snapshot(_signature(path), merged)
            return report
    raise OSError(f"{path}: changed during each of {MERGE_ATTEMPTS} merge attempts; left as it was")


def _write_temp(path: Path, data: dict, mode: int) -> str:
    fd, temp_path = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            # One dumps + one write: json.dump to a file is ~3x slower on a 70 MB cache.
            # Same separators as the app's json.dump, so the file looks like the app's own.
            handle.write(json.dumps(data).encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        try:
            os.unlink(temp_path)
        except OSError:
            pass
        raise
    return temp_path


@dataclass
class EntryDiff:
    new_suffixes: int = 0
    increased_counts: int = 0


def diff_entries(old: object, new: list) -> EntryDiff:
    """How many suffixes are new, and how many counts grew, from ``old`` to ``new`` (counts only)."""
    diff = EntryDiff()
    try:
        previous = dict(map(tuple, old)) if isinstance(old, list) else {}
    except (TypeError, ValueError):  # not pairs: everything counts as new
        previous = {}
    for suffix, count in new:
        before = previous.get(suffix)
        if before is None:
            diff.new_suffixes += 1
        elif count > before:
            diff.increased_counts += 1
    return diff


def fingerprint(entries: object) -> str:
    """A short digest of an entry, to notice when someone else rewrote it."""
    return hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()[:24]


__all__ = [
    "CacheCorrupt",
    "CacheBusy",
    "MergeReport",
    "Snapshot",
    "read_stable",
    "merge_entries",
    "read_cache",
    "quarantine",
    "salvage_prefixes",
    "entry_is_well_formed",
    "diff_entries",
    "fingerprint",
    "PREFIX",
]
