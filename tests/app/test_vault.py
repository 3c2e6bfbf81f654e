"""pmjobsd.app.vault against real vaults: the app closed, running, writing, locking; bad files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pmjobsd.app import vault as vaultmod
from pmjobsd.app.vault import VaultError, entry_stamps, integrity_problems, read_vault
from tests.support import REPO
from tests.support.appfixtures import AppProcess, canary_entry, create_vault, write_transaction_held

ROOT = REPO


def _folder_state(folder: Path) -> dict[str, str]:
    """Name -> sha256 of every file in ``folder``: proves nothing was created or changed."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _ids(path: Path, **kw) -> tuple[set[int], str]:
    result = read_vault(path, entry_stamps, **kw)
    return set(result.value), result.access


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    return create_vault(tmp_path / "data" / "passwords.db", [canary_entry(i) for i in range(3)])


def test_app_closed_wal_vault_is_read_without_creating_files(vault: Path):
    conn = sqlite3.connect(vault)
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert mode == "wal"
    before = _folder_state(vault.parent)
    assert set(before) == {"passwords.db"}  # the app exited: no -wal / -shm
    ids, access = _ids(vault)
    assert ids == {1, 2, 3} and access == "snapshot"
    assert _folder_state(vault.parent) == before


def test_app_running_commits_in_wal_are_seen_and_nothing_changes(vault: Path):
    with AppProcess(vault) as app:
        new_ids = app.add([canary_entry(10), canary_entry(11)])
        before = _folder_state(vault.parent)
        assert {"passwords.db-wal", "passwords.db-shm"} <= set(before)
        ids, access = _ids(vault)
        assert access == "snapshot"
        assert ids == {1, 2, 3, *new_ids}  # the new rows exist only in the -wal file
        assert _folder_state(vault.parent) == before  # not even a read mark in the -shm
        app.close()
    assert set(_folder_state(vault.parent)) == {"passwords.db"}  # the app still cleans up after us


def test_open_write_transaction_does_not_block_and_is_not_seen(vault: Path):
    with write_transaction_held(vault) as app:
        ids, access = _ids(vault, lock_timeout=5)
        assert ids == {1, 2, 3} and access == "snapshot"
        problems = read_vault(vault, integrity_problems).value
        assert problems == []
        app.commit()
        assert len(_ids(vault)[0]) == 4


def test_wal_without_shm_is_read_from_a_private_copy(vault: Path, tmp_path: Path):
    with AppProcess(vault) as app:
        app.add([canary_entry(20)])
        # Freeze the files as a crashed app could leave them, minus the -shm.
        frozen = tmp_path / "frozen"
        frozen.mkdir()
        shutil.copy(vault, frozen / vault.name)
        shutil.copy(str(vault) + "-wal", frozen / (vault.name + "-wal"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = _folder_state(frozen)
    ids, access = _ids(frozen / vault.name, scratch_dir=scratch)
    assert access == "snapshot" and ids == {1, 2, 3, 4}
    assert _folder_state(frozen) == before
    assert list(scratch.iterdir()) == []  # the private copy is removed


def test_leftover_wal_and_shm_without_the_app(vault: Path, tmp_path: Path):
    app = AppProcess(vault)
    app.add([canary_entry(30)])
    app.proc.kill()  # a crash: -wal and -shm stay behind
    app.proc.wait()
    before = _folder_state(vault.parent)
    ids, access = _ids(vault)
    assert access == "snapshot" and 4 in ids
    assert _folder_state(vault.parent) == before


def test_exclusively_locked_vault_is_still_read_from_its_committed_state(vault: Path):
    """A private copy needs no lock: the app's exclusive lock and open transaction do not block it."""
    with AppProcess(vault) as app:
        app.lock_exclusive()
        assert _ids(vault, lock_timeout=2) == ({1, 2, 3}, "snapshot")


def test_a_vault_that_never_holds_still_gives_a_clear_error_after_the_timeout(vault: Path):
    stop = threading.Event()

    def keep_writing():  # a writer that touches the file faster than a copy can be checked
        while not stop.is_set():
            os.utime(vault)
            time.sleep(0.002)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    sleeps: list[float] = []
    try:
        with pytest.raises(VaultError) as caught:
            read_vault(vault, entry_stamps, lock_timeout=0.5, sleep=lambda s: (sleeps.append(s), time.sleep(s)))
    finally:
        stop.set()
        writer.join()
    assert caught.value.reason == "locked"
    assert str(vault) in str(caught.value) and "no consistent read" in str(caught.value)
    assert len(sleeps) >= 2  # it retried before giving up


def test_a_vault_written_moments_ago_is_copied_again_later(vault: Path):
    """Without a -wal the copy counts only if the file's mtime is older than one clock tick."""
    # Just written: a write in the same coarse tick would not change the mtime.  The stamp is set
    # 0.3 s ahead, so that the first attempt sees "moments ago" however late a loaded machine runs it.
    ahead = time.time_ns() + 300_000_000
    os.utime(vault, ns=(ahead, ahead))
    result = read_vault(vault, entry_stamps)
    assert result.attempts >= 2 and set(result.value) == {1, 2, 3}


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "missing"),
        (b"", "not_a_database"),
        (b"this is not sqlite" * 20, "not_a_database"),
    ],
)
def test_missing_and_not_a_database(tmp_path: Path, content, reason):
    path = tmp_path / "passwords.db"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VaultError) as caught:
        read_vault(path, entry_stamps)
    assert caught.value.reason == reason and str(path) in str(caught.value)


