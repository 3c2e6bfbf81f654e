"""``backup_integrity_check``: the live vault is sound and every backup is intact and complete.

Live vault: ``PRAGMA integrity_check`` (or ``quick_check``) and
``foreign_key_check``, read-only.  Backups in ``backup_dirs``: every file's
SHA-256 is compared with the folder's ``SHA256SUMS`` (a changed backup FAILs);
the ``verify_latest`` newest and every backup not yet recorded get the full
check — zip CRCs, required members, ``metadata.json``, the embedded vault's
integrity, and completeness against the live vault (the app zips
``passwords.db`` without its ``-wal``, so a backup can silently miss recent
entries).  Backups that pass the full check are recorded in ``SHA256SUMS``.
One bad backup never stops the others from being checked: whatever goes wrong
with one (a zip bomb, a hostile ``metadata.json``, an unexpected error) is that
backup's FAIL.  Each member may hold at most ``member_limit_factor`` times the
live vault's size (at least ``member_limit_min_mb``), so a hostile zip costs
bounded time, memory and scratch space.  Scratch folders left by a killed run
are removed at start.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pmjobsd.api import JobCancelled, JobContext, JobResult, Status, validate
from pmjobsd.app.snapshot import private_scratch
from pmjobsd.app.vault import EntryStamp, VaultError, entry_stamps, integrity_problems, read_vault
from pmjobsd.jobs.backup.archive import (
    BACKUP_NAME,
    BackupDefect,
    BackupFile,
    Limits,
    check_archive,
    compare_with_live,
    find_backups,
)
from pmjobsd.jobs.backup.backup_integrity_check_spec import BackupCheckOptions
from pmjobsd.jobs.backup.checksums import ChecksumFile, sha256_file

DAY = 86400.0
MAX_LISTED_IDS = 20
MB = 1 << 20
SCRATCH_PREFIX = "scratch-"
clock = time.time  # injectable wall clock (tests replace it; libfaketime hangs Python)


@dataclass
class BackupOutcome:
    backup: BackupFile
    status: str = "OK"  # OK | WARN | FAIL | SKIPPED (WARN: intact, completeness uncertain)
    check: str = "hash"  # hash | full
    reason: str | None = None
    missing_ids: tuple[int, ...] = ()
    older_ids: tuple[int, ...] = ()
    maybe_imported_ids: tuple[int, ...] = ()

    def fail(self, reason: str) -> BackupOutcome:
        self.status, self.reason = "FAIL", reason
        return self


@dataclass
class _Run:
    ctx: JobContext
    options: BackupCheckOptions
    scratch: Path
    limits: Limits
    live: dict[int, EntryStamp] | None = None
    bytes_hashed: int = 0
    warnings: list[str] = field(default_factory=list)


def _options(ctx: JobContext) -> BackupCheckOptions:
    options = ctx.options
    return options if isinstance(options, BackupCheckOptions) else validate(BackupCheckOptions, options or {})


def _backup_dirs(ctx: JobContext, options: BackupCheckOptions) -> list[Path]:
    if not options.backup_dirs:
        return [ctx.paths.backups_dir]
    return [Path(folder).expanduser() for folder in options.backup_dirs]


def _limits(ctx: JobContext, options: BackupCheckOptions) -> Limits:
    """The member cap, relative to the live vault (main file and -wal) as it is now."""
    size = 0
    for suffix in ("", "-wal"):
        try:
            size += os.stat(f"{ctx.paths.vault_path}{suffix}").st_size
        except OSError:
            pass
    return Limits(member_bytes=int(max(options.member_limit_min_mb * MB, options.member_limit_factor * size)))


def _check_live_vault(run: _Run) -> list[str]:
    """Integrity of the live vault; fills ``run.live`` with its entry stamps. Returns FAIL reasons."""
    ctx, quick = run.ctx, run.options.check == "quick"
    try:
        result = read_vault(
            ctx.paths.vault_path,
            lambda conn: (integrity_problems(conn, quick, hash_id=ctx.hash_entry_id), entry_stamps(conn)),
            lock_timeout=min(run.options.lock_timeout, max(ctx.time_left(), 0.1)),
            scratch_dir=run.scratch,
            check_cancelled=ctx.check_cancelled,
        )
    except VaultError as exc:
        ctx.log.warning("vault.unreadable", reason=exc.reason, error=str(exc))
        if exc.reason == "missing":
            run.warnings.append("no vault found, backups not compared with it")
            return []
        return [f"live vault: {exc}"]
    problems, run.live = result.value
    ctx.log.info("vault.checked", access=result.access, entries=len(run.live), problems=len(problems))
    return [f"live vault {run.options.check} check: {'; '.join(problems[:3])}"] if problems else []


def _full_check(run: _Run, outcome: BackupOutcome) -> None:
    ctx, backup = run.ctx, outcome.backup
    outcome.check = "full"
    with private_scratch(run.scratch, "backup-") as folder:
        embedded = folder / "passwords.db"
        try:
            report = check_archive(backup.path, embedded, run.limits, check_cancelled=ctx.check_cancelled)
        except BackupDefect as defect:
            outcome.fail(str(defect))
            return
        quick = run.options.check == "quick"
        try:
            result = read_vault(
                embedded,
                lambda conn: (integrity_problems(conn, quick, hash_id=ctx.hash_entry_id), entry_stamps(conn)),
                lock_timeout=1.0,
                scratch_dir=folder,
                check_cancelled=ctx.check_cancelled,
            )
        except VaultError as exc:
            if exc.reason != "not_a_vault":
                outcome.fail(f"embedded passwords.db: {str(exc).replace(str(embedded) + ': ', '')}")
                return
            # A sound SQLite file without the table: the app's first session, all in its -wal.
            stamps: dict[int, EntryStamp] = {}
            empty_note = "embedded passwords.db has no 'passwords' table; "
        else:
            empty_note = ""
            problems, stamps = result.value
            if problems:
                outcome.fail(f"embedded passwords.db fails its {run.options.check} check: {'; '.join(problems[:3])}")
                return
    # No table at all: the schema itself was in the -wal, no later import explains the gap.
    completeness = compare_with_live(stamps, run.live or {}, report.timestamp, imports_possible=not empty_note)
    outcome.missing_ids, outcome.older_ids = completeness.missing_ids, completeness.older_ids
    outcome.maybe_imported_ids = completeness.maybe_imported_ids
    if empty_note or not completeness.complete:
        outcome.fail(
            f"incomplete: {empty_note}{len(completeness.missing_ids)} entries saved before the backup are missing"
            f" and {len(completeness.older_ids)} are older than in the vault"
            " (the app copied passwords.db without its -wal file)"
        )
    elif completeness.maybe_imported_ids:
        outcome.status = "WARN"
        outcome.reason = (
            f"{len(completeness.maybe_imported_ids)} entries dated before the backup are not in it, all newer than"
            " its entries and never edited: possibly imported after it (the app's import keeps their dates)"
        )


def _check_backup(run: _Run, backup: BackupFile, sums: ChecksumFile, full: bool, now: float) -> BackupOutcome:
    """Check one backup; anything that goes wrong (but a cancel) is this backup's FAIL."""
    try:
        return _check_one(run, backup, sums, full, now)
    except JobCancelled:
        raise
    except Exception as exc:  # one hostile backup must not stop the others
        run.ctx.log.warning("backup.check_crashed", file=backup.name, error=f"{type(exc).__name__}: {exc}")
        return BackupOutcome(backup, check="full").fail(f"could not be checked ({type(exc).__name__}: {exc})")


