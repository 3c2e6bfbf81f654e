"""A seeded app home for the doctor and bundle tests: vault, keys, backups, logs, history.

Websites and usernames of the vault also appear in the seeded app log (the app
logs them in clear text), so the bundle's redaction is tested on real lines.
Every secret carries :data:`tests.support.appfixtures.CANARY`.
"""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time
import uuid
from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pmjobsd.core.context import Status
from pmjobsd.core.history import RunHistory
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.settings import load_settings
from pmjobsd.diagnostics.doctor import DoctorEnv
from tests.support.appfixtures import (
    CANARY,
    DAY,
    AppProcess,
    SeedEntry,
    canary_entry,
    create_backup,
    create_vault,
    write_key_files,
)
from tests.support.daemon import AppHome, all_builtins_disabled
from tests.support.helpers import app_paths

StatVfs = namedtuple("StatVfs", "f_bavail f_frsize f_blocks")
BANK_URL = f"https://{CANARY}-bank.example/login"
APP_LOG_LINES = (
    f"2026-11-28 09:00:00,123 - INFO - Added new password for {CANARY}-site-1.example in category General",
    f"2026-11-28 09:01:00,001 - INFO - Updated password for {CANARY.upper()}-SITE-2.EXAMPLE (ID: 2)",
    f"2026-11-28 09:02:00,002 - WARNING - Failed to decrypt entry for site {CANARY}-site-1.example: bad token",
    f"2026-11-28 09:03:00,003 - INFO - Copied username {CANARY}-user-3@example.org to the clipboard",
    f"2026-11-28 09:04:00,004 - INFO - Opened {CANARY}-bank.example and {BANK_URL}",
    f"2026-11-28 09:05:00,005 - INFO - Sent a report to helper.{CANARY}@mail.example via https://hooks.example/{CANARY}-token",
    "2026-11-28 09:06:00,006 - INFO - Bulk delete: removed entry 3",
    "2026-11-28 09:07:00,007 - INFO - Also fine: nothing secret on this line",
)


def seed_home(home: AppHome, *, settings: dict | None = None) -> DoctorEnv:
    """Vault (4 canary entries), key files, a backup, breach cache, app log, jobs.log (+ archive), history."""
    paths = app_paths(home.root)
    now = int(time.time())
    entries = [canary_entry(n, now=now) for n in (1, 2, 3)]
    bank = canary_entry(4, now=now)
    bank.website = BANK_URL
    create_vault(paths.vault_path, entries + [bank])
    write_key_files(paths.data_dir)
    for key in paths.key_files:
        if key.exists():
            key.chmod(0o600)
    paths.vault_path.chmod(0o600)
    create_backup(paths.backups_dir, paths.vault_path).chmod(0o600)
    paths.backups_dir.chmod(0o700)
    paths.breach_cache_path.write_text(json.dumps({"ABCDE": [[f"{CANARY}-breach", 3]]}))
    logs = paths.app_log_path.parent
    logs.mkdir(mode=0o700, exist_ok=True)
    paths.app_log_path.write_text("\n".join(APP_LOG_LINES) + "\n")
    job_line = {
        "ts": "2026-11-28T09:00:00.000+00:00",
        "level": "INFO",
        "component": "job",
        "event": "job.succeeded",
        "job": "log_rotation",
        "note": f"mail {CANARY}-user-1@example.org",
    }
    paths.jobs_log_path.write_text(json.dumps(job_line) + "\n")
    paths.jobs_log_path.chmod(0o600)
    archive = paths.jobs_log_path.with_name("jobs.log.20261120-033000.gz")
    with gzip.open(archive, "wt") as handle:
        handle.write(json.dumps({**job_line, "event": "job.failed", "ts": "2026-11-20T03:30:00.000+00:00"}) + "\n")
    archive.chmod(0o600)
    data = settings if settings is not None else default_settings()
    home.settings_path.write_text(json.dumps(data, indent=2))
    home.settings_path.chmod(0o600)
    return make_env(home)


def leave_wal_without_shm(vault: Path, entry: SeedEntry) -> None:
    """Leave ``vault`` as a crashed app can: ``entry`` committed only in a -wal, and no -shm.

    Such a vault is read from a private copy of the vault and its -wal.
    """
    with AppProcess(vault) as app:
        app.add([entry])
        main, wal = vault.read_bytes(), Path(f"{vault}-wal").read_bytes()
        app.close()  # checkpoints and removes -wal / -shm
    vault.write_bytes(main)  # the main file as it was, without the checkpoint
    Path(f"{vault}-wal").write_bytes(wal)
    Path(f"{vault}-wal").chmod(0o600)
    assert not Path(f"{vault}-shm").exists()


def default_settings() -> dict:
    return {
        "theme": "dark",
        "browser_bridge": {"enabled": False, "host": "127.0.0.1", "port": 43110},
        "jobs": {
            "timezone": "UTC",
            "alerts": {
                "targets": [f"json://127.0.0.1:8080/hook?token={CANARY}token"],
                "escalation_targets": [f"mailto://{CANARY}:pw@mail.example"],
                "webhook_secret": f"{CANARY}-secret",
            },
            "definitions": all_builtins_disabled(),
        },
    }


def make_env(home: AppHome, **kw) -> DoctorEnv:
    paths = app_paths(home.root)
    return DoctorEnv(paths, load_settings(paths.settings_path), **kw)


def record_run(home: AppHome, job: str, status: Status, summary: str, *, age_days: float = 0.0) -> str:
    """Write one finished run into the history (as the runner does)."""
    run_id = uuid.uuid4().hex
    started = time.time() - age_days * DAY
    record = RunRecord(run_id=run_id, job=job, attempt=1, trigger="schedule", slot=None, started_at=started)
    with RunHistory(app_paths(home.root).history_path) as history:
        history.record_start(record)
        record.status, record.finished_at, record.summary = status, started + 1.5, summary
        history.record_finish(record)
    return run_id


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, str, str]] = {}

    def do_GET(self) -> None:
        code, content_type, body = self.routes.get(self.path, (404, "text/plain", "not found"))
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def local_server(routes: dict[str, tuple[int, str, str]]) -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 answering ``routes`` (path -> code, type, body); yields its base URL."""
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def environment(home: AppHome, monkeypatch) -> None:
    """Point HOME and XDG_RUNTIME_DIR of this process at the temporary home (service paths, control socket)."""
    monkeypatch.setenv("HOME", str(home.root))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home.runtime_dir))
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "SUDO_USER"):
        monkeypatch.delenv(name, raising=False)
