"""`pmjobsd doctor`: check the installation, the app's files and the daemon; say how to fix each problem.

Each check is one small function ``check_x(env) -> Check | list[Check]``; a
:class:`Check` is a name, OK / WARN / FAIL, a message and a hint that says
exactly what to do (``chmod 600 '/home/a/.local/share/.../secret.key'``).
:func:`run_checks` runs them all (a check that crashes becomes a FAIL, never a
traceback) and :func:`exit_code` folds them into 0 / 1 / 2 like ``status``.
Everything the checks touch outside the files — ``statvfs``, the service
manager's commands, the app-process scan, the breach API address — is an
attribute of :class:`DoctorEnv`, so tests can set it.

Messages name paths, counts and versions, never vault content.
"""

from __future__ import annotations

import errno
import functools
import importlib
import importlib.util
import os
import platform
import pwd
import re
import shlex
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

import requests

from . import __version__, control, service
from .context import Status
from .lock import holder_pid
from .paths import AppPaths
from .privacy import scrub_text
from .settings import LoadedSettings
from .status import offline_status
from .vault import VaultError, read_header, read_vault

GIB = 1 << 30
MIB = 1 << 20
DISK_WARN_BYTES = 1 * GIB
DISK_WARN_FRACTION = 0.05
DISK_FAIL_BYTES = 100 * MIB
DEFAULT_BREACH_API = "https://api.pwnedpasswords.com"
_HASH_LINE = re.compile(r"^[0-9A-Fa-f]{35}:\d+\s*$")
# Qt's platform plugin for each OS; the app's GUI cannot open a window without it.
QT_PLATFORM_PLUGINS = {"linux": "libqxcb.so", "darwin": "libqcocoa.dylib"}


@dataclass(frozen=True)
class Check:
    """One line of the report: ``hint`` says what to do when ``status`` is not OK."""

    name: str
    status: Status
    message: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return {**asdict(self), "status": self.status.value}


def ok(name: str, message: str) -> Check:
    return Check(name, Status.OK, message)


def warn(name: str, message: str, hint: str) -> Check:
    return Check(name, Status.WARN, message, hint)


def fail(name: str, message: str, hint: str) -> Check:
    return Check(name, Status.FAIL, message, hint)


def _run_quiet(argv: Sequence[str]) -> int:
    """Run a service-manager query; its exit code (127 when missing, 124 on timeout)."""
    try:
        return subprocess.run(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, timeout=10, check=False).returncode
    except FileNotFoundError:
        return 127
    except subprocess.TimeoutExpired:
        return 124


@dataclass
class DoctorEnv:
    """What the checks look at; every outside effect can be replaced (tests)."""

    paths: AppPaths
    loaded: LoadedSettings
    online: bool = False
    statvfs: Callable[[str], Any] = os.statvfs
    run_command: Callable[[Sequence[str]], int] = _run_quiet
    platform: str = sys.platform
    service_root: Path | None = None  # prefix of unit paths (like DESTDIR), for tests
    breach_api_base: str | None = None  # default: the job's api_base option, else the public API
    is_app_running: Callable[[], bool] | None = None
    timeout: float = 5.0
    _daemon: tuple[dict | None, int | None] | None = field(default=None, repr=False)

    def daemon(self) -> tuple[dict | None, int | None]:
        """(status document from the live daemon or None, pid holding the lock or None); asked once."""
        if self._daemon is None:
            try:
                answer = control.ask_daemon(self.paths.control_socket_candidates, {"cmd": "status"}, timeout=self.timeout)
                document = answer.get("status") if answer.get("ok", True) else None
            except (control.ControlError, ValueError):
                document = None
            self._daemon = (document, holder_pid(self.paths.lock_path))
        return self._daemon


def current_status(env: DoctorEnv) -> dict:
    """The status document: the daemon's when one answers, else built from the run history."""
    document, pid = env.daemon()
    return document if document is not None else offline_status(env.paths.history_path, env.loaded, pid)


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


def _user_name(uid: int | None = None) -> str:
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# --- Python and packages -----------------------------------------------------------