def _check_one(run: _Run, backup: BackupFile, sums: ChecksumFile, full: bool, now: float) -> BackupOutcome:
    outcome = BackupOutcome(backup)
    try:
        stat = backup.path.stat()
        if now - stat.st_mtime < run.options.settle_seconds:
            outcome.status, outcome.reason = "SKIPPED", "modified moments ago (the app may still be writing it)"
            return outcome
        digest = sha256_file(backup.path, check_cancelled=run.ctx.check_cancelled)
        run.bytes_hashed += stat.st_size
    except OSError as exc:
        return outcome.fail(f"cannot read: {exc.strerror or exc}")
    recorded = sums.entries.get(backup.name)
    if recorded is not None and recorded != digest:
        return outcome.fail(
            f"changed since first verified (SHA256SUMS has {recorded[:12]}..., the file now {digest[:12]}...)"
        )
    if recorded is None or full:
        _full_check(run, outcome)
        if outcome.status in ("OK", "WARN") and recorded is None:  # the archive itself is intact
            sums.record(backup.name, digest)
    return outcome


def _log_outcome(ctx: JobContext, outcome: BackupOutcome) -> None:
    fields = {"file": outcome.backup.name, "status": outcome.status, "check": outcome.check}
    if outcome.status == "FAIL":
        ctx.log.warning("backup.failed", reason=outcome.reason, **fields)
    else:
        ctx.log.info("backup.checked", **fields)
    for entry_id in (outcome.missing_ids + outcome.older_ids)[:MAX_LISTED_IDS]:
        ctx.log.info("backup.entry_not_in_backup", file=outcome.backup.name, entry_id_hash=ctx.hash_entry_id(entry_id))
    for entry_id in outcome.maybe_imported_ids[:MAX_LISTED_IDS]:
        ctx.log.info("backup.entry_maybe_imported", file=outcome.backup.name, entry_id_hash=ctx.hash_entry_id(entry_id))


