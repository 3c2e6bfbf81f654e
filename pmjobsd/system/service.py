"""`pmjobsd service install|uninstall|status`: systemd units and launchd plists.

The templates in ``pmjobsd/system/units/`` are the one source of truth.  ``render_*``
fill in the absolute command of the installed pmjobsd; ``packaging/`` holds the
same files rendered with :data:`DEFAULT_COMMAND` (a test keeps them equal).

``install(scope, dry_run, out)`` writes the files where the service manager
expects them and runs the ``systemctl``/``launchctl`` commands; with
``dry_run`` it prints the target paths and the exact commands instead.  Every
function returns a process exit code: 0 done, 1 the service manager refused
or the service is not running (status), 2 a usage or permission problem.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shlex
import shutil
import site
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TextIO
from xml.sax.saxutils import escape as xml_escape

from pmjobsd.app.paths import APP_NAME
from pmjobsd.system.files import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, write_atomic

LABEL = "org.securepasswordmanager.pmjobsd"
SYSTEMD_USER_UNIT = "pmjobsd.service"
SYSTEMD_SYSTEM_TEMPLATE = "pmjobsd@.service"
# The command the committed files in packaging/ are rendered with
# (`pip install` as root puts console scripts in /usr/local/bin).
DEFAULT_COMMAND = ("/usr/local/bin/pmjobsd",)
# The committed LaunchDaemon is rendered for this placeholder account.
DEFAULT_USER = "USERNAME"
SYSTEM_UNIT_MODE = 0o644  # read by the manager and `systemctl cat`; holds no secret

Runner = Callable[[Sequence[str]], int]


class ServiceError(Exception):
    """A problem the user can fix (missing binary, wrong account, no permission)."""


# --- rendering --------------------------------------------------------------


def _template(name: str) -> str:
    # One name per step: Traversable.joinpath takes several only from Python 3.11.
    return (resources.files("pmjobsd.system") / "units" / name).read_text(encoding="utf-8")


def _systemd_word(word: str) -> str:
    """Quote one ExecStart= word: '%' is a specifier and '\\' an escape in unit files."""
    escaped = word.replace("\\", "\\\\").replace("%", "%%")
    if any(ch.isspace() or ch in "\"'$;" for ch in escaped):
        escaped = '"' + escaped.replace('"', '\\"').replace("$", "$$") + '"'
    return escaped


@dataclass(frozen=True)
class UserUnitPaths:
    """What the user unit binds into its empty home, as unit-file words (``%h`` = the home).

    ``code`` holds the folders under the home that pmjobsd's Python lives in (a venv,
    ``pip install --user``, pyenv): bound read-only and allowed to execute.
    """

    data: str = f"%h/.local/share/{APP_NAME}"
    cache: str = f"%h/.cache/{APP_NAME}"
    config: str = f"%h/.config/{APP_NAME}"
    code: tuple[str, ...] = ()


def render_systemd(template: str, command: Sequence[str] = DEFAULT_COMMAND, paths: UserUnitPaths | None = None) -> str:
    """Render ``pmjobsd.service`` or ``pmjobsd@.service`` for ``command`` (absolute argv)."""
    paths = paths or UserUnitPaths()
    text = _template(template + ".in")
    hardening = _template("hardening.inc").rstrip("\n")
    code = "".join(f"BindReadOnlyPaths={word}\n" for word in paths.code)
    return (
        text.replace("@PMJOBSD@", " ".join(_systemd_word(word) for word in command))
        .replace("@HARDENING@", hardening)
        .replace("@DATA_DIR@", paths.data)
        .replace("@CACHE_DIR@", paths.cache)
        .replace("@CONFIG_DIR@", "-" + paths.config)
        .replace("@CODE_PATHS@", code)
        .replace("@EXEC_PATHS@", "".join(f" {word}" for word in paths.code))
    )


def _unit_path(path: Path, home: Path) -> str:
    """One path as a unit-file word: ``%h/...`` under the home, '%' escaped, quoted if it has spaces."""
    try:
        word = "%h/" + str(path.relative_to(home)).replace("%", "%%")
    except ValueError:
        word = str(path).replace("%", "%%")
    return f'"{word}"' if any(ch.isspace() or ch in "\"'\\" for ch in word) else word


def _xdg_home(variable: str, home: Path, fallback: str) -> Path:
    # XDG: an unset, empty or relative value means the default.
    value = os.environ.get(variable, "")
    return Path(value) if value and os.path.isabs(value) else home / fallback


def _code_folders(home: Path) -> list[Path]:
    """The folders under ``home`` this Python and pmjobsd are loaded from (none for a system-wide install)."""
    import pmjobsd

    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates.append(str(Path(pmjobsd.__file__).resolve().parent.parent))  # site-packages or a checkout
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        candidates.append(site.getusersitepackages())
    found: list[Path] = []
    for candidate in sorted({Path(c).resolve() for c in candidates}):
        if candidate.is_relative_to(home) and candidate != home and not any(candidate.is_relative_to(f) for f in found):
            found.append(candidate)
    return found


def user_unit_paths(home: Path, command: Sequence[str]) -> UserUnitPaths:
    """The user unit's folders for this account: XDG_*_HOME honoured, this install's code folders."""
    code = _code_folders(home)
    executable = Path(command[0])
    if executable.is_relative_to(home) and not any(executable.is_relative_to(f) for f in code):
        code.append(executable.parent)
    return UserUnitPaths(
        data=_unit_path(_xdg_home("XDG_DATA_HOME", home, ".local/share") / APP_NAME, home),
        cache=_unit_path(_xdg_home("XDG_CACHE_HOME", home, ".cache") / APP_NAME, home),
        config=_unit_path(_xdg_home("XDG_CONFIG_HOME", home, ".config") / APP_NAME, home),
        code=tuple(_unit_path(folder, home) for folder in code),
    )


def launchd_label(system: bool, user: str) -> str:
    """The agent has one label; a daemon is per vault owner, like ``pmjobsd@alice``."""
    return f"{LABEL}.{user}" if system else LABEL


def default_launchd_home(user: str) -> str:
    return f"/Users/{user}"


def render_launchd(
    system: bool, command: Sequence[str] = DEFAULT_COMMAND, user: str = DEFAULT_USER, home: str | None = None
) -> str:
    """Render the LaunchAgent (``system=False``) or the LaunchDaemon run as ``user``."""
    home = home or default_launchd_home(user)
    text = _template(f"{LABEL}.daemon.plist.in" if system else f"{LABEL}.plist.in")
    arguments = "\n".join(f"\t\t<string>{xml_escape(word)}</string>" for word in (*command, "run"))
    return (
        text.replace("@PROGRAM_ARGUMENTS@", arguments)
        .replace("@LABEL@", xml_escape(launchd_label(system, user)))
        .replace("@USER@", xml_escape(user))
        .replace("@HOME@", xml_escape(home))
    )


def render_packaging(command: Sequence[str] = DEFAULT_COMMAND) -> dict[str, str]:
    """The files of ``packaging/`` (relative path -> text) rendered for ``command``."""
    return {
        f"systemd/{SYSTEMD_USER_UNIT}": render_systemd(SYSTEMD_USER_UNIT, command),
        f"systemd/{SYSTEMD_SYSTEM_TEMPLATE}": render_systemd(SYSTEMD_SYSTEM_TEMPLATE, command),
        f"launchd/{LABEL}.plist": render_launchd(False, command),
        f"launchd/{launchd_label(True, DEFAULT_USER)}.plist": render_launchd(True, command, DEFAULT_USER),
    }


def installed_command() -> tuple[str, ...]:
    """The absolute argv that starts this pmjobsd: the console script, else ``python -m pmjobsd``."""
    script = shutil.which("pmjobsd")
    if script:
        return (str(Path(script).resolve()),)
    return (str(Path(sys.executable).resolve()), "-m", "pmjobsd")


# --- plans ----------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    may_fail: bool = False  # e.g. `launchctl bootout` of a job that is not loaded

    def __str__(self) -> str:
        return shlex.join(self.argv)


@dataclass
class Plan:
    """What one scope on one platform means: files, folders to create and commands."""

    manager: str  # "systemd" | "launchd"
    scope: str  # "user" | "system"
    unit_path: Path
    unit_text: str
    unit_mode: int
    owner: pwd.struct_passwd | None  # folders are created as this account (system scope)
    folders: list[Path] = field(default_factory=list)
    install: list[Command] = field(default_factory=list)
    uninstall: list[Command] = field(default_factory=list)
    status: list[Command] = field(default_factory=list)


def _account(user_name: str | None, scope: str) -> pwd.struct_passwd:
    if scope == "user":
        return pwd.getpwuid(os.getuid())
    name = user_name or os.environ.get("SUDO_USER") or getpass.getuser()
    if name == "root":
        raise ServiceError(
            "a system service runs as the vault's owner, not root: pass the account name (e.g. --user-name alice)"
        )
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ServiceError(f"no such account {name!r}: the system service must run as the vault's owner") from None


def _user_config_home(home: str) -> Path:
    value = os.environ.get("XDG_CONFIG_HOME", "")
    return Path(value) if value and os.path.isabs(value) else Path(home) / ".config"


def make_plan(
    scope: str,
    *,
    platform: str | None = None,
    command: Sequence[str] | None = None,
    user_name: str | None = None,
) -> Plan:
    """Resolve everything ``install``/``uninstall``/``status`` need for ``scope`` ('user' | 'system')."""
    if scope not in ("user", "system"):
        raise ServiceError(f"unknown scope {scope!r}: expected 'user' or 'system'")
    platform = platform or sys.platform
    command = tuple(command or installed_command())
    account = _account(user_name, scope)
    home = account.pw_dir if scope == "system" else str(Path.home())
    # The sandboxed unit may write only these; they must exist before it starts.  The
    # owner's XDG variables are unknown to root, so the system scope keeps the defaults.
    if scope == "system":
        data_home, cache_home = Path(home) / ".local/share", Path(home) / ".cache"
    else:
        data_home = _xdg_home("XDG_DATA_HOME", Path(home), ".local/share")
        cache_home = _xdg_home("XDG_CACHE_HOME", Path(home), ".cache")
    folders = [data_home / APP_NAME, cache_home / APP_NAME]
    if platform == "darwin":
        system = scope == "system"
        label = launchd_label(system, account.pw_name)
        if system:
            path = Path("/Library/LaunchDaemons") / f"{label}.plist"
            domain, target = "system", f"system/{label}"
        else:
            path = Path(home) / "Library/LaunchAgents" / f"{label}.plist"
            domain = f"gui/{account.pw_uid}"
            target = f"{domain}/{label}"
        plan = Plan(
            "launchd",
            scope,
            path,
            render_launchd(system, command, account.pw_name, home),
            SYSTEM_UNIT_MODE if system else PRIVATE_FILE_MODE,
            account if system else None,
            folders + [Path(home) / "Library/Logs/pmjobsd"],
        )
        plan.install = [
            Command(("launchctl", "bootout", target), may_fail=True),  # reload an older version
            Command(("launchctl", "enable", target)),
            Command(("launchctl", "bootstrap", domain, str(path))),
        ]
        plan.uninstall = [Command(("launchctl", "bootout", target), may_fail=True)]
        plan.status = [Command(("launchctl", "print", target))]
        return plan
    ctl: tuple[str, ...]
    if scope == "user":
        path = _user_config_home(home) / "systemd/user" / SYSTEMD_USER_UNIT
        plan = Plan(
            "systemd",
            scope,
            path,
            render_systemd(SYSTEMD_USER_UNIT, command, user_unit_paths(Path(home), command)),
            PRIVATE_FILE_MODE,
            None,
            folders,
        )
        ctl, unit = ("systemctl", "--user"), SYSTEMD_USER_UNIT
    else:
        path = Path("/etc/systemd/system") / SYSTEMD_SYSTEM_TEMPLATE
        plan = Plan(
            "systemd", scope, path, render_systemd(SYSTEMD_SYSTEM_TEMPLATE, command), SYSTEM_UNIT_MODE, account, folders
        )
        ctl, unit = ("systemctl",), f"pmjobsd@{account.pw_name}.service"
    plan.install = [Command((*ctl, "daemon-reload")), Command((*ctl, "enable", "--now", unit))]
    plan.uninstall = [Command((*ctl, "disable", "--now", unit), may_fail=True), Command((*ctl, "daemon-reload"))]
    plan.status = [Command((*ctl, "--no-pager", "status", unit))]
    return plan


# --- actions -----------------------------------------------------------------


def _run(argv: Sequence[str]) -> int:
    try:
        return subprocess.run(list(argv), check=False).returncode
    except FileNotFoundError:
        print(f"pmjobsd: {argv[0]} not found on PATH", file=sys.stderr)
        return 127


def _under(root: Path | None, path: Path) -> Path:
    return root / path.relative_to(path.anchor) if root else path


def _write_file(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, mode)


class FolderError(ServiceError):
    """A folder of the app could not be created (as its owner)."""


def _make_folder(path: Path, owner: pwd.struct_passwd | None) -> None:
    """Create ``path`` and its missing parents 0700 -- as ``owner`` when root installs for someone else.

    Root never creates, ``chmod``s or ``chown``s anything in another account's home: a path
    there is the owner's to change under our feet (``~/.cache -> /etc``, or a folder renamed
    to a symlink mid-install), and root following it would hand root's files to the owner.
    So ``mkdir -p`` runs as the owner (its uid, gid and groups, umask 077), with exactly the
    owner's rights: whatever it creates is the owner's and it cannot reach what the owner
    cannot.
    """
    if owner is None or os.geteuid() != 0 or owner.pw_uid == 0:
        previous = os.umask(0o077)
        try:
            path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        except OSError as error:
            raise FolderError(f"cannot create {path}: {error.strerror}") from None
        finally:
            os.umask(previous)
        return
    mkdir = shutil.which("mkdir") or "/bin/mkdir"
    result = subprocess.run(
        [mkdir, "-p", "--", str(path)],
        user=owner.pw_uid,
        group=owner.pw_gid,
        extra_groups=os.getgrouplist(owner.pw_name, owner.pw_gid),
        umask=0o077,
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"mkdir exited with {result.returncode}"])[-1]
        reason = reason.removeprefix(f"{mkdir}: ").removeprefix("mkdir: ")
        raise FolderError(f"cannot create {path} as {owner.pw_name}: {reason}")


def session_bus_problem() -> str | None:
    """Why ``systemctl --user`` cannot reach the user manager here, or None when it can try."""
    if os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return None
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and any(os.path.exists(os.path.join(runtime, name)) for name in ("bus", "systemd/private")):
        return None
    where = f"no {runtime}/bus" if runtime else "XDG_RUNTIME_DIR is not set"
    return (
        f"no session bus (DBUS_SESSION_BUS_ADDRESS is not set, {where}): systemctl --user cannot reach "
        "your user manager; run it from your login session (or enable lingering: loginctl enable-linger)"
    )


def _prepare(scope, dry_run, out, platform, command, user_name, root):
    try:
        plan = make_plan(scope, platform=platform, command=command, user_name=user_name)
    except ServiceError as error:
        print(f"pmjobsd service: {error}", file=out)
        return None
    if plan.scope == "system" and not dry_run and root is None and os.geteuid() != 0:
        print(f"pmjobsd service: writing {plan.unit_path} needs root (run it with sudo)", file=out)
        return None
    return plan


def _run_commands(commands: list[Command], dry_run: bool, out: TextIO, runner: Runner) -> int:
    for command in commands:
        if dry_run:
            print(f"would run: {command}", file=out)
            continue
        print(f"running: {command}", file=out)
        code = runner(command.argv)
        if code != 0 and not command.may_fail:
            print(f"pmjobsd service: {command.argv[0]} exited with {code}", file=out)
            return 1
    return 0


def install(
    scope: str,
    dry_run: bool,
    out: TextIO = sys.stdout,
    *,
    platform: str | None = None,
    command: Sequence[str] | None = None,
    user_name: str | None = None,
    root: Path | None = None,
    runner: Runner = _run,
) -> int:
    """Write the unit (or plist) for ``scope`` and enable and start it; ``dry_run`` only prints.

    ``root`` prefixes every written path (like DESTDIR); ``runner`` runs one argv.
    """
    plan = _prepare(scope, dry_run, out, platform, command, user_name, root)
    if plan is None:
        return 2
    target = _under(root, plan.unit_path)
    for folder in plan.folders:
        if dry_run:
            as_owner = f", as {plan.owner.pw_name}" if plan.owner is not None else ""
            print(f"would create folder: {_under(root, folder)} (0700{as_owner})", file=out)
        else:
            try:
                _make_folder(_under(root, folder), plan.owner)
            except FolderError as error:
                print(f"pmjobsd service: {error}; nothing installed", file=out)
                return 2
    if dry_run:
        print(f"would write: {target} ({plan.unit_mode:04o})", file=out)
    else:
        _write_file(target, plan.unit_text, plan.unit_mode)
        print(f"wrote {target}", file=out)
    return _run_commands(plan.install, dry_run, out, runner)


def uninstall(
    scope: str,
    dry_run: bool,
    out: TextIO = sys.stdout,
    *,
    platform: str | None = None,
    command: Sequence[str] | None = None,
    user_name: str | None = None,
    root: Path | None = None,
    runner: Runner = _run,
) -> int:
    """Stop and disable the service, then remove its file; the app's data is left alone."""
    plan = _prepare(scope, dry_run, out, platform, command, user_name, root)
    if plan is None:
        return 2
    target = _under(root, plan.unit_path)
    stop, after = plan.uninstall[:1], plan.uninstall[1:]
    code = _run_commands(stop, dry_run, out, runner)
    if dry_run:
        print(f"would remove: {target}", file=out)
    elif target.exists():
        target.unlink()
        print(f"removed {target}", file=out)
    else:
        print(f"not installed: {target}", file=out)
    return code or _run_commands(after, dry_run, out, runner)


def status(
    scope: str,
    dry_run: bool,
    out: TextIO = sys.stdout,
    *,
    platform: str | None = None,
    command: Sequence[str] | None = None,
    user_name: str | None = None,
    root: Path | None = None,
    runner: Runner = _run,
) -> int:
    """Say whether the file is installed and current, then ask the manager; 0 = running."""
    plan = _prepare(scope, True, out, platform, command, user_name, root)
    if plan is None:
        return 2
    target = _under(root, plan.unit_path)
    if not target.exists():
        print(f"not installed: {target}", file=out)
        installed = False
    else:
        current = target.read_text(encoding="utf-8") == plan.unit_text
        print(f"installed: {target}" + ("" if current else " (differs from this version: run install again)"), file=out)
        installed = True
    if dry_run:
        return _run_commands(plan.status, True, out, runner)
    if plan.manager == "systemd" and plan.scope == "user" and (problem := session_bus_problem()):
        print(f"pmjobsd service: {problem}", file=out)
        return 1
    code = _run_commands(plan.status, False, out, runner)
    return 0 if installed and code == 0 else 1
