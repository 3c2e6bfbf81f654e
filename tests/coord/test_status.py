"""The coordination part of the status document and of ``config show``."""

from __future__ import annotations

import json
import time

from pmjobsd.coord.state import CoordinationState
from pmjobsd.core.history import RunHistory
from pmjobsd.core.settings import describe, load_settings
from pmjobsd.observe.status import DaemonState, build_status, exit_code, render_text

COORDINATION = {"url": "redis://u:canary-pw@127.0.0.1:6379/0", "group": "home-vault", "member": "laptop"}


def _loaded(tmp_path, coordination):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"jobs": {"coordination": coordination} if coordination else {}}))
    path.chmod(0o600)
    return load_settings(path, import_jobs=False)


def _document(tmp_path, coordination, state=None):
    with RunHistory(tmp_path / "history.db") as history:
        daemon = DaemonState(running=True, pid=1, version="x", started_at=time.time())
        snapshot = build_status(_loaded(tmp_path, coordination), history, daemon=daemon, coordination=state)
        return snapshot.to_json()


def test_an_unreachable_engine_is_in_the_document_the_table_and_the_exit_code(tmp_path):
    state = CoordinationState("home-vault", "laptop", "redis://u:<redacted>@127.0.0.1:6379/0")
    state.update(reachable=True)
    state.update(reachable=False, last_error="ConnectionError: refused", reconnect_at=time.time() + 2)
    state.count("claims_won", 3)
    document = _document(tmp_path, COORDINATION, state.snapshot())
    coordination = document["coordination"]
    assert (coordination["group"], coordination["member"], coordination["reachable"]) == ("home-vault", "laptop", False)
    assert coordination["claims_won"] == 3 and coordination["reconnect_at"] and coordination["since"]
    assert "canary-pw" not in json.dumps(document)
    assert document["status"] == "WARN" and exit_code(document) == 1
    assert "WARNING: coordination: group home-vault as laptop" in render_text(document)
    scopes = {job["name"]: job["scope"] for job in document["jobs"]}
    assert scopes["breach_cache_refresh"] == scopes["backup_integrity_check"] == "vault"
    assert scopes["log_rotation"] == "device"


def test_without_coordination_the_document_has_no_trace_of_it(tmp_path):
    document = _document(tmp_path, None)
    assert "coordination" not in document and not any("scope" in job for job in document["jobs"])
    assert "coordination" not in render_text(document)


def test_config_show_names_every_jobs_scope_and_redacts_the_password(tmp_path):
    shown = describe(_loaded(tmp_path, COORDINATION))
    assert shown["definitions"]["expiring_password_digest"]["scope"] == "vault"
    assert shown["definitions"]["log_purge"]["scope"] == "device"
    assert "canary-pw" not in json.dumps(shown)