def test_other_database_and_unknown_schema(tmp_path: Path, vault: Path):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE notes (x)")
    with pytest.raises(VaultError) as caught:
        read_vault(other, entry_stamps)
    assert caught.value.reason == "not_a_vault"

    conn = sqlite3.connect(vault)
    conn.execute("UPDATE metadata SET value = '7' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(VaultError) as caught:
        read_vault(vault, entry_stamps)
    assert caught.value.reason == "unknown_schema" and "schema_version 7" in str(caught.value)


def _grow_categories(vault: Path) -> tuple[int, range]:
    """Add 300 categories; return the page size and the pages they took (all past the schema,
    the passwords and the metadata: 1-based page numbers)."""
    conn = sqlite3.connect(vault)
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    (before,) = conn.execute("PRAGMA page_count").fetchone()
    conn.executemany("INSERT INTO categories (name) VALUES (?)", [(f"cat{i}" * 50,) for i in range(300)])
    conn.commit()
    (after,) = conn.execute("PRAGMA page_count").fetchone()
    conn.close()
    return page_size, range(before + 1, after + 1)


def _wreck(vault: Path, offsets: list[int], length: int = 52) -> None:
    data = bytearray(vault.read_bytes())
    for offset in offsets:
        data[offset : offset + length] = b"\xff" * length
    vault.write_bytes(bytes(data))


def test_integrity_problems_on_damaged_data_pages(vault: Path):
    """Damage only the pages the categories took: the schema still reads, so the check runs and reports."""
    page_size, pages = _grow_categories(vault)
    _wreck(vault, [(n - 1) * page_size for n in pages])  # every new page's b-tree header
    problems = read_vault(vault, integrity_problems).value
    assert len(problems) == 1 and problems[0].startswith("*** in database main ***\n"), problems
    assert f"Page {pages[-1]}: btreeInitPage() returns error code 11" in problems[0]


def test_a_damaged_schema_page_is_a_corrupt_vault(vault: Path):
    """Damage sqlite_master's b-tree header (page 1, after the 100-byte file header): nothing reads."""
    _grow_categories(vault)
    _wreck(vault, [100])
    with pytest.raises(VaultError) as caught:
        read_vault(vault, integrity_problems)
    assert caught.value.reason == "corrupt" and "database disk image is malformed" in str(caught.value)


def test_fixture_schema_matches_the_real_app(tmp_path: Path):
    """The builders make the same schema as the app's own init_db() (when the app is installed)."""
    pytest.importorskip("secure_password_manager.utils.database")
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    code = "from secure_password_manager.utils import database; database.init_db(); database.close_connection()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=60)
    app_db = tmp_path / "data/secure-password-manager/passwords.db"
    ours = create_vault(tmp_path / "ours/passwords.db")

    def schema(path):
        conn = sqlite3.connect(path)
        rows = sorted(conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
        meta = conn.execute("SELECT * FROM metadata").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()
        conn.close()
        return rows, meta, mode

    assert schema(ours) == schema(app_db)
    assert read_vault(app_db, entry_stamps).schema_version == 1


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to nobody")
def test_read_only_folder_as_another_user(tmp_path: Path):
    """A read-only folder (as user nobody): both with the app running and with it closed."""
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="pmjobsd-ro-"))
    code = Path(tempfile.mkdtemp(dir="/tmp", prefix="pmjobsd-code-"))
    try:
        folder.chmod(0o755)
        db = create_vault(folder / "passwords.db", [canary_entry(1)])
        db.chmod(0o644)
        # A world-readable copy of the modules: the checkout may sit under a 0700 folder.
        (code / "pmjobsd/app").mkdir(parents=True)
        (code / "pmjobsd/__init__.py").write_text("")
        for name in ("__init__.py", "vault.py", "snapshot.py"):
            shutil.copy(ROOT / "pmjobsd/app" / name, code / "pmjobsd/app" / name)
        for item in [code, *code.rglob("*")]:
            item.chmod(0o755 if item.is_dir() else 0o644)
        script = textwrap.dedent(
            f"""
            import json, sys
            sys.path.insert(0, {str(code)!r})
            from pmjobsd.app import vault
            r = vault.read_vault(vault.Path({str(db)!r}), vault.entry_stamps, lock_timeout=3)
            print(json.dumps({{"ids": sorted(r.value), "access": r.access}}))
            """
        )
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script]
        closed = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout)
        assert closed == {"ids": [1], "access": "snapshot"}
        with AppProcess(db) as app:
            app.add([canary_entry(2)])
            before = _folder_state(folder)
            running = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout)
            assert running == {"ids": [1, 2], "access": "snapshot"}
            assert _folder_state(folder) == before
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(code, ignore_errors=True)


def test_module_has_no_write_paths():
    """A guard against regressions: every URI the module builds is read-only."""
    source = Path(vaultmod.__file__).read_text()
    assert "mode=rw" not in source and "mode=rwc" not in source
