"""Where the app's files and pmjobsd's own files live (docs/architecture.md, "Files").

The app resolves its folders by XDG rules; so do we, so that pmjobsd finds the
vault, settings and caches exactly where the app keeps them.  Each folder can be
overridden (command line first, then the ``jobs.paths`` settings, then XDG).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, replace
from pathlib import Path

from pmjobsd.system.digest import sha256_hex

APP_NAME = "secure-password-manager"


def _xdg(var: str, fallback: str) -> Path:
    # XDG says: an unset *or empty* variable, or a relative path, means the default.
    value = os.environ.get(var, "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


@dataclass(frozen=True)
class AppPaths:
    """Resolved folders; every file path is derived from these."""

    data_dir: Path
    config_dir: Path
    cache_dir: Path
    log_dir: Path
    settings_override: Path | None = None
    state_override: Path | None = None  # with jobs.coordination: this machine's own state folder

    @classmethod
    def resolve(
        cls,
        data_dir: str | os.PathLike | None = None,
        config_dir: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        log_dir: str | os.PathLike | None = None,
        settings: str | os.PathLike | None = None,
    ) -> AppPaths:
        """Resolve folders from explicit values, else XDG variables, else their defaults."""
        data = Path(data_dir) if data_dir else _xdg("XDG_DATA_HOME", ".local/share") / APP_NAME
        return cls(
            data_dir=data,
            config_dir=Path(config_dir) if config_dir else _xdg("XDG_CONFIG_HOME", ".config") / APP_NAME,
            cache_dir=Path(cache_dir) if cache_dir else _xdg("XDG_CACHE_HOME", ".cache") / APP_NAME,
            log_dir=Path(log_dir) if log_dir else data / "logs",
            settings_override=Path(settings) if settings else None,
        )

    def with_overrides(self, **folders: str | None) -> AppPaths:
        """Return a copy with the given folders replaced (None values are ignored)."""
        changes = {key: Path(value) for key, value in folders.items() if value}
        if "data_dir" in changes and "log_dir" not in changes and self.log_dir == self.data_dir / "logs":
            changes["log_dir"] = changes["data_dir"] / "logs"
        return replace(self, **changes)

    # --- the app's files -------------------------------------------------
    @property
    def settings_path(self) -> Path:
        return self.settings_override or self.config_dir / "settings.json"

    @property
    def vault_path(self) -> Path:
        return self.data_dir / "passwords.db"

    @property
    def key_files(self) -> tuple[Path, ...]:
        names = ("secret.key", "secret.key.enc", "crypto.salt", "auth.json", "totp_config.json")
        return tuple(self.data_dir / name for name in names)

    @property
    def app_log_path(self) -> Path:
        return self.data_dir / "logs" / "password_manager.log"

    @property
    def backups_dir(self) -> Path:
        return self.data_dir / "backups"

    @property
    def breach_cache_path(self) -> Path:
        return self.cache_dir / "breach_cache.json"

    @property
    def bridge_cert_path(self) -> Path:
        return self.config_dir / "tls" / "localhost.crt"

    @property
    def bridge_socket_path(self) -> Path | None:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        return Path(runtime) / APP_NAME / "bridge.sock" if runtime else None

    # --- pmjobsd's own files ----------------------------------------------
    @property
    def jobs_log_path(self) -> Path:
        return self.log_dir / "jobs.log"

    @property
    def state_dir(self) -> Path:
        """``<data>/jobs``; with coordination ``$XDG_STATE_HOME/pmjobsd/<member>`` (see :func:`member_state_dir`)."""
        return self.state_override or self.data_dir / "jobs"

    def for_member(self, member: str) -> AppPaths:
        """These paths with the state folder of ``member`` on this machine (the data folder may be shared)."""
        return replace(self, state_override=member_state_dir(member))

    @property
    def history_path(self) -> Path:
        return self.state_dir / "history.db"

    @property
    def id_key_path(self) -> Path:
        return self.state_dir / "id-hash.key"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "pmjobsd.pid"

    @property
    def control_socket_path(self) -> Path:
        """The daemon's first choice: ``$XDG_RUNTIME_DIR/pmjobsd/control-<id>.sock``, else the state folder.

        ``<id>`` is a short hash of the resolved state folder, so that two daemons on
        different data folders sharing one runtime folder never take each other's socket.
        """
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
            tag = sha256_hex(os.fsencode(os.path.realpath(self.state_dir)))[:12]
            candidate = Path(runtime) / "pmjobsd" / f"control-{tag}.sock"
            # AF_UNIX paths are limited to ~104 bytes: Linux reaches any folder through
            # /proc/self/fd (core.control.checked_address); elsewhere use the state folder.
            if len(os.fsencode(candidate)) < 100 or os.path.isdir("/proc/self/fd"):
                return candidate
        return self.control_socket_fallback

    @property
    def control_socket_fallback(self) -> Path:
        """The socket in the state folder: used without a (usable) runtime folder."""
        return self.state_dir / "control.sock"

    @property
    def control_socket_candidates(self) -> tuple[Path, ...]:
        """Where clients look for the daemon, and where it binds: its own choice first, then the state folder.

        A daemon started without XDG_RUNTIME_DIR (a system unit), or one that refused a
        runtime folder it does not own, binds in the state folder, while an SSH session
        asking for status has the variable set.
        """
        fallback = self.control_socket_fallback
        preferred = self.control_socket_path
        return (preferred,) if preferred == fallback else (preferred, fallback)

    def job_state_dir(self, job_name: str) -> Path:
        """A private folder for one job's own bookkeeping (ETags, hashes, ...)."""
        return self.state_dir / "state" / job_name


def member_state_dir(member: str) -> Path:
    """``$XDG_STATE_HOME/pmjobsd/<member>/``: the run history, lock and control socket of one machine.

    With jobs.coordination the app's data folder may be shared by several machines (a NAS, a
    synced folder); an SQLite history or a lock file there would be shared, or corrupted, too.
    """
    return _xdg("XDG_STATE_HOME", ".local/state") / "pmjobsd" / member


# File systems whose locks and SQLite's assumptions do not hold (shared over a network, or FUSE
# mounts of a remote), as /proc/mounts names them.
NETWORK_FILESYSTEMS = frozenset(
    "nfs nfs4 cifs smb smb3 smbfs ncpfs afs coda 9p ceph glusterfs lustre gfs gfs2 ocfs2 davfs"
    " fuse.sshfs fuse.glusterfs fuse.rclone fuse.s3fs fuse.davfs2 fuse.cephfs fuse.gcsfuse sshfs".split()
)


def network_filesystem(path: Path, mounts: Path = Path("/proc/mounts")) -> str | None:
    """The type of the network file system ``path`` (or its nearest existing parent) is on, else None.

    Read from ``mounts`` (Linux's /proc/mounts: the longest mount point above the path wins);
    None where there is no such table (macOS).
    """
    try:
        table = mounts.read_text(errors="replace")
    except OSError:
        return None
    target = Path(os.path.realpath(path))
    while not target.exists() and target != target.parent:
        target = target.parent
    best, kind = "", ""
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = str(target) == point or str(target).startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    return kind if kind in NETWORK_FILESYSTEMS else None


def check_local_state_folder(path: Path, mounts: Path = Path("/proc/mounts")) -> None:
    """Raise OSError (one line naming ``path``) when the state folder is on a network file system."""
    kind = network_filesystem(path, mounts)
    if kind is not None:
        raise OSError(
            errno.EREMOTE,
            f"on a network file system ({kind}); with jobs.coordination each machine's state folder"
            " must be local: set XDG_STATE_HOME to a folder on this machine",
            str(path),
        )
