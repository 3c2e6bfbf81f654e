"""Checks of the machine: free disk space, writable folders, the service manager, the running daemon."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from pmjobsd.diagnostics.doctor.env import Check, DoctorEnv, fail, ok, shell_quote, user_name, warn
from pmjobsd.system import service

GIB = 1 << 30
MIB = 1 << 20
DISK_WARN_BYTES = 1 * GIB
DISK_WARN_FRACTION = 0.05
DISK_FAIL_BYTES = 100 * MIB


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def check_disk(env: DoctorEnv) -> list[Check]:
    """Free space of each file system holding the data, log, state and cache folders."""
    groups: dict[int, list[tuple[str, Path]]] = {}
    for label, folder in (
        ("data", env.paths.data_dir),
        ("logs", env.paths.log_dir),
        ("state", env.paths.state_dir),
        ("cache", env.paths.cache_dir),
    ):
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
        hint = f"free space on the file system of {shell_quote(folder)} (see: du -sh {shell_quote(folder)}/*; pmjobsd logs purge --days 7)"
        if free < DISK_FAIL_BYTES:
            checks.append(fail(name, message, hint))
        elif free < DISK_WARN_BYTES or fraction < DISK_WARN_FRACTION:
            checks.append(warn(name, message, hint))
        else:
            checks.append(ok(name, message))
    return checks


def _writable_problem(folder: Path) -> tuple[str, str] | None:
    """None when pmjobsd can create a file in ``folder`` (or create the folder), else (message, hint)."""
    target = _existing(folder)
    if not target.is_dir():
        return (
            f"{target} is not a folder",
            f"move it away: mv {shell_quote(target)} {shell_quote(str(target) + '.old')}",
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".pmjobsd-doctor-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        info = target.stat()
        if info.st_uid != os.getuid():
            hint = f"chown {user_name()} {shell_quote(target)}"
        elif exc.errno == errno.EPERM:
            hint = f"chattr -i {shell_quote(target)}  (the folder is immutable)"
        elif exc.errno == errno.EROFS:
            hint = f"mount {shell_quote(target)} read-write, or move the folder with --data-dir / --log-dir"
        else:
            hint = f"chmod 700 {shell_quote(target)}"
        return f"cannot write in {target}: {exc.strerror}", hint
    return None


def check_writable(env: DoctorEnv) -> list[Check]:
    """Each folder pmjobsd writes: its log and state, the app's log folder (rotation), the breach cache."""
    checks, seen = [], set()
    for label, folder in (
        ("logs", env.paths.log_dir),
        ("state", env.paths.state_dir),
        ("app_logs", env.paths.app_log_path.parent),
        ("cache", env.paths.cache_dir),
    ):
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
        return warn(
            "service",
            f"{plan.manager} {plan.scope} service installed ({unit}) but not active",
            f"start it: {start}  (or reinstall: pmjobsd service install {flag})",
        )
    if document is not None:
        return ok("service", "no systemd unit or launchd agent installed; a daemon started by hand answers")
    manager = "launchd agent" if env.platform == "darwin" else "systemd unit"
    return warn(
        "service", f"no {manager} installed", "pmjobsd service install --user  (or --system on a headless server)"
    )


def check_daemon(env: DoctorEnv) -> Check:
    document, pid = env.daemon()
    if document is not None:
        daemon = document.get("daemon", {})
        return ok(
            "daemon",
            f"pmjobsd {daemon.get('version')} answers on the control socket (pid {daemon.get('pid')},"
            f" since {daemon.get('started_at')})",
        )
    sockets = " or ".join(str(p) for p in env.paths.control_socket_candidates)
    if pid is not None:
        return fail(
            "daemon",
            f"pid {pid} holds {env.paths.lock_path} but nobody answers on {sockets}",
            f"restart it: kill -TERM {pid}, then start it again (systemctl --user restart pmjobsd.service)",
        )
    return warn("daemon", "no daemon running", "start it: pmjobsd service install --user  (or pmjobsd run --detach)")


def check_threads(env: DoctorEnv) -> Check:
    document, _ = env.daemon()
    if document is None:
        return ok("daemon.threads", "no daemon running: no abandoned threads")
    count = document.get("daemon", {}).get("abandoned_threads") or 0
    if count:
        jobs = ", ".join(
            f"{job['name']} ({job['abandoned_threads']})"
            for job in document.get("jobs", [])
            if job.get("abandoned_threads")
        )
        return warn(
            "daemon.threads",
            f"{count} timed-out job thread(s) still running: {jobs or 'unknown jobs'}",
            "restart the daemon when idle (systemctl --user restart pmjobsd.service) and raise the job's timeout",
        )
    return ok("daemon.threads", "no abandoned threads")