def run(ctx: JobContext) -> JobResult:
    options = _options(ctx)
    now = clock()
    folders = _backup_dirs(ctx, options)
    # private_scratch first removes the scratch folders of runs that were killed (kill -9).
    with private_scratch(ctx.state_dir, SCRATCH_PREFIX) as scratch:
        state = _Run(ctx, options, scratch, _limits(ctx, options))
        failures = _check_live_vault(state)
        vault_failed = bool(failures)
        backups = find_backups(folders)
        sums = {folder: ChecksumFile.load(folder) for folder in folders if folder.is_dir()}
        for folder in folders:
            if not folder.is_dir() and options.backup_dirs:
                state.warnings.append(f"backup folder {folder} does not exist")
        for sum_file in sums.values():
            state.warnings.extend(sum_file.problems)
        outcomes: list[BackupOutcome] = []
        for index, backup in enumerate(backups):
            ctx.check_cancelled()
            ctx.progress(index / len(backups), f"backup {index + 1} of {len(backups)}")
            sum_file = sums.setdefault(backup.path.parent, ChecksumFile.load(backup.path.parent))
            outcome = _check_backup(state, backup, sum_file, index < options.verify_latest, now)
            _log_outcome(ctx, outcome)
            outcomes.append(outcome)
    failures += [f"{o.backup.name}: {o.reason}" for o in outcomes if o.status == "FAIL"]
    _save_checksums(ctx, sums, state)
    return _result(ctx, options, folders, outcomes, failures, vault_failed, state, now, backups)


def _save_checksums(ctx: JobContext, sums: dict[Path, ChecksumFile], state: _Run) -> None:
    for folder, sum_file in sums.items():
        for name in list(sum_file.entries):
            # A pruned backup leaves the list, or `sha256sum -c` would fail on it.
            if BACKUP_NAME.match(name) and not (folder / name).exists():
                sum_file.forget(name)
        if sum_file.changed:
            try:
                sum_file.save(before_replace=ctx.check_fence)  # another member's newer run wins
                ctx.log.info("checksums.saved", path=str(sum_file.path), entries=len(sum_file.entries))
            except OSError as exc:
                state.warnings.append(f"cannot update {sum_file.path}: {exc.strerror or exc}")
                ctx.log.warning("checksums.not_saved", path=str(sum_file.path), error=str(exc))