def _own_requirements() -> tuple[str | None, list[str]]:
    """(requires-python, requirement strings) of pmjobsd: the source tree's pyproject, else installed metadata."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        try:
            import tomllib  # Python 3.11+

            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
            if project.get("name") == "pmjobsd":
                extras = project.get("optional-dependencies", {})
                optional = [f"{req}; extra == \"{name}\"" if ";" not in req else f"{req} and extra == \"{name}\""
                            for name, reqs in extras.items() for req in reqs]
                return project.get("requires-python"), list(project.get("dependencies", [])) + optional
        except (ImportError, ValueError, OSError):
            pass
    try:
        dist = metadata.distribution("pmjobsd")
    except metadata.PackageNotFoundError:
        return None, []
    return dist.metadata.get("Requires-Python"), list(dist.requires or [])


def check_python(env: DoctorEnv) -> Check:
    from packaging.specifiers import SpecifierSet

    required, _ = _own_requirements()
    version = platform.python_version()
    if required and version not in SpecifierSet(required):
        return fail("python", f"Python {version} at {sys.executable}; pmjobsd needs {required}",
                    f"install Python {required} and reinstall pmjobsd with it")
    return ok("python", f"Python {version} ({sys.executable})" + (f", needs {required}" if required else ""))


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()  # scans every installed distribution: once per process


def _modules_of(dist_name: str) -> list[str]:
    """Top-level modules a distribution provides (``python-json-logger`` -> ``pythonjsonlogger``)."""
    from packaging.utils import canonicalize_name

    wanted = canonicalize_name(dist_name)
    modules = [module for module, dists in _packages_distributions().items()
               if any(canonicalize_name(d) == wanted for d in dists) and not module.startswith("_")]
    return sorted(modules) or [dist_name.replace("-", "_")]


def requirement_problem(requirement) -> str | None:
    """None when ``requirement`` is installed at a supported version and importable, else why not."""
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return f"{requirement.name} is not installed"
    if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
        return f"{requirement.name} {installed} is installed, {requirement.specifier} is needed"
    for module in _modules_of(requirement.name)[:1]:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken install raises anything from ImportError to OSError
            return f"{requirement.name} {installed} does not import ({type(exc).__name__}: {scrub_text(str(exc))[:120]})"
    return None


def _split_requirements() -> tuple[list, dict[str, list]]:
    from packaging.requirements import Requirement

    _, strings = _own_requirements()
    required, optional = [], {}
    for text in strings:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            required.append(requirement)
            continue
        for extra in ("systemd",):  # the runtime extras; "test" is for developers
            if requirement.marker.evaluate({"extra": extra}):
                optional.setdefault(extra, []).append(requirement)
    return required, optional


def check_dependencies(env: DoctorEnv) -> list[Check]:
    required, optional = _split_requirements()
    checks = []
    problems = [(req, problem) for req in required if (problem := requirement_problem(req))]
    if not required:
        checks.append(warn("dependencies", "cannot find pmjobsd's requirements (not installed as a package)",
                           "install pmjobsd with pip: pip install ."))
    elif problems:
        checks.append(fail("dependencies", "; ".join(problem for _, problem in problems),
                           "pip install " + " ".join(_q(str(req).split(";")[0]) for req, _ in problems)))
    else:
        checks.append(ok("dependencies", f"{len(required)} required packages importable at supported versions"))
    for extra, requirements in optional.items():
        problems = [(req, problem) for req in requirements if (problem := requirement_problem(req))]
        if problems:
            checks.append(ok(f"optional.{extra}", "optional, not usable: " + "; ".join(p for _, p in problems)
                             + " (journald gets plain lines, no sd_notify)"))
        else:
            checks.append(ok(f"optional.{extra}", "optional, installed: " + ", ".join(
                f"{req.name} {metadata.version(req.name)}" for req in requirements)))
    return checks


def qt_platform_plugin_dir() -> Path | None:
    """PyQt5's ``plugins/platforms`` folder: the wheel's bundled Qt, else what QLibraryInfo says."""
    spec = importlib.util.find_spec("PyQt5")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        for qt in ("Qt5", "Qt"):
            candidate = Path(base) / qt / "plugins" / "platforms"
            if candidate.is_dir():
                return candidate
    try:
        from PyQt5.QtCore import QLibraryInfo

        folder = Path(QLibraryInfo.location(QLibraryInfo.PluginsPath)) / "platforms"
        return folder if folder.is_dir() else None
    except Exception:
        return None


def check_app_gui(env: DoctorEnv) -> Check:
    """The app's GUI (optional for pmjobsd): PyQt5 at the app's version and its platform plugin."""
    from packaging.requirements import Requirement

    try:
        app = metadata.distribution("secure-password-manager")
    except metadata.PackageNotFoundError:
        return ok("optional.gui", "optional: the app (secure-password-manager) is not installed in this Python")
    wanted = next((Requirement(r) for r in app.requires or [] if Requirement(r).name.lower() == "pyqt5"), None)
    if wanted is None:
        return ok("optional.gui", f"optional: secure-password-manager {app.version} does not use PyQt5")
    problem = requirement_problem(wanted)
    if problem:
        return warn("optional.gui", f"optional, the app's GUI (password-manager-gui) cannot start: {problem}",
                    f"pip install {_q(str(wanted))}  (not needed by pmjobsd)")
    plugin_name = QT_PLATFORM_PLUGINS.get("darwin" if env.platform == "darwin" else "linux")
    folder = qt_platform_plugin_dir()
    if folder is None or not (folder / plugin_name).exists():
        return warn("optional.gui", f"optional, PyQt5 {metadata.version('PyQt5')} lacks its Qt platform plugin {plugin_name}",
                    "pip install --force-reinstall PyQt5-Qt5  (not needed by pmjobsd)")
    return ok("optional.gui", f"optional, PyQt5 {metadata.version('PyQt5')} with {plugin_name} ({folder})")


# --- settings and the app's files ------------------------------------------------------


def check_settings(env: DoctorEnv) -> Check:
    loaded, path = env.loaded, env.loaded.source
    if not Path(path).exists():
        return ok("settings", f"{path}: no such file; every job runs with its defaults")
    if loaded.ok:
        return ok("settings", f"{path}: valid ({len(loaded.jobs)} jobs)")
    issues = "; ".join(scrub_text(str(issue)) for issue in loaded.issues[:5])
    more = f" (+{len(loaded.issues) - 5} more)" if len(loaded.issues) > 5 else ""
    hint = f"fix these keys, then check with: pmjobsd config validate {_q(path)}"
    if loaded.fatal:
        return fail("settings", f"{path}: invalid, the daemon uses the defaults: {issues}{more}", hint)
    return warn("settings", f"{path}: {len(loaded.job_errors)} job(s) disabled by errors: {issues}{more}", hint)


def check_vault(env: DoctorEnv) -> Check:
    path = env.paths.vault_path
    try:
        read_header(path)
        count = read_vault(path, lambda conn: conn.execute("SELECT count(*) FROM passwords").fetchone()[0],
                           lock_timeout=min(env.timeout, 5.0)).value
    except VaultError as exc:
        if exc.reason == "missing":
            return warn("files.vault", f"no vault at {path}",
                        "start the app once to create it, or point pmjobsd at its folder with --data-dir")
        if exc.reason == "locked":
            return warn("files.vault", str(exc), "run the doctor again when the app is idle")
        return fail("files.vault", str(exc), f"restore the vault from a backup in {_q(env.paths.backups_dir)}")
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
        user = _user_name()
        return fail(name, f"{len(foreign)} of {what} not owned by {user}: " + ", ".join(str(p) for p in foreign),
                    f"chown {user} " + " ".join(_q(p) for p in foreign))
    if loose:
        names = ", ".join(f"{p} ({stat.S_IMODE(p.lstat().st_mode):04o})" for p in loose)
        return Check(name, loose_status, f"{what} open to group/others: {names}",
                     f"chmod {mode:o} " + " ".join(_q(p) for p in loose))
    return ok(name, f"{len(present)} {what}: {mode:04o} or stricter, owned by {_user_name()}")


def check_secret_files(env: DoctorEnv) -> Check:
    """The vault, its -wal/-shm, the key files and the backups (each holds the vault): 0600."""
    paths = env.paths
    files = [paths.vault_path, *(Path(f"{paths.vault_path}{s}") for s in ("-wal", "-shm", "-journal")), *paths.key_files]
    if paths.backups_dir.is_dir():
        files += sorted(paths.backups_dir.glob("*.zip"))
    return _permission_check("files.secrets", "vault, key and backup files", files, 0o600, Status.FAIL)


def check_settings_file(env: DoctorEnv) -> Check:
    """settings.json may hold webhook URLs and tokens: not for other users to read."""
    return _permission_check("files.settings", "settings file", [env.loaded.source], 0o600, Status.WARN)


def _folders(paths: AppPaths) -> list[Path]:
    found: list[Path] = []
    for folder in (paths.data_dir, paths.config_dir, paths.cache_dir, paths.backups_dir, paths.app_log_path.parent,
                   paths.log_dir, paths.state_dir):
        if folder not in found:
            found.append(folder)
    return found


def check_folders(env: DoctorEnv) -> Check:
    return _permission_check("files.folders", "folders", _folders(env.paths), 0o700, Status.WARN)


# --- disk and writability ---------------------------------------------------------------


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def check_disk(env: DoctorEnv) -> list[Check]:
    """Free space of each file system holding the data, log, state and cache folders."""
    groups: dict[int, list[tuple[str, Path]]] = {}
    for label, folder in (("data", env.paths.data_dir), ("logs", env.paths.log_dir),
                          ("state", env.paths.state_dir), ("cache", env.paths.cache_dir)):
        device = _existing(folder).stat().st_dev
        groups.setdefault(device, []).append((label, folder))
    checks = []
    for members in groups.values():
        label, folder = members[0]
        name = "disk." + "+".join(label for label, _ in members)
        info = env.statvfs(str(_existing(folder)))
        free, total = info.f_bavail * info.f_frsize, info.f_blocks * info.f_frsize
        fraction = free / total if total else 0.0
        where = ", ".join(str(f) for _, f in members)
        message = f"{_size(free)} free ({fraction:.0%}) for {where}"
        hint = f"free space on the file system of {_q(folder)} (see: du -sh {_q(folder)}/*; pmjobsd logs purge --days 7)"
        if free < DISK_FAIL_BYTES:
            checks.append(fail(name, message, hint))
        elif free < DISK_WARN_BYTES or fraction < DISK_WARN_FRACTION:
            checks.append(warn(name, message, hint))
        else:
            checks.append(ok(name, message))
    return checks


def _writable_problem(folder: Path) -> tuple[str, str] | None:
    """None when pmjobsd can create a file in ``folder`` (or create the folder), else (message, hint)."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} is not a folder", f"move it away: mv {_q(folder)} {_q(str(folder) + '.old')}"
    target = folder if folder.exists() else _existing(folder)
    if not target.is_dir():
        return f"{target} is not a folder", f"move it away: mv {_q(target)} {_q(str(target) + '.old')}"
    try:
        fd, probe = tempfile.mkstemp(prefix=".pmjobsd-doctor-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        info = target.stat()
        if info.st_uid != os.getuid():
            hint = f"chown {_user_name()} {_q(target)}"
        elif exc.errno == errno.EPERM:
            hint = f"chattr -i {_q(target)}  (the folder is immutable)"
        elif exc.errno == errno.EROFS:
            hint = f"mount {_q(target)} read-write, or move the folder with --data-dir / --log-dir"
        else:
            hint = f"chmod 700 {_q(target)}"
        return f"cannot write in {target}: {exc.strerror}", hint
    return None


def check_writable(env: DoctorEnv) -> list[Check]:
    """Each folder pmjobsd writes: its log and state, the app's log folder (rotation), the breach cache."""
    checks, seen = [], set()
    for label, folder in (("logs", env.paths.log_dir), ("state", env.paths.state_dir),
                          ("app_logs", env.paths.app_log_path.parent), ("cache", env.paths.cache_dir)):
        if folder in seen:
            continue
        seen.add(folder)
        problem = _writable_problem(folder)
        if problem:
            checks.append(fail(f"writable.{label}", *problem))
        elif folder.exists():
            checks.append(ok(f"writable.{label}", f"{folder} is writable"))
        else:
            checks.append(ok(f"writable.{label}", f"{folder} does not exist yet; pmjobsd creates it (0700)"))
    return checks


# --- service manager, daemon, jobs ---------------------------------------------------------


def _plans(env: DoctorEnv) -> list[service.Plan]:
    plans = []
    for scope in ("user", "system"):
        try:
            plans.append(service.make_plan(scope, platform=env.platform, command=("pmjobsd",)))
        except service.ServiceError:
            pass  # e.g. system scope for root without --user-name: nothing to look for
    return plans


def _active_command(plan: service.Plan) -> tuple[str, ...]:
    argv = plan.status[0].argv
    if plan.manager == "launchd":
        return argv  # `launchctl print TARGET` succeeds only when the job is loaded
    return (*argv[: argv.index("--no-pager")], "is-active", "--quiet", argv[-1])


def check_service(env: DoctorEnv) -> Check:
    document, _ = env.daemon()
    for plan in _plans(env):
        unit = service._under(env.service_root, plan.unit_path)
        if not unit.exists():
            continue
        flag = "--user" if plan.scope == "user" else "--system"
        if env.run_command(_active_command(plan)) == 0:
            return ok("service", f"{plan.manager} {plan.scope} service installed ({unit}) and active")
        start = str(plan.install[-1])
        return warn("service", f"{plan.manager} {plan.scope} service installed ({unit}) but not active",
                    f"start it: {start}  (or reinstall: pmjobsd service install {flag})")
    if document is not None:
        return ok("service", "no systemd unit or launchd agent installed; a daemon started by hand answers")
    manager = "launchd agent" if env.platform == "darwin" else "systemd unit"
    return warn("service", f"no {manager} installed", "pmjobsd service install --user  (or --system on a headless server)")


def check_daemon(env: DoctorEnv) -> Check:
    document, pid = env.daemon()
    if document is not None:
        daemon = document.get("daemon", {})
        return ok("daemon", f"pmjobsd {daemon.get('version')} answers on the control socket (pid {daemon.get('pid')},"
                            f" since {daemon.get('started_at')})")
    sockets = " or ".join(str(p) for p in env.paths.control_socket_candidates)
    if pid is not None:
        return fail("daemon", f"pid {pid} holds {env.paths.lock_path} but nobody answers on {sockets}",
                    f"restart it: kill -TERM {pid}, then start it again (systemctl --user restart pmjobsd.service)")
    return warn("daemon", "no daemon running", "start it: pmjobsd service install --user  (or pmjobsd run --detach)")


def check_threads(env: DoctorEnv) -> Check:
    document, _ = env.daemon()
    if document is None:
        return ok("daemon.threads", "no daemon running: no abandoned threads")
    count = document.get("daemon", {}).get("abandoned_threads") or 0
    if count:
        jobs = ", ".join(f"{job['name']} ({job['abandoned_threads']})" for job in document.get("jobs", [])
                         if job.get("abandoned_threads"))
        return warn("daemon.threads", f"{count} timed-out job thread(s) still running: {jobs or 'unknown jobs'}",
                    "restart the daemon when idle (systemctl --user restart pmjobsd.service) and raise the job's timeout")
    return ok("daemon.threads", "no abandoned threads")


_JOB_STATUS = {"OK": Status.OK, "RUNNING": Status.OK, "NEVER_RUN": Status.OK, "DISABLED": Status.OK,
               "WARN": Status.WARN, "FAIL": Status.FAIL}


def check_jobs(env: DoctorEnv) -> list[Check]:
    """The latest result of every job, from the daemon or the run history."""
    checks = []
    for job in current_status(env).get("jobs", []):
        name, state = job["name"], job["status"]
        last = job.get("last_run") or {}
        if job.get("config_errors"):
            checks.append(fail(f"job.{name}", "not scheduled: " + scrub_text("; ".join(job["config_errors"])),
                               f"fix jobs.definitions.{name} in {_q(env.loaded.source)}, then: pmjobsd config validate"))
            continue
        if state == "NEVER_RUN":
            checks.append(ok(f"job.{name}", f"never run yet; next run {job.get('next_run') or '-'}"))
            continue
        if state == "DISABLED":
            checks.append(ok(f"job.{name}", "disabled"))
            continue
        summary = scrub_text(last.get("summary") or "")
        message = f"{last.get('status', state)} at {last.get('started_at')}" + (f": {summary}" if summary else "")
        if job.get("consecutive_failures"):
            message += f" ({job['consecutive_failures']} failures in a row)"
        status = _JOB_STATUS.get(state, Status.FAIL)
        hint = "" if status is Status.OK else (
            f"details: grep {last.get('run_id')} {_q(env.paths.jobs_log_path)}; after fixing: pmjobsd run-now {name} --wait")
        checks.append(Check(f"job.{name}", status, message, hint))
    return checks


# --- online -------------------------------------------------------------------------------------


def breach_api_base(env: DoctorEnv) -> str:
    if env.breach_api_base:
        return env.breach_api_base
    definitions = (env.loaded.app_settings.get("jobs") or {}).get("definitions") or {}
    options = (definitions.get("breach_cache_refresh") or {}).get("options") or {} if isinstance(definitions, dict) else {}
    base = options.get("api_base") if isinstance(options, dict) else None
    return base if isinstance(base, str) and base else DEFAULT_BREACH_API


def check_breach_api(env: DoctorEnv) -> Check:
    """``GET {api_base}/range/00000``: a k-anonymous request (a prefix, no password) that must list hash suffixes."""
    url = breach_api_base(env).rstrip("/") + "/range/00000"
    shown = scrub_text(url)
    started = time.monotonic()
    try:
        response = requests.get(url, timeout=env.timeout, headers={"User-Agent": f"pmjobsd/{__version__} doctor"})
    except requests.RequestException as exc:
        return fail("online.breach_api", f"{shown}: {type(exc).__name__}",
                    "check the network, a proxy (HTTPS_PROXY) and the breach_cache_refresh api_base option")
    latency = (time.monotonic() - started) * 1000
    first = response.text.splitlines()[0] if response.ok and response.text else ""
    if response.status_code != 200 or not _HASH_LINE.match(first):
        return fail("online.breach_api", f"{shown}: unexpected answer (HTTP {response.status_code})",
                    "check the breach_cache_refresh api_base option and any proxy in between")
    return ok("online.breach_api", f"{shown} answers in {latency:.0f} ms")


def check_bridge(env: DoctorEnv) -> Check:
    from .jobs import browser_bridge_health as bridge_job

    try:
        bridge = bridge_job.bridge_settings(dict(env.loaded.app_settings), env.loaded.source)
    except ValueError as exc:
        return fail("online.bridge", str(exc), f"fix browser_bridge in {_q(env.loaded.source)}")
    if not bridge["enabled"]:
        return ok("online.bridge", "browser bridge disabled in the app's settings")
    problems = []
    try:
        latency, _ = bridge_job.probe_http(bridge["host"], bridge["port"], bool(bridge["enable_tls"]),
                                           env.paths.bridge_cert_path, env.timeout)
    except bridge_job.ProbeFailure as exc:
        problems.append(f"HTTP: {exc.reason}")
    if bridge["enable_domain_socket"]:
        socket_path = env.paths.bridge_socket_path or env.paths.data_dir / "sockets" / "bridge.sock"
        try:
            bridge_job.probe_socket(socket_path, env.timeout)
        except bridge_job.ProbeFailure as exc:
            problems.append(exc.reason)
    where = f"{bridge['host']}:{bridge['port']}"
    if not problems:
        return ok("online.bridge", f"browser bridge at {where} answers in {latency:.0f} ms")
    running = env.is_app_running() if env.is_app_running else bridge_job.app_running(bridge_job.app_commands())
    if not running:
        return ok("online.bridge", f"browser bridge at {where} not answering: the app is not running")
    return fail("online.bridge", f"browser bridge at {where} unreachable while the app runs: {'; '.join(problems)}",
                "restart the app; check browser_bridge.port and enable_tls in settings.json")


# --- running and reporting ------------------------------------------------------------------------

CheckFunction = Callable[[DoctorEnv], "Check | list[Check]"]
OFFLINE_CHECKS: tuple[CheckFunction, ...] = (
    check_python, check_dependencies, check_app_gui, check_settings, check_vault, check_secret_files,
    check_settings_file, check_folders, check_disk, check_writable, check_service, check_daemon, check_threads,
    check_jobs,
)
ONLINE_CHECKS: tuple[CheckFunction, ...] = (check_breach_api, check_bridge)


def run_checks(env: DoctorEnv, checks: Sequence[CheckFunction] | None = None) -> list[Check]:
    """Run ``checks`` (default: all, the online ones only with ``env.online``); never raise."""
    if checks is None:
        checks = OFFLINE_CHECKS + (ONLINE_CHECKS if env.online else ())
    results: list[Check] = []
    for function in checks:
        name = function.__name__.removeprefix("check_")
        try:
            outcome = function(env)
        except Exception as exc:  # one broken check must not hide the others
            outcome = fail(name, f"the check itself failed: {type(exc).__name__}: {scrub_text(str(exc))[:200]}",
                           "report this with the support bundle: pmjobsd logs bundle")
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


def exit_code(checks: Sequence[Check]) -> int:
    """0 all OK, 1 any WARN, 2 any FAIL."""
    return max((check.status.severity for check in checks), default=0)


def report(checks: Sequence[Check], now: datetime | None = None) -> dict[str, Any]:
    """The ``--json`` document."""
    code = exit_code(checks)
    return {
        "generated_at": (now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "pmjobsd_version": __version__,
        "status": {0: "OK", 1: "WARN", 2: "FAIL"}[code],
        "exit_code": code,
        "checks": [check.as_dict() for check in checks],
    }


def render_text(checks: Sequence[Check]) -> str:
    """One line per check: status, name, message and, when not OK, what to do."""
    width = max((len(check.name) for check in checks), default=10)
    lines = []
    for check in checks:
        line = f"{check.status.value:<4}  {check.name:<{width}}  {check.message}"
        if check.hint and check.status is not Status.OK:
            line += f"  -> {check.hint}"
        lines.append(line)
    lines.append(f"overall: {report(checks)['status']}")
    return "\n".join(lines)
