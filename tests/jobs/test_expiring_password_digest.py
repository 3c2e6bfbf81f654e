"""expiring_password_digest on real vaults: counts, order, notices, privacy, bad vaults."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from pmjobsd.api import ValidationError, validate
from pmjobsd.core.context import Notice, Status
from pmjobsd.core.registry import job_function, load_builtin
from pmjobsd.jobs import expiring_password_digest as digest
from pmjobsd.jobs.expiring_password_digest import DigestOptions
from tests.support.appfixtures import CANARY, AppProcess, assert_no_canary, canary_entry, create_vault
from tests.support.helpers import app_paths, make_context

NOW = int(time.time())


def _vault(home: Path, entries) -> Path:
    return create_vault(app_paths(home).vault_path, entries)


def _run(home: Path, options: DigestOptions | None = None):
    notices: list[Notice] = []
    ctx = make_context(home, "expiring_password_digest", options or DigestOptions(), notices=notices)
    return digest.run(ctx), notices, ctx


def _mixed_vault(home: Path) -> Path:
    return _vault(
        home,
        [
            canary_entry(1, now=NOW, expires_in_days=10),  # id 1: expiring, not urgent
            canary_entry(2, now=NOW, expires_in_days=-2),  # id 2: expired
            canary_entry(3, now=NOW, expires_in_days=60),  # id 3: beyond the window
            canary_entry(4, now=NOW),  # id 4: never expires
            canary_entry(5, now=NOW, expires_in_days=3),  # id 5: urgent
        ],
    )


def test_counts_order_and_notice(home: Path, jobs_log: Path):
    _mixed_vault(home)
    result, notices, ctx = _run(home)
    assert result.status is Status.WARN
    assert dict(result.metrics) == {"expired": 1, "expiring": 2, "urgent": 1, "vault_readable": 1}
    assert [e["entry_id_hash"] for e in result.details["entries"]] == [ctx.hash_entry_id(i) for i in (2, 5, 1)]
    assert result.summary == "1 password expired, 2 expiring within 14 days (1 within 7)"
    (notice,) = notices
    assert notice.urgency == "critical"
    assert notice.body.startswith("1 password expired, 2 expiring within 14 days")
    # Only the private body names websites, nearest first.
    lines = notice.private_body.splitlines()
    assert [line.split(" — ")[0] for line in lines] == [f"{CANARY}-site-{i}.example" for i in (2, 5, 1)]
    assert "expired 2 days ago" in lines[0] and "expires in 3 days" in lines[1]
    assert_no_canary(result, notice.title, notice.body, jobs_log.read_text())
    assert ctx.hash_entry_id(2) in jobs_log.read_text()


def test_show_sites_false_keeps_websites_out_of_the_notice(home: Path, jobs_log: Path):
    _mixed_vault(home)
    result, notices, _ = _run(home, DigestOptions(show_sites=False))
    assert notices[0].private_body is None
    assert_no_canary(result, notices, jobs_log.read_text())


def test_nothing_due_soon_is_ok(home: Path):
    _vault(home, [canary_entry(1, now=NOW, expires_in_days=10), canary_entry(2, now=NOW, expires_in_days=90)])
    result, notices, _ = _run(home)
    assert result.status is Status.OK
    assert result.metrics["expiring"] == 1 and notices[0].urgency == "low"
    _vault(home / "other", [canary_entry(1, now=NOW)])
    result, notices, _ = _run(home / "other")
    assert result.status is Status.OK and notices == [] and result.metrics["expired"] == 0


def test_window_and_urgency_options(home: Path):
    _mixed_vault(home)
    result, _, _ = _run(home, DigestOptions(window_days=90, urgent_days=2))
    assert result.metrics["expiring"] == 3 and result.metrics["urgent"] == 0
    assert result.status is Status.WARN  # one is expired


def test_reads_wal_commits_while_the_app_holds_a_write_transaction(home: Path, jobs_log: Path):
    vault = _vault(home, [canary_entry(1, now=NOW, expires_in_days=30)])
    with AppProcess(vault) as app:
        app.add([canary_entry(2, now=NOW, expires_in_days=1)])  # committed, only in the -wal
        app.begin_write(canary_entry(3, now=NOW, expires_in_days=-5))  # uncommitted
        files_before = sorted(vault.parent.glob("passwords.db*"))
        result, notices, ctx = _run(home)
        assert sorted(vault.parent.glob("passwords.db*")) == files_before
        app.rollback()
    assert result.status is Status.WARN
    assert result.metrics["expired"] == 0 and result.metrics["urgent"] == 1
    assert result.details["entries"][0]["entry_id_hash"] == ctx.hash_entry_id(2)
    assert_no_canary(result, notices[0].body, jobs_log.read_text())


def test_missing_vault_is_a_warning(home: Path):
    result, notices, _ = _run(home)
    assert result.status is Status.WARN and "no such file" in result.summary and notices == []


@pytest.mark.parametrize("damage", ["not_a_database", "unknown_schema"])
def test_unreadable_vaults_fail_with_a_clear_summary(home: Path, damage: str):
    import sqlite3

    vault = _vault(home, [canary_entry(1, now=NOW, expires_in_days=1)])
    if damage == "not_a_database":
        vault.write_bytes(b"garbage " * 100)
    else:
        conn = sqlite3.connect(vault)
        conn.execute("UPDATE metadata SET value = '42' WHERE key = 'schema_version'")
        conn.commit()
        conn.close()
    result, _, _ = _run(home)
    assert result.status is Status.FAIL and str(vault) in result.summary
    assert result.details == {"vault_error": damage}


def test_vault_never_consistent_fails_after_the_lock_timeout(home: Path, jobs_log: Path):
    # An exclusive lock no longer blocks (the vault is read from a private copy); a file that
    # changes under every copy does.
    vault = _vault(home, [canary_entry(1, now=NOW, expires_in_days=1)])
    stop = threading.Event()

    def keep_writing():
        while not stop.is_set():
            os.utime(vault)
            time.sleep(0.002)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        result, _, _ = _run(home, DigestOptions(lock_timeout=0.5))
    finally:
        stop.set()
        writer.join()
    assert result.status is Status.FAIL and "no consistent read" in result.summary
    assert result.details == {"vault_error": "locked"}
    assert_no_canary(result, jobs_log.read_text())


def test_registered_with_its_defaults():
    spec = load_builtin("expiring_password_digest")
    assert job_function(spec).load() is digest.run and spec.defaults["cron"] == "0 9 * * *"
    assert spec.options_model is DigestOptions
    assert validate(DigestOptions, {"window_days": 30}).show_sites is True
    with pytest.raises(ValidationError):
        validate(DigestOptions, {"window_days": 0})
