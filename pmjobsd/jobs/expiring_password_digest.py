"""``expiring_password_digest``: passwords already expired or expiring soon, nearest first.

Reads ``expiry_date`` (unix seconds) from the vault read-only
(:func:`pmjobsd.app.vault.read_vault`).  WARN when any entry is expired or due
within ``urgent_days``; OK otherwise.  A desktop notice summarises them: its
``body`` carries counts only; ``private_body`` names websites (shown only by
local desktop sinks) and only while ``show_sites`` is true.  Summary, details,
metrics and log lines carry counts and ``entry_id_hash`` values only.
"""

from __future__ import annotations

import time

from pmjobsd.api import JobContext, JobResult, Notice, Status, validate
from pmjobsd.app.vault import ExpiryEntry, VaultError, entries_expiring_by, read_vault
from pmjobsd.jobs.expiring_password_digest_spec import DigestOptions

DAY = 86400
MAX_DETAIL_ENTRIES = 50
clock = time.time  # injectable wall clock (tests replace it; libfaketime hangs Python)


def _options(ctx: JobContext) -> DigestOptions:
    options = ctx.options
    return options if isinstance(options, DigestOptions) else validate(DigestOptions, options or {})


def _when(seconds_left: float) -> str:
    days = abs(seconds_left) / DAY
    span = "less than a day" if days < 1 else f"{days:.0f} day{'s' if round(days) != 1 else ''}"
    return f"expired {span} ago" if seconds_left <= 0 else f"expires in {span}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _private_body(entries: list[ExpiryEntry], now: float, limit: int) -> str:
    lines = [f"{entry.website or '(no website)'} — {_when(entry.expiry_date - now)}" for entry in entries[:limit]]
    if len(entries) > limit:
        lines.append(f"… and {len(entries) - limit} more")
    return "\n".join(lines)


def run(ctx: JobContext) -> JobResult:
    options = _options(ctx)
    now = clock()
    try:
        result = read_vault(
            ctx.paths.vault_path,
            lambda conn: entries_expiring_by(conn, int(now + options.window_days * DAY)),
            lock_timeout=min(options.lock_timeout, max(ctx.time_left(), 0.1)),
            scratch_dir=ctx.state_dir,
            check_cancelled=ctx.check_cancelled,
        )
    except VaultError as exc:
        ctx.log.warning("vault.unreadable", reason=exc.reason, error=str(exc))
        status = Status.WARN if exc.reason == "missing" else Status.FAIL
        return JobResult(status, str(exc), {"vault_error": exc.reason}, {"vault_readable": 0})

    entries = result.value
    expired = [e for e in entries if e.expiry_date <= now]
    expiring = [e for e in entries if e.expiry_date > now]
    urgent = [e for e in expiring if e.expiry_date - now <= options.urgent_days * DAY]
    ctx.log.info(
        "vault.read", access=result.access, attempts=result.attempts, expired=len(expired), expiring=len(expiring)
    )
    for entry in entries[:MAX_DETAIL_ENTRIES]:
        ctx.log.info(
            "digest.entry",
            entry_id_hash=ctx.hash_entry_id(entry.id),
            days_left=round((entry.expiry_date - now) / DAY, 1),
        )

    summary = (
        f"{_plural(len(expired), 'password')} expired, {len(expiring)} expiring within "
        f"{options.window_days} days ({len(urgent)} within {options.urgent_days})"
    )
    if entries:
        nearest = entries[0].expiry_date - now
        ctx.notify(
            Notice(
                title="Passwords expired" if expired else "Passwords expiring soon",
                body=f"{_plural(len(expired), 'password')} expired, {len(expiring)} expiring within "
                f"{options.window_days} days (nearest: {_when(nearest)}).",
                private_body=_private_body(entries, now, options.max_sites_listed) if options.show_sites else None,
                urgency="critical" if expired else ("normal" if urgent else "low"),
            )
        )
    details = {
        "expired": len(expired),
        "expiring": len(expiring),
        "urgent": len(urgent),
        "window_days": options.window_days,
        "entries": [  # nearest first
            {"entry_id_hash": ctx.hash_entry_id(e.id), "days_left": round((e.expiry_date - now) / DAY, 1)}
            for e in entries[:MAX_DETAIL_ENTRIES]
        ],
    }
    metrics = {"expired": len(expired), "expiring": len(expiring), "urgent": len(urgent), "vault_readable": 1}
    status = Status.WARN if expired or urgent else Status.OK
    return JobResult(status, summary, details, metrics)
