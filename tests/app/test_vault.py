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
    assert ids == {1, 2, 3} and access == "immutable"
    assert _folder_state(vault.parent) == before


def test_app_running_commits_in_wal_are_seen_and_nothing_changes(vault: Path):
    with AppProcess(vault) as app:
        new_ids = app.add([canary_entry(10), canary_entry(11)])
        before = _folder_state(vault.parent)
        assert {"passwords.db-wal", "passwords.db-shm"} <= set(before)
        ids, access = _ids(vault)
        assert access == "shared"
        assert ids == {1, 2, 3, *new_ids}  # the new rows exist only in the -wal file
        assert _folder_state(vault.parent) == before  # not even a read mark in the -shm
        app.close()
    assert set(_folder_state(vault.parent)) == {"passwords.db"}  # the app still cleans up after us


def test_open_write_transaction_does_not_block_and_is_not_seen(vault: Path):
    with write_transaction_held(vault) as app:
        ids, access = _ids(vault, lock_timeout=5)
        assert ids == {1, 2, 3} and access == "shared"
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
    assert access == "private-copy" and ids == {1, 2, 3, 4}
    assert _folder_state(frozen) == before
    assert list(scratch.iterdir()) == []  # the private copy is removed


def test_leftover_wal_and_shm_without_the_app(vault: Path, tmp_path: Path):
    app = AppProcess(vault)
    app.add([canary_entry(30)])
    app.proc.kill()  # a crash: -wal and -shm stay behind
    app.proc.wait()
    before = _folder_state(vault.parent)
    ids, access = _ids(vault)
    assert access == "shared" and 4 in ids
    assert _folder_state(vault.parent) == before


def test_locked_vault_gives_a_clear_error_after_the_timeout(vault: Path):
    with AppProcess(vault) as app:
        app.lock_exclusive()
        sleeps: list[float] = []
        with pytest.raises(VaultError) as caught:
            read_vault(vault, entry_stamps, lock_timeout=0.5, sleep=sleeps.append)
        assert caught.value.reason == "locked"
        assert str(vault) in str(caught.value) and "locked" in str(caught.value)
        assert len(sleeps) >= 1  # it retried before giving up


def test_immutable_read_is_retried_when_the_file_changes_underneath(vault: Path):
    calls = []

    def read(conn):
        calls.append(1)
        if len(calls) == 1:  # the app checkpoints while we read
            stat = vault.stat()
            os.utime(vault, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        return entry_stamps(conn)

    result = read_vault(vault, read, sleep=lambda s: None)
    assert result.attempts == 2 and set(result.value) == {1, 2, 3}


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


def test_integrity_problems_on_damaged_file(vault: Path):
    conn = sqlite3.connect(vault)
    conn.executemany("INSERT INTO categories (name) VALUES (?)", [(f"cat{i}" * 50,) for i in range(300)])
    conn.commit()
    conn.close()
    data = bytearray(vault.read_bytes())
    page = 4096
    for offset in range(3 * page, len(data), page):  # wreck every page past the schema
        data[offset + 8 : offset + 60] = b"\xff" * 52
    vault.write_bytes(bytes(data))
    try:
        problems = read_vault(vault, integrity_problems).value
    except VaultError as exc:
        assert exc.reason == "corrupt"
    else:
        assert problems and "ok" not in problems


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
    # nobody cannot load vault.py from a checkout under a 0700 folder: give it a copy it can reach.
    code = Path(tempfile.mkdtemp(dir="/tmp", prefix="pmjobsd-code-"))
    try:
        folder.chmod(0o755)
        code.chmod(0o755)
        vault_copy = code / "vault.py"
        shutil.copyfile(ROOT / "pmjobsd/app/vault.py", vault_copy)
        vault_copy.chmod(0o644)
        db = create_vault(folder / "passwords.db", [canary_entry(1)])
        db.chmod(0o644)
        script = textwrap.dedent(
            f"""
            import importlib.util, json, sys
            spec = importlib.util.spec_from_file_location("vault", {str(vault_copy)!r})
            vault = sys.modules["vault"] = importlib.util.module_from_spec(spec); spec.loader.exec_module(vault)
            r = vault.read_vault(vault.Path({str(db)!r}), vault.entry_stamps, lock_timeout=3)
            print(json.dumps({{"ids": sorted(r.value), "access": r.access}}))
            """
        )
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script]
        closed = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout)
        assert closed == {"ids": [1], "access": "immutable"}
        with AppProcess(db) as app:
            app.add([canary_entry(2)])
            before = _folder_state(folder)
            running = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout)
            assert running == {"ids": [1, 2], "access": "shared"}
            assert _folder_state(folder) == before
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(code, ignore_errors=True)


def test_module_has_no_write_paths():
    """A guard against regressions: every URI the module builds is read-only."""
    source = Path(vaultmod.__file__).read_text()
    assert "mode=rw" not in source and "mode=rwc" not in source
