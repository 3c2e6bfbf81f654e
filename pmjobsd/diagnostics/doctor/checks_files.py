"""Checks of the settings and the app's files: valid settings, a readable vault, owners and modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pmjobsd.app.paths import AppPaths
from pmjobsd.app.vault import VaultError, read_header, read_vault
from pmjobsd.core.context import Status
from pmjobsd.core.privacy import scrub_text
from pmjobsd.core.settings import issue_text
from pmjobsd.diagnostics.doctor.env import Check, DoctorEnv, fail, ok, shell_quote, user_name, warn
from pmjobsd.system.files import PRIVATE_DIR_MODE


def check_settings(env: DoctorEnv) -> Check:
    loaded, path = env.loaded, env.loaded.source
    if not Path(path).exists():
        return ok("settings", f"{path}: no such file; every job runs with its defaults")
    if loaded.ok:
        return ok("settings", f"{path}: valid ({len(loaded.jobs)} jobs)")
    issues = "; ".join(scrub_text(issue_text(issue, path)) for issue in loaded.issues[:5])
    more = f" (+{len(loaded.issues) - 5} more)" if len(loaded.issues) > 5 else ""
    hint = f"fix these keys, then check with: pmjobsd config validate {shell_quote(path)}"
    if loaded.fixes:  # others could change the file: it is not used at all
        return fail("settings", f"{path}: not used, others could change it: {issues}{more}", "; ".join(loaded.fixes))
    if loaded.fatal:
        return fail("settings", f"{path}: invalid, the daemon uses the defaults: {issues}{more}", hint)
    return warn("settings", f"{path}: {len(loaded.job_errors)} job(s) disabled by errors: {issues}{more}", hint)


def check_vault(env: DoctorEnv) -> Check:
    path = env.paths.vault_path
    try:
        read_header(path)
        # A -wal without -shm is read from a private copy: under pmjobsd's own folder, not the system temp.
        # Created 0700 when absent; an existing one is not chmod-ed here (check_folders reports it; the
        # copy goes into a 0700 mkdtemp folder inside it either way).
        scratch = env.paths.state_dir
        scratch.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        count = read_vault(
            path,
            lambda conn: conn.execute("SELECT count(*) FROM passwords").fetchone()[0],
            lock_timeout=min(env.timeout, 5.0),
            scratch_dir=scratch,
        ).value
    except OSError as exc:
        return fail(
            "files.vault",
            f"cannot use pmjobsd's state folder {env.paths.state_dir}: {exc.strerror or exc}",
            f"make {shell_quote(env.paths.state_dir)} a folder you own",
        )
    except VaultError as exc:
        if exc.reason == "missing":
            return warn(
                "files.vault",
                f"no vault at {path}",
                "start the app once to create it, or point pmjobsd at its folder with --data-dir",
            )
        if exc.reason == "locked":
            return warn("files.vault", str(exc), "run the doctor again when the app is idle")
        return fail("files.vault", str(exc), f"restore the vault from a backup in {shell_quote(env.paths.backups_dir)}")
    return ok("files.vault", f"{path}: SQLite vault with {count} entries")


def _mode_problems(paths: list[Path], mode: int) -> tuple[list[Path], list[Path]]:
    """(paths with group/other permission bits, paths not owned by us) among those that exist."""
    loose, foreign = [], []
    for path in paths:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if info.st_mode & 0o077 & ~mode:
            loose.append(path)
        if info.st_uid != os.getuid():
            foreign.append(path)
    return loose, foreign


def _permission_check(name: str, what: str, paths: list[Path], mode: int, loose_status: Status) -> Check:
    loose, foreign = _mode_problems(paths, mode)
    present = [path for path in paths if path.exists() or path.is_symlink()]
    if not present:
        return ok(name, f"no {what} present yet")
    if foreign:
        user = user_name()
        return fail(
            name,
            f"{len(foreign)} of {what} not owned by {user}: " + ", ".join(str(p) for p in foreign),
            f"chown {user} " + " ".join(shell_quote(p) for p in foreign),
        )
    if loose:
        names = ", ".join(f"{p} ({stat.S_IMODE(p.lstat().st_mode):04o})" for p in loose)
        return Check(
            name,
            loose_status,
            f"{what} open to group/others: {names}",
            f"chmod {mode:o} " + " ".join(shell_quote(p) for p in loose),
        )
    return ok(name, f"{len(present)} {what}: {mode:04o} or stricter, owned by {user_name()}")


def check_secret_files(env: DoctorEnv) -> Check:
    """The vault, its -wal/-shm, the key files and the backups (each holds the vault): 0600."""
    paths = env.paths
    files = [
        paths.vault_path,
        *(Path(f"{paths.vault_path}{s}") for s in ("-wal", "-shm", "-journal")),
        *paths.key_files,
    ]
    if paths.backups_dir.is_dir():
        files += sorted(paths.backups_dir.glob("*.zip"))
    return _permission_check("files.secrets", "vault, key and backup files", files, 0o600, Status.FAIL)


def check_settings_file(env: DoctorEnv) -> Check:
    """settings.json may hold webhook URLs and tokens: not for other users to read."""
    return _permission_check("files.settings", "settings file", [env.loaded.source], 0o600, Status.WARN)


def _folders(paths: AppPaths) -> list[Path]:
    found: list[Path] = []
    for folder in (
        paths.data_dir,
        paths.config_dir,
        paths.cache_dir,
        paths.backups_dir,
        paths.app_log_path.parent,
        paths.log_dir,
        paths.state_dir,
    ):
        if folder not in found:
            found.append(folder)
    return found


def check_folders(env: DoctorEnv) -> Check:
    return _permission_check("files.folders", "folders", _folders(env.paths), 0o700, Status.WARN)


# The app's own files that it writes with the default umask (0644 under most desktops), and what another
# local user learns from each.  pmjobsd never changes the app's files: doctor names the exposure and the fix.
_EXPOSURE_READ_BITS = stat.S_IRGRP | stat.S_IROTH


def _exposed_files(paths: AppPaths) -> list[tuple[str, str, list[Path]]]:
    """(check suffix, what the files reveal, the files) for each of the app's files that reveal something."""
    log = paths.app_log_path
    archives = sorted(log.parent.glob(f"{log.name}.*")) if log.parent.is_dir() else []
    return [
        ("secret_key", "the key that decrypts the vault", [paths.data_dir / "secret.key"]),
        (
            "breach_cache",
            "the HIBP hash prefixes of the vault's passwords, which narrow an offline guess",
            [paths.breach_cache_path],
        ),
        ("app_log", "the app's log, which names the vault's websites and usernames", [log, *archives]),
    ]


def check_app_exposure(env: DoctorEnv) -> list[Check]:
    """The app's key, breach cache and log (with its archives) readable by other users: a WARN for each,
    with the ``chmod`` that closes it.  (The vault, keys and backups are ``files.secrets``'.)"""
    checks = []
    for suffix, reveals, files in _exposed_files(env.paths):
        exposed = []
        for path in files:
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_mode & _EXPOSURE_READ_BITS:
                exposed.append((path, stat.S_IMODE(info.st_mode)))
        if exposed:
            names = ", ".join(f"{path} ({mode:04o})" for path, mode in exposed)
            checks.append(
                warn(
                    f"files.exposure.{suffix}",
                    f"readable by other users: {names}; it holds {reveals}. The app writes it so; "
                    "pmjobsd leaves the app's files as they are",
                    "chmod 600 " + " ".join(shell_quote(path) for path, _ in exposed),
                )
            )
    if not checks:
        return [ok("files.exposure", "the app's key, breach cache and log are readable by their owner only")]
    return checks
