"""The app's ``breach_cache.json``: read it like the app, merge into it like a database would.

Format (the app's own): ``{"ABCDE": [["<35 hex suffix>", count], ...], ...}``.  The app
reads ``cache.get(prefix)`` and iterates ``for suffix, count in entries``; it
rewrites the whole file, unlocked and non-atomically, whenever it learns a prefix.

The file is never loaded whole (a big vault's is tens of MB): it is read one
entry at a time (:mod:`pmjobsd.jobs.breach.stream`), planning keeps only a
small :class:`EntrySummary` per prefix, and refreshed entries wait as JSON text.

:func:`merge_entries` re-reads the file under a lock just before writing,
streams it into a temp file in the same folder with only the refreshed
prefixes replaced (whatever the app added meanwhile survives, byte for byte),
fsyncs it, checks that nobody replaced the file while it was writing
(retrying the merge if so) and renames it into place with the original mode.
A corrupt file is moved aside with a timestamp, never deleted.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pmjobsd.jobs.breach.stream import CacheCorrupt, Entry, iter_entries
from pmjobsd.system.files import fsync_dir

PREFIX = re.compile(r"[0-9A-F]{5}")
_SUFFIXES = re.compile(r"[0-9A-F]*")
# A quoted prefix key in a damaged file, e.g. '"ABCDE":' — used to salvage names only.
_SALVAGE_KEY = re.compile(r'"([0-9A-F]{5})"\s*:')
NEW_FILE_MODE = 0o600
LOCK_TIMEOUT = 30.0
MERGE_ATTEMPTS = 5
SALVAGE_CHUNK = 1 << 20
WRITE_BUFFER = 1 << 20

# Called with the cache's path after a merge has written its temp file and before it checks
# whether the file changed meanwhile: the one point where an unlocked writer (the app) can
# still be lost.  None in production; tests set it to make the app write exactly there.
before_replace_hook: Callable[[Path], None] | None = None


def read_cache(path: Path) -> dict:
    """Return the whole cache as a dict ({} if the file does not exist); raise CacheCorrupt.

    Builds every entry: for small files and tests.  The job reads :func:`read_summaries`."""
    try:
        return {entry.key: entry.decoded() for entry in iter_entries(path)}
    except FileNotFoundError:
        return {}


@dataclass(frozen=True)
class EntrySummary:
    """What planning needs of one entry: is it usable, how long, and its fingerprint."""

    well_formed: bool
    length: int
    digest: str


def summarise(value: object) -> EntrySummary:
    """The summary of a decoded entry."""
    return EntrySummary(entry_is_well_formed(value), len(value) if isinstance(value, list) else 0, fingerprint(value))


def _summarise_entry(entry: Entry) -> EntrySummary:
    if not entry.app_format:
        return summarise(entry.value)
    # Well formed by its shape (APP_ENTRY); its compact form, which fingerprint() hashes, by two
    # replacements: '", ' and '], [' occur nowhere else in it.  No object is built.
    compact = entry.text.replace('", ', '",').replace("], [", "],[")
    return EntrySummary(True, entry.text.count('["'), _digest(compact))


def read_summaries(path: Path) -> dict[str, EntrySummary]:
    """A summary of each entry ({} if the file does not exist); raise CacheCorrupt.

    Memory stays at one entry plus a chunk of the file, and the GIL is released
    between entries, so other jobs keep running while a big file is read."""
    try:
        return {entry.key: _summarise_entry(entry) for entry in iter_entries(path)}
    except FileNotFoundError:
        return {}


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
    """Prefix names still readable in a damaged file (for refetching; never their data).

    Scanned a chunk at a time: one regex over a whole big file would hold the GIL."""
    found: set[str] = set()
    tail = b""
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(SALVAGE_CHUNK):
                text = (tail + chunk).decode("utf-8", errors="replace")
                found.update(_SALVAGE_KEY.findall(text))
                tail = chunk[-64:]  # a key cut between two chunks is found in the next
    except OSError:
        pass
    return found


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


@dataclass
class EntryDiff:
    new_suffixes: int = 0
    increased_counts: int = 0


@dataclass
class MergeReport:
    written: bool = False
    prefixes_total: int = 0
    quarantined_to: Path | None = None
    corrupt_reason: str | None = None  # why the file was moved aside
    retries: int = 0  # times the file changed under us and the merge was redone
    kept_from_others: int = 0  # prefixes present in the file that this merge did not touch
    diffs: dict[str, EntryDiff] = field(default_factory=dict)  # per replaced prefix, old -> new


def _signature(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _unreadable(path: Path, before: tuple | None, pause: float) -> bool:
    """After a parse failure: True if the file changed meanwhile (read it again).

    Raise CacheBusy for a recent, unchanging broken file: the app writes in place
    (truncate, then json.dump), and a writer paused mid-file (CPU starvation,
    suspend) leaves exactly that; moving a live write aside would lose it.  False:
    the file was left broken a while ago, it is corrupt."""
    time.sleep(pause)
    if before is None or _signature(path) != before:
        return True
    if time.time() - before[1] / 1e9 < CORRUPT_AFTER:
        raise CacheBusy(f"{path}: unreadable but written {CORRUPT_AFTER:g} s ago or less; the app may be writing it")
    return False


def read_stable(path: Path, attempts: int = 5, pause: float = 0.05) -> tuple[tuple | None, dict[str, EntrySummary]]:
    """Read the cache's summaries with its signature; a file that fails to parse while it
    is still changing is the app mid-write, so wait and read again.  Raise CacheCorrupt
    only for a file that stays unreadable and unchanged."""
    for _ in range(attempts):
        before = _signature(path)
        try:
            return before, read_summaries(path)
        except CacheCorrupt:
            if not _unreadable(path, before, pause):
                raise
    # Still being written: not corrupt, just busy; the caller leaves it alone this time.
    raise CacheBusy(f"{path}: kept changing and never parsed in {attempts} reads")


def lock_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def encode_entry(entries: list) -> str:
    """An entry as the app's ``json.dump`` writes it, ready for :func:`merge_entries`."""
    return json.dumps(entries)