def _result(
    ctx: JobContext,
    options: BackupCheckOptions,
    folders: list[Path],
    outcomes: list[BackupOutcome],
    failures: list[str],
    vault_failed: bool,
    state: _Run,
    now: float,
    backups: list[BackupFile],
) -> JobResult:
    checked = [o for o in outcomes if o.status != "SKIPPED"]
    # Fully verified: the full check passed and nothing is uncertain (a WARN is not).
    verified = [o for o in outcomes if o.status == "OK" and o.check == "full"]
    incomplete = [o for o in outcomes if o.missing_ids or o.older_ids]
    warnings = list(state.warnings) + [f"{o.backup.name}: {o.reason}" for o in outcomes if o.status == "WARN"]
    newest_age = (now - backups[0].name_timestamp) / DAY if backups else None
    if not backups:
        warnings.append(f"no backups found in {', '.join(str(f) for f in folders)}")
    elif newest_age is not None and newest_age > options.max_age_days:
        warnings.append(f"newest backup is {newest_age:.1f} days old (limit {options.max_age_days:g})")
    metrics: dict[str, float] = {
        "backups_found": len(backups),
        "backups_verified": len(verified),
        "backups_hashed": len(checked),
        "backups_failed": sum(o.status == "FAIL" for o in outcomes),
        "backups_incomplete": len(incomplete),
        "entries_missing_from_backups": sum(len(o.missing_ids) + len(o.older_ids) for o in incomplete),
        "entries_maybe_imported_after_backups": sum(len(o.maybe_imported_ids) for o in outcomes),
        "vault_problems": int(vault_failed),
        "bytes_hashed": state.bytes_hashed,
    }
    if newest_age is not None:
        metrics["newest_backup_age_days"] = round(newest_age, 2)
    details = {
        "backup_dirs": [str(f) for f in folders],
        "vault_entries": len(state.live) if state.live is not None else None,
        "backups": [
            {
                "file": o.backup.name,
                "folder": str(o.backup.path.parent),
                "status": o.status,
                "check": o.check,
                "reason": o.reason,
                "missing_entries": len(o.missing_ids),
                "older_entries": len(o.older_ids),
                "entry_id_hashes": [ctx.hash_entry_id(i) for i in (o.missing_ids + o.older_ids)[:MAX_LISTED_IDS]],
                "maybe_imported_entries": len(o.maybe_imported_ids),
                "maybe_imported_id_hashes": [ctx.hash_entry_id(i) for i in o.maybe_imported_ids[:MAX_LISTED_IDS]],
            }
            for o in outcomes
        ],
        "problems": failures,
        "warnings": warnings,
    }
    counts = _counts(outcomes)
    if failures:
        summary = f"{len(failures)} problem(s): {failures[0]}" + (
            "" if len(failures) == 1 else f" (+{len(failures) - 1} more)"
        )
        return JobResult(Status.FAIL, f"{summary}; {counts}", details, metrics)
    if warnings:
        return JobResult(Status.WARN, f"{warnings[-1]}; {counts}", details, metrics)
    return JobResult(Status.OK, counts, details, metrics)


def _counts(outcomes: list[BackupOutcome]) -> str:
    """``2 of 4 backups OK (1 fully verified); 1 WARN (3 entries possibly imported after it); 1 FAIL (63 entries
    missing)``: a backup with anything uncertain or missing is never counted OK."""
    checked = [o for o in outcomes if o.status != "SKIPPED"]
    ok = sum(o.status == "OK" for o in checked)
    verified = sum(o.status == "OK" and o.check == "full" for o in checked)
    text = f"{ok} of {len(checked)} backups OK ({verified} fully verified)"
    warned = [o for o in checked if o.status == "WARN"]
    if warned:
        maybe = sum(len(o.maybe_imported_ids) for o in warned)
        text += f"; {len(warned)} WARN ({maybe} entries possibly imported after the backup)"
    failed = [o for o in checked if o.status == "FAIL"]
    if failed:
        missing = sum(len(o.missing_ids) + len(o.older_ids) for o in failed)
        text += f"; {len(failed)} FAIL ({missing} entries missing)"
    return text
