"""`pmjobsd logs bundle`: one zip to attach to a support request, with nothing secret inside.

Members (all text, all redacted by :class:`~pmjobsd.diagnostics.redaction.VaultRedactor`):

==============================  ==========================================================
``jobs/jobs.log`` (+ archives)  pmjobsd's log and its rotated archives (decompressed),
                                newest first up to ``jobs_log_max_bytes`` in total
``app/password_manager.log``    the app's log: its last ``app_log_max_bytes`` (from its newest
                                archives too, oldest line first, when it was rotated), with every
                                website and username the vault holds replaced by its
                                ``entry_id_hash`` tag and e-mail addresses masked — left
                                out (and said so in the manifest) when the vault cannot be
                                read, because then it cannot be redacted
``doctor.txt``, ``doctor.json`` the doctor report (offline checks)
``status.json``                 the status document
``history.json``                run history of the last ``days`` days
``settings.json``               the whole settings file, secret-bearing values ``"<redacted>"``
``platform.json``               OS, Python, package versions
``manifest.json``               SHA-256 and size of every other member, what was left out
==============================  ==========================================================

Never included, by construction (nothing reads them): the vault, key files,
backups and the breach cache.  The zip is written 0600, atomically.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from pmjobsd import __version__
from pmjobsd.app.vault import VaultError
from pmjobsd.core.history import RunHistory
from pmjobsd.core.privacy import EntryIdHasher, redact_settings
from pmjobsd.core.timestamps import utc_iso
from pmjobsd.diagnostics import doctor
from pmjobsd.diagnostics.redaction import VaultRedactor
from pmjobsd.jobs.logs.archives import list_archives
from pmjobsd.system.files import PRIVATE_FILE_MODE, atomic_writer

DEFAULT_HISTORY_DAYS = 7
APP_LOG_MAX_BYTES = 2 * 1024 * 1024
JOBS_LOG_MAX_BYTES = 16 * 1024 * 1024
NEVER_INCLUDED = ("the vault (passwords.db and its -wal/-shm)", "key files", "backups", "the breach cache")
_PACKAGES = (
    "pmjobsd",
    "secure-password-manager",
    "msgspec",
    "cronsim",
    "apprise",
    "requests",
    "python-json-logger",
    "python-daemon",
    "psutil",
    "systemd-python",
    "PyQt5",
)


@dataclass
class Bundle:
    """The written zip: its path, the manifest's members and what was left out and why."""

    path: Path
    members: list[dict[str, Any]] = field(default_factory=list)
    omitted: list[dict[str, str]] = field(default_factory=list)


def _tail(data: bytes, limit: int) -> tuple[bytes, bool]:
    """The last ``limit`` bytes of ``data``, starting at a line; (bytes, whether cut)."""
    if len(data) <= limit:
        return data, False
    cut = data[-limit:]
    newline = cut.find(b"\n")
    return (cut[newline + 1 :] if newline >= 0 else cut), True


def _read_tail(path: Path, limit: int) -> tuple[bytes, bool]:
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(0, size - limit - 1))  # one byte more: to know whether the cut fell on a line start
        data = handle.read()
    if size <= limit:
        return data, False
    newline = data.find(b"\n")
    return (data[newline + 1 :] if newline >= 0 else data[1:]), True


def _read_recent_log(live: Path, limit: int) -> tuple[bytes, bool, list[str]]:
    """The last ``limit`` bytes of whole lines of ``live`` and, before them, of its newest
    archives (gzipped or not): (bytes, whether cut, names of the archives used).

    Just after a rotation the live file holds a few lines; the hours before are in the archive."""
    data, cut = _read_tail(live, limit) if live.exists() else (b"", False)
    parts, used = [data], []
    for archive in reversed(list_archives(live)):  # newest first
        budget = limit - sum(map(len, parts))
        if cut or budget <= 0:
            cut = True
            break
        try:
            if archive.suffix == ".gz":
                with gzip.open(archive, "rb") as handle:
                    older, cut = _tail(handle.read(), budget)
            else:
                older, cut = _read_tail(archive, budget)
        except (OSError, EOFError):
            break  # unreadable: what is newer is still shown
        if older and not older.endswith(b"\n"):
            older += b"\n"  # never glue an archive's last line to the next file's first
            if len(older) > budget:
                older, cut = _tail(older, budget)
        parts.insert(0, older)
        used.append(archive.name)
    return b"".join(parts), cut, used


def _redact_object(value: Any, redactor: VaultRedactor) -> Any:
    """Apply the redactor to every string inside a JSON-ready object (keys too)."""
    if isinstance(value, dict):
        return {redactor.redact(str(k)): _redact_object(v, redactor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_object(item, redactor) for item in value]
    if isinstance(value, str):
        return redactor.redact(value)
    return value


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, default=str, sort_keys=False) + "\n").encode()


def platform_details(env: doctor.DoctorEnv) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "pmjobsd": __version__,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "sys_platform": env.platform,
        "packages": versions,
        "under_systemd": bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM")),
        "xdg_runtime_dir_set": bool(os.environ.get("XDG_RUNTIME_DIR")),
        "timezone": str(env.loaded.settings.zone()),
    }


class _Writer:
    """Collects members (name -> bytes) and their manifest rows."""

    def __init__(self) -> None:
        self.members: dict[str, bytes] = {}
        self.notes: dict[str, str] = {}

    def add(self, name: str, data: bytes, note: str = "") -> None:
        self.members[name] = data
        if note:
            self.notes[name] = note

    def manifest_rows(self) -> list[dict[str, Any]]:
        rows = []
        for name, data in self.members.items():
            row = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            if name in self.notes:
                row["note"] = self.notes[name]
            rows.append(row)
        return rows