def merge_entries(
    path: Path,
    updates: Mapping[str, str],
    *,
    now: float | None = None,
    force_write: bool = False,
    pause: float = 0.05,
    before_replace: Callable[[], None] | None = None,
) -> MergeReport:
    """Merge ``updates`` (prefix -> entry as JSON text, :func:`encode_entry`) into the cache file.

    Under ``<file>.lock``: stream the file into ``.breach_cache.json.*.tmp`` in the
    same folder, replacing only the updated prefixes (the others are copied as
    they are, prefixes not in the file are added at the end), fsync, and rename
    over the original unless it changed meanwhile (then merge again).  A
    corrupt file is moved aside and rebuilt from ``updates``.  With no updates
    nothing is written unless the file is corrupt or ``force_write`` is set.
    Raise CacheBusy (an OSError) while the app is writing a broken file.
    ``before_replace`` (the run's fencing check) is called just before the rename; what
    it raises leaves the file as it was.
    """
    report = MergeReport()
    path.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock  # when the job merges, not when the settings name the job

    with FileLock(str(lock_path_for(path)), timeout=LOCK_TIMEOUT, mode=NEW_FILE_MODE):
        for _ in range(MERGE_ATTEMPTS):
            before = _signature(path)
            if not updates and not force_write:
                try:  # only a corrupt file needs writing: check without writing
                    report.prefixes_total = len(read_summaries(path))
                    return report
                except CacheCorrupt as exc:
                    if _unreadable(path, before, pause):
                        report.retries += 1
                        continue
                    report.corrupt_reason = str(exc)
                    report.quarantined_to = quarantine(path, now)
                    before = None
            mode = NEW_FILE_MODE if before is None else path.stat().st_mode & 0o777
            try:
                temp_path = _write_merged(path, before is not None, updates, mode, report)
            except CacheCorrupt as exc:
                if _unreadable(path, before, pause):
                    report.retries += 1
                    continue
                report.corrupt_reason = str(exc)
                report.quarantined_to = quarantine(path, now)
                before = None
                # Rebuilt from what this merge brings: the old entries are in the moved-aside file.
                temp_path = _write_merged(path, False, updates, NEW_FILE_MODE, report)
            if before_replace_hook is not None:
                before_replace_hook(path)
            # The app writes without a lock: if it replaced the file while we wrote, merge again.
            if _signature(path) != before:
                os.unlink(temp_path)
                report.retries += 1
                continue
            if before_replace is not None:
                try:
                    before_replace()
                except BaseException:
                    os.unlink(temp_path)
                    raise
            os.replace(temp_path, path)
            fsync_dir(path.parent)
            report.written = True
            return report
    raise OSError(f"{path}: changed during each of {MERGE_ATTEMPTS} merge attempts; left as it was")


def _write_merged(path: Path, read_it: bool, updates: Mapping[str, str], mode: int, report: MergeReport) -> str:
    """Write ``path``'s entries (none unless ``read_it``) with ``updates`` applied to a temp
    file beside it; return the temp file's path.

    Same separators as the app's json.dump, so the file looks like the app's own."""
    source = path if read_it else None
    fd, temp_path = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    report.diffs, report.kept_from_others, total = {}, 0, 0
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", buffering=WRITE_BUFFER) as handle:
            handle.write("{")
            seen: set[str] = set()
            if source is not None:
                for key, text, value, app_format in iter_entries(source):
                    replacement = updates.get(key)
                    if replacement is None:
                        report.kept_from_others += 1
                    else:
                        if key not in seen:
                            old = json.loads(text) if app_format else value
                            report.diffs[key] = diff_entries(old, json.loads(replacement))
                        seen.add(key)
                        text = replacement
                    handle.write((", " if total else "") + json.dumps(key) + ": " + text)
                    total += 1
            for key, replacement in updates.items():
                if key not in seen:
                    report.diffs[key] = diff_entries(None, json.loads(replacement))
                    handle.write((", " if total else "") + json.dumps(key) + ": " + replacement)
                    total += 1
            handle.write("}")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        try:
            os.unlink(temp_path)
        except OSError:
            pass
        raise
    report.prefixes_total = total
    return temp_path


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
    return _digest(json.dumps(entries, separators=(",", ":")))


def _digest(compact_json: str) -> str:
    import hashlib  # loaded when the job runs, not when the daemon reads its options

    return hashlib.sha256(compact_json.encode()).hexdigest()[:24]


__all__ = [
    "CacheCorrupt",
    "CacheBusy",
    "MergeReport",
    "EntrySummary",
    "encode_entry",
    "read_summaries",
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