def _add_jobs_logs(
    writer: _Writer, env: doctor.DoctorEnv, redactor: VaultRedactor, budget: int, omitted: list[dict[str, str]]
) -> None:
    live = env.paths.jobs_log_path
    files = ([live] if live.exists() else []) + list(reversed(list_archives(live)))  # newest first
    for path in files:
        name = "jobs/" + path.name.removesuffix(".gz")
        if budget <= 0:
            omitted.append({"name": name, "reason": "over the size cap of the jobs logs"})
            continue
        try:
            if path.suffix == ".gz":
                with gzip.open(path, "rb") as handle:
                    data, cut = _tail(handle.read(), budget)
            else:
                data, cut = _read_tail(path, budget)
        except (OSError, EOFError) as exc:
            omitted.append({"name": name, "reason": f"cannot read: {exc.__class__.__name__}"})
            continue
        budget -= len(data)
        lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
        text = "".join(redactor.redact(line) for line in lines)
        writer.add(name, text.encode(), "only the most recent part (size cap)" if cut else "")


def _app_redactor(env: doctor.DoctorEnv, hash_id: Callable[[object], str]) -> tuple[VaultRedactor | None, str]:
    try:
        return VaultRedactor.from_vault(
            env.paths.vault_path, hash_id, scratch_dir=env.paths.state_dir, lock_timeout=10.0
        ), ""
    except VaultError as exc:
        return None, exc.reason


def create_bundle(
    env: doctor.DoctorEnv,
    output: Path | None = None,
    *,
    days: int = DEFAULT_HISTORY_DAYS,
    app_log_max_bytes: int = APP_LOG_MAX_BYTES,
    jobs_log_max_bytes: int = JOBS_LOG_MAX_BYTES,
    now: datetime | None = None,
) -> Bundle:
    """Write the support bundle to ``output`` (a file, a folder, or None: the current folder); return it.

    Raises OSError (naming the path) when the zip cannot be written; nothing
    partial is left behind.
    """
    now = now or datetime.now(timezone.utc)
    target = _target_path(output, now)
    hash_id = EntryIdHasher.from_file(env.paths.id_key_path)
    vault_redactor, vault_problem = _app_redactor(env, hash_id)
    redactor = vault_redactor or VaultRedactor({}, hash_id)  # no vault terms known: still masks e-mails, ids, URLs
    writer = _Writer()
    omitted: list[dict[str, str]] = []

    _add_jobs_logs(writer, env, redactor, jobs_log_max_bytes, omitted)
    app_log = env.paths.app_log_path
    if app_log.exists():
        if vault_redactor is None:
            omitted.append(
                {
                    "name": "app/password_manager.log",
                    "reason": f"the vault could not be read ({vault_problem}), so the websites and usernames"
                    " the app logs cannot be redacted",
                }
            )
        else:
            data, cut, archives = _read_recent_log(app_log, app_log_max_bytes)
            text = vault_redactor.redact_app_log(data.decode("utf-8", errors="replace"))
            notes = [f"with the end of {', '.join(reversed(archives))} before it"] if archives else []
            notes += [f"last {app_log_max_bytes} bytes only (size cap)"] if cut else []
            writer.add("app/password_manager.log", text.encode(), "; ".join(notes))

    checks = doctor.run_checks(env)
    writer.add("doctor.txt", (redactor.redact(doctor.render_text(checks)) + "\n").encode())
    writer.add("doctor.json", _json(_redact_object(doctor.report(checks, now), redactor)))
    writer.add("status.json", _json(_redact_object(doctor.current_status(env), redactor)))
    with RunHistory(env.paths.history_path, create=False) as history:
        runs = history.recent(limit=100_000, since=now.timestamp() - days * 86400)
    writer.add("history.json", _json(_redact_object({"days": days, "runs": runs}, redactor)))
    settings = redact_settings(dict(env.loaded.app_settings))
    writer.add("settings.json", _json(_redact_object({"path": str(env.loaded.source), "settings": settings}, redactor)))
    writer.add("platform.json", _json(_redact_object(platform_details(env), redactor)))

    members = writer.manifest_rows()
    manifest = {
        "created_at": utc_iso(now.timestamp()),
        "pmjobsd_version": __version__,
        "history_days": days,
        "members": members,
        "omitted": omitted,
        "never_included": list(NEVER_INCLUDED),
        "redaction": {
            "vault_terms": vault_redactor.term_count if vault_redactor else 0,
            "replacements": redactor.replacements,
            "vault_read": vault_redactor is not None,
        },
    }
    writer.add("manifest.json", _json(manifest))
    _write_zip(target, writer.members, now)
    return Bundle(target, members, omitted)


def _target_path(output: Path | None, now: datetime) -> Path:
    name = f"pmjobsd-bundle-{now.astimezone().strftime('%Y%m%d-%H%M%S')}.zip"
    if output is None:
        return Path.cwd() / name
    output = Path(output)
    return output / name if output.is_dir() else output


def _write_zip(target: Path, members: dict[str, bytes], now: datetime) -> None:
    """Write the zip atomically (0600 temp file in the same folder, fsync, rename)."""
    stamp = now.astimezone().timetuple()[:6]
    with atomic_writer(target, PRIVATE_FILE_MODE) as handle:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                info = zipfile.ZipInfo(name, date_time=max(stamp, (1980, 1, 1, 0, 0, 0)))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (0o100000 | PRIVATE_FILE_MODE) << 16
                archive.writestr(info, data)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a bundle (for tests and support tooling)."""
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: manifest.json is not a JSON object")
    return manifest
