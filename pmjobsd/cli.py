"""The ``pmjobsd`` command line (docs/architecture.md, "Contracts")."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pmjobsd import __version__

# Each command imports what it needs when it runs: `--version` and `status` must not pay for
# settings validation, requests, apprise, prometheus_client or the daemon (issue 16; tests/test_imports.py).
if TYPE_CHECKING:
    from pmjobsd.app.paths import AppPaths
    from pmjobsd.core.settings import LoadedSettings
    from pmjobsd.system.lock import InstanceLock

EXIT_USAGE = 2
T = TypeVar("T")
# The seed blueprint's spellings (`password-manager --jobs status`, `--doctor`, `--logs bundle`).
ALIASES = {"--jobs": [], "--doctor": ["doctor"], "--logs": ["logs"]}
FOLDER_FLAGS = ("data_dir", "config_dir", "cache_dir", "log_dir", "settings")
FOLDER_OPTIONS = tuple("--" + name.replace("_", "-") for name in FOLDER_FLAGS)


def _add_folder_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("folders (default: the app's XDG folders)")
    group.add_argument("--data-dir", default=default, help="the app's data folder (vault, backups, logs)")
    group.add_argument("--config-dir", default=default, help="the app's config folder (settings.json)")
    group.add_argument("--cache-dir", default=default, help="the app's cache folder (breach_cache.json)")
    group.add_argument("--log-dir", default=default, help="folder of jobs.log (default: <data dir>/logs)")
    group.add_argument("--settings", default=default, metavar="PATH", help="another settings.json of the same shape")


def _build_run(run: argparse.ArgumentParser) -> None:
    run.add_argument("--detach", action="store_true", help="detach from the terminal (where no service manager runs)")
    run.add_argument("--pidfile", type=Path, help="a pid file to lock and write while the daemon runs")
    console = run.add_mutually_exclusive_group()
    console.add_argument(
        "--console",
        dest="console",
        action="store_const",
        const=True,
        default=None,
        help="human-readable log lines on stderr (default: when stderr is a terminal)",
    )
    console.add_argument("--no-console", dest="console", action="store_const", const=False)


def _build_status(status: argparse.ArgumentParser) -> None:
    status.add_argument("--json", action="store_true", help="the status document as JSON")
    status.add_argument(
        "--group",
        action="store_true",
        help="the coordination group from Redis: members and the latest run of each vault job (daemon not needed)",
    )


def _build_run_now(run_now: argparse.ArgumentParser) -> None:
    run_now.add_argument("job")
    run_now.add_argument("--wait", action="store_true", help="wait for the run to finish; exit with its status")
    run_now.add_argument("--json", action="store_true")


def _action(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=help_text, description=help_text)
    _add_folder_flags(sub, suppress=True)
    return sub


def _build_config(config: argparse.ArgumentParser) -> None:
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    validate = _action(config_commands, "validate", "check a settings file; exit 1 when invalid")
    validate.add_argument("path", nargs="?", type=Path)
    _action(config_commands, "show", "the effective settings (secrets redacted)")
    _action(config_commands, "schema", 'JSON Schema of the "jobs" key')


def _build_doctor(doctor: argparse.ArgumentParser) -> None:
    doctor.add_argument("--json", action="store_true", help="the report as JSON")
    doctor.add_argument(
        "--online", action="store_true", help="also check that the breach API and the browser bridge answer"
    )


def _build_logs(logs: argparse.ArgumentParser) -> None:
    logs_commands = logs.add_subparsers(dest="logs_command", metavar="ACTION", required=True)
    bundle = _action(logs_commands, "bundle", "write a redacted zip of logs, status and doctor report for support")
    bundle.add_argument(
        "-o", "--output", type=Path, metavar="PATH", help="zip file or folder (default: the current folder)"
    )
    bundle.add_argument("--days", type=int, default=7, help="days of run history to include (default: 7)")
    purge = _action(logs_commands, "purge", "delete log archives and run history older than N days")
    purge.add_argument("--days", type=int, required=True, help="keep this many days (at least 1)")
    purge.add_argument("--json", action="store_true", help="the report as JSON")


def _build_service(service_parser: argparse.ArgumentParser) -> None:
    service_parser.add_argument("action", choices=("install", "uninstall", "status"))
    scope = service_parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--user",
        dest="scope",
        action="store_const",
        const="user",
        default="user",
        help="a per-user service that starts at login (default)",
    )
    scope.add_argument(
        "--system",
        dest="scope",
        action="store_const",
        const="system",
        help="a system service running as the vault's owner (headless servers)",
    )
    service_parser.add_argument("--user-name", help="the vault's owner for --system (default: $SUDO_USER)")
    service_parser.add_argument("--dry-run", action="store_true", help="print the files and commands, change nothing")


# name -> (help, what its parser holds), in the order `pmjobsd --help` lists them.
_COMMAND_PARSERS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("run the daemon (in the foreground unless --detach)", _build_run),
    "status": ("show each job's state; exit 0 OK, 1 WARN, 2 FAIL", _build_status),
    "run-now": ("run one job now (through the running daemon when there is one)", _build_run_now),
    "config": ("validate, show or describe the settings", _build_config),
    "doctor": ("check the installation, the app's files and the daemon; exit 0 OK, 1 WARN, 2 FAIL", _build_doctor),
    "logs": ("support bundle and retention of logs and run history", _build_logs),
    "service": ("install, remove or inspect the systemd unit / launchd agent", _build_service),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``only``, the other commands are there by name and help alone.

    Every command's parser costs its arguments and folder flags to build (~15 M instructions
    for all of them); a call that names its command needs that command's only.
    """
    parser = argparse.ArgumentParser(prog="pmjobsd", description="Background job daemon of Secure Password Manager.")
    parser.add_argument("--version", action="version", version=f"pmjobsd {__version__}")
    _add_folder_flags(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, build) in _COMMAND_PARSERS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            _add_folder_flags(sub, suppress=True)
            build(sub)
    return parser


def _command_word(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names, when that is certain before parsing (else None: build every parser)."""
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in FOLDER_OPTIONS:
            index += 2  # the flag and its value
        elif arg.partition("=")[0] in FOLDER_OPTIONS:
            index += 1
        elif arg.startswith("-"):
            return None  # --help, --version, an abbreviated option: argparse decides
        else:
            return arg if arg in _COMMAND_PARSERS else None
    return None


def _expand_aliases(argv: list[str]) -> list[str]:
    """Rewrite the blueprint's spellings (``--jobs status``) before the command word, past any folder flags."""
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in ALIASES:
            return argv[:index] + ALIASES[arg] + argv[index + 1 :]
        if arg in FOLDER_OPTIONS:
            index += 2  # the flag and its value
            continue
        if not arg.startswith("-"):
            break
        index += 1
    return argv


def _paths(args: argparse.Namespace) -> tuple[AppPaths, dict[str, Any]]:
    from pmjobsd.app.paths import AppPaths

    values = {key: getattr(args, key, None) for key in FOLDER_FLAGS}
    base = AppPaths.resolve(**values)
    return base, {key: values[key] for key in ("data_dir", "cache_dir", "log_dir")}


def _effective_paths(
    args: argparse.Namespace, import_jobs: bool = False, check_builtins: bool = False
) -> tuple[AppPaths, LoadedSettings]:
    """The folders and the settings; a user job's module is imported only with ``import_jobs`` (run-now),
    the built-in jobs' implementations only with ``check_builtins`` (doctor reports one that does not import)."""
    from pmjobsd.core.settings import app_folders, load_settings

    base, overrides = _paths(args)
    loaded = load_settings(
        base.settings_path, base=base, cli_overrides=overrides, import_jobs=import_jobs, check_builtins=check_builtins
    )
    return app_folders(base, loaded.settings, overrides), loaded


def _print_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2, default=str))


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon; any failure to start is one line on stderr and exit 1 (detached: from the starter too)."""
    # Starting makes tens of thousands of objects that live as long as the daemon (modules, classes, the
    # settings) and next to no garbage: the cyclic collector would only walk them (~2% of the start).  It is
    # off until the daemon is ready (or has failed to start).
    gc.disable()
    try:
        return _run_daemon(args)
    finally:
        gc.enable()


def _run_daemon(args: argparse.Namespace) -> int:
    from pmjobsd.core.daemon import Daemon, StartupError
    from pmjobsd.core.settings import app_folders, load_settings
    from pmjobsd.observe.journald import journal_handler
    from pmjobsd.system.files import ensure_private_dir
    from pmjobsd.system.lock import AlreadyRunning, InstanceLock, holder_pid

    base, overrides = _paths(args)
    handler = journal_handler()
    # Under journald, stderr *is* the journal: structured entries replace the console lines.
    console = False if handler is not None else args.console
    daemon = Daemon(base, cli_overrides=overrides, console=console, extra_log_handlers=[h for h in [handler] if h])
    daemon.on_ready = gc.enable
    try:
        if not args.detach:
            if args.pidfile is None:
                return daemon.run()
            with _held(InstanceLock(args.pidfile)):  # honoured in the foreground too
                return daemon.run()
        from pmjobsd.system.detach import detach  # python-daemon: only a detaching start needs it

        loaded = load_settings(base.settings_path, base=base, cli_overrides=overrides, import_jobs=False)
        paths = app_folders(base, loaded.settings, overrides)
        holder = holder_pid(paths.lock_path)
        if holder is not None:  # say it here, before forking
            raise AlreadyRunning(paths.lock_path, holder)
        pidfile = args.pidfile or paths.state_dir / "detached.pid"
        if args.pidfile is None:
            _refuse_unsafe(lambda: ensure_private_dir(paths.state_dir))
        # Fork before any thread or lock exists; the daemon installs its own signal handlers.
        # The starter waits in detach() and leaves with the daemon's verdict (0 once it is ready).
        with _refuse_unsafe(lambda: detach(pidfile, signal_map={})) as detached:

            def ready() -> None:
                gc.enable()
                detached.ready()

            daemon.on_ready = ready
            return daemon.run()
    except AlreadyRunning as exc:
        print(f"pmjobsd: {exc}", file=sys.stderr)
        return 1
    except StartupError as exc:
        print(f"pmjobsd: cannot start: {exc}", file=sys.stderr)
        return 1


def _refuse_unsafe(step: Callable[[], T]) -> T:
    """Run a start-up step; an OSError (a link, a read-only folder) becomes a StartupError."""
    from pmjobsd.core.daemon import StartupError
    from pmjobsd.system.files import describe_error
    from pmjobsd.system.lock import AlreadyRunning

    try:
        return step()
    except AlreadyRunning:
        raise
    except OSError as exc:
        raise StartupError(describe_error(exc)) from exc


@contextmanager
def _held(lock: InstanceLock) -> Iterator[InstanceLock]:
    _refuse_unsafe(lock.acquire)
    try:
        yield lock
    finally:
        lock.release()


def _ask_daemon(paths: AppPaths, message: dict[str, Any], timeout: float | None = 10.0) -> dict[str, Any]:
    """Ask the daemon of ``paths`` over its control socket; a refused socket is named on stderr."""
    from pmjobsd.core import control

    return control.ask_daemon(
        paths.control_socket_candidates,
        message,
        timeout,
        trusted=control.trusted_uids(paths.state_dir),
        warn=lambda text: print(f"pmjobsd: {text}", file=sys.stderr),
    )


def _daemon_paths(args: argparse.Namespace) -> AppPaths | None:
    """The folders, when they can be known without validating the settings (else None).

    They depend on the settings only through ``jobs.paths`` and ``jobs.coordination`` (a state
    folder per member); with neither there (or every folder on the command line) they are the
    same whether the settings are valid or not, so asking the daemon needs neither settings
    validation nor the jobs' modules.
    """
    from pmjobsd.core.settings_file import read_settings_file

    base, overrides = _paths(args)
    jobs = read_settings_file(base.settings_path).data.get("jobs")
    if isinstance(jobs, dict) and jobs.get("coordination") is not None:
        return None  # the state folder is per member: the member name comes from validated settings
    if not all(overrides.values()) and isinstance(jobs, dict) and jobs.get("paths") not in (None, {}):
        return None
    return base.with_overrides(**overrides)


def cmd_status(args: argparse.Namespace) -> int:
    from pmjobsd.core import control
    from pmjobsd.observe.status import exit_code, offline_status, render_text

    if args.group:
        return _status_group(args)
    paths = _daemon_paths(args)
    loaded = None
    if paths is None:
        paths, loaded = _effective_paths(args)
    try:
        document = _ask_daemon(paths, {"cmd": "status"})["status"]
    except control.ControlError:
        from pmjobsd.system.lock import holder_pid

        if loaded is None:  # no daemon answers: the document is built here, from validated settings
            paths, loaded = _effective_paths(args)
        document = offline_status(paths.history_path, loaded, holder_pid(paths.lock_path))
    code = exit_code(document)
    if args.json:
        _print_json(document)
    else:
        print(render_text(document))
    return code


def _status_group(args: argparse.Namespace) -> int:
    """``status --group``: exit 0/1/2 like ``status``; 2 with one line when coordination is off or unreachable."""
    from pmjobsd.coord import engine, view
    from pmjobsd.coord.group import error_text

    _, loaded = _effective_paths(args)
    settings = loaded.settings.coordination
    if settings is None:
        broken = [str(issue) for issue in loaded.issues if issue.path.startswith("jobs.coordination")]
        if broken:  # the settings' own words: never the URL (core/settings.py)
            return _group_error(args, f"{loaded.source}: {'; '.join(broken)} (pmjobsd config validate)")
        return _group_error(args, f"coordination is off: {loaded.source} has no jobs.coordination")
    member = settings.member_name()
    header = {"group": settings.group, "engine": engine.display_url(settings.url), "member": member}
    vault = [name for name, job in loaded.jobs.items() if job.definition.scope == "vault" and job.definition.enabled]
    try:
        client = engine.connect(settings.url, member=f"{member}-status", timeout=5.0)
        try:
            document = {**header, **view.read_group(client, settings.group, vault_jobs=vault)}
        finally:
            client.close()
    except Exception as exc:  # redis-py's connection, timeout, TLS and authentication errors
        return _group_error(args, f"cannot reach the engine {header['engine']}: {error_text(exc)}", header)
    code = int(view.severity(document))
    if args.json:
        _print_json({**document, "severity": code})
    else:
        print(view.render_text(document))
    return code


def _group_error(args: argparse.Namespace, message: str, header: dict[str, Any] | None = None) -> int:
    from pmjobsd.core.privacy import escape_control

    if args.json:
        _print_json({**(header or {}), "error": message, "severity": 2})
    else:
        print(f"pmjobsd: {escape_control(message)}", file=sys.stderr)
    return 2


def cmd_run_now(args: argparse.Namespace) -> int:
    import sqlite3

    from pmjobsd.core import control
    from pmjobsd.core.outcomes import Status
    from pmjobsd.core.privacy import escape_control
    from pmjobsd.system.files import describe_error
    from pmjobsd.system.lock import holder_pid

    paths, loaded = _effective_paths(args, import_jobs=True)
    try:
        response = _ask_daemon(
            paths,
            {"cmd": "run-now", "job": args.job, "wait": args.wait},
            timeout=None if args.wait else 10.0,
        )
    except control.NoDaemon:
        holder = holder_pid(paths.lock_path)
        if holder is None:
            try:
                response = _run_in_process(paths, loaded, args.job)
            except (OSError, sqlite3.Error) as exc:  # e.g. a symlinked jobs.log: refused, one line
                response = {"ok": False, "error": f"cannot run {args.job} here: {describe_error(exc)}"}
        else:  # running it here too could run the job twice at once
            response = {"ok": False, "error": f"pmjobsd (pid {holder}) holds the lock but does not answer"}
    except control.ControlError as exc:  # the daemon got the request: it may be running the job
        response = {"ok": False, "error": str(exc)}
    if args.json:
        _print_json(response)
    if not response.get("ok"):
        if not args.json:
            print(f"pmjobsd: {response.get('error')}", file=sys.stderr)
        return EXIT_USAGE if "unknown job" in str(response.get("error")) else 2
    run = response.get("run")
    if not args.json:
        if run:
            outcome = run["summary"] or run.get("error") or ""  # the job's words: escaped for the terminal
            print(f"{run['job']}: {run['status']} in {run['duration_ms']} ms — {escape_control(outcome)}")
        else:
            print(f"{response['job']}: started (run_id {response['run_id']})")
    return Status(run["status"]).severity if run else 0


def _run_in_process(paths: AppPaths, loaded: LoadedSettings, name: str) -> dict[str, Any]:
    """No daemon: run the job here, recorded in the history and jobs.log like any run."""
    import time

    from pmjobsd.core.daemon import build_observers, run_summary
    from pmjobsd.core.history import RunHistory
    from pmjobsd.core.history_writer import HistoryWriter
    from pmjobsd.core.outcomes import Overlap, Trigger
    from pmjobsd.core.privacy import EntryIdHasher
    from pmjobsd.core.runner import Runner, RunRequest
    from pmjobsd.observe.joblog import setup_logging
    from pmjobsd.observe.status import DaemonState, build_status

    job = loaded.jobs.get(name)
    if job is None:
        if name in loaded.job_errors:
            return {"ok": False, "error": "; ".join(str(issue) for issue in loaded.job_errors[name])}
        return {"ok": False, "error": f"unknown job {name!r}; known jobs: {', '.join(sorted(loaded.jobs))}"}
    setup_logging(paths.jobs_log_path, console=False)
    with RunHistory(paths.history_path) as history:
        recorder = HistoryWriter(paths.history_path, reader=history)
        # The daemon's observers, so a FAIL alerts (with the same alert state) and the textfile is written.
        offline = DaemonState(running=False, pid=None, version=__version__, started_at=None)
        metrics, alerts = build_observers(loaded, paths, history, lambda: build_status(loaded, history, daemon=offline))
        metrics.set_jobs([name])
        metrics.declare_metrics({name: job.metrics})
        runner = Runner(
            max_workers=1,
            history=recorder,
            paths=paths,
            hash_entry_id=EntryIdHasher.from_file(paths.id_key_path),
            observers=[metrics, alerts],
            app_settings=lambda: dict(loaded.app_settings),
        )
        request = RunRequest(job, Trigger.MANUAL)
        runner.offer(request, Overlap.ALLOW)
        deadline = time.monotonic() + job.definition.timeout
        while not request.done.wait(max(0.0, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                runner.expire_overdue()
        runner.shutdown(0)
        recorder.close(timeout=10.0)
        alerts.close(timeout=10.0)  # deliver before the process ends
        metrics.close()
    if request.record is None:  # the attempt never got a history row (job.record_failed says why)
        return {"ok": False, "error": f"{name}: the run could not be recorded; see {paths.jobs_log_path}"}
    return {"ok": True, "job": name, "run_id": request.run_id, "run": run_summary(request.record), "daemon": False}


def cmd_config(args: argparse.Namespace) -> int:
    from pmjobsd.core.settings import describe, issue_text, load_settings, settings_schema

    base, overrides = _paths(args)
    if args.config_command == "schema":
        _print_json(settings_schema())
        return 0
    path = getattr(args, "path", None) or base.settings_path
    # A built-in job whose implementation does not import is reported here (the daemon finds out at its first run).
    loaded = load_settings(path, base=base, cli_overrides=overrides, import_jobs=False, check_builtins=True)
    if args.config_command == "show":
        _print_json(describe(loaded))
        for issue in loaded.issues:
            print(f"warning: {issue}", file=sys.stderr)
        return 0 if loaded.ok else 1
    if not Path(path).exists():
        print(f"{path}: no such file; every job runs with its defaults")
        return 0
    if loaded.ok:
        print(f"{path}: valid ({len(loaded.jobs)} jobs)")
        return 0
    for issue in loaded.issues:
        print(f"{path}: {issue_text(issue, path)}", file=sys.stderr)
    return 1


def cmd_logs(args: argparse.Namespace) -> int:
    # The bundle holds the doctor report: it names a built-in job that does not import, as doctor does.
    paths, loaded = _effective_paths(args, check_builtins=args.logs_command == "bundle")
    if args.logs_command == "purge":
        from pmjobsd.jobs.logs.retention import purge

        if args.days < 1:
            print(f"pmjobsd: --days must be at least 1, got {args.days}", file=sys.stderr)
            return EXIT_USAGE
        report = purge(paths, args.days, args.days, app_settings=loaded.app_settings)
        if args.json:
            _print_json(report.as_dict())
        else:
            print(report)
        return 0 if report.ok else 2
    if args.logs_command == "bundle":
        from pmjobsd.diagnostics.bundle import create_bundle
        from pmjobsd.diagnostics.doctor import DoctorEnv

        if args.days < 1:
            print(f"pmjobsd: --days must be at least 1, got {args.days}", file=sys.stderr)
            return EXIT_USAGE
        try:
            bundle = create_bundle(DoctorEnv(paths, loaded), args.output, days=args.days)
        except OSError as exc:
            print(f"pmjobsd: cannot write the bundle: {exc}", file=sys.stderr)
            return 1
        for item in bundle.omitted:
            print(f"left out {item['name']}: {item['reason']}", file=sys.stderr)
        print(bundle.path)
        return 0
    return EXIT_USAGE


def cmd_doctor(args: argparse.Namespace) -> int:
    from pmjobsd.diagnostics import doctor

    paths, loaded = _effective_paths(args, check_builtins=True)
    checks = doctor.run_checks(doctor.DoctorEnv(paths, loaded, online=args.online))
    if args.json:
        _print_json(doctor.report(checks))
    else:
        print(doctor.render_text(checks))
    return doctor.exit_code(checks)


def cmd_service(args: argparse.Namespace) -> int:
    from pmjobsd.system import service

    action = {"install": service.install, "uninstall": service.uninstall, "status": service.status}[args.action]
    return action(args.scope, args.dry_run, sys.stdout, user_name=args.user_name)


COMMANDS = {
    "run": cmd_run,
    "status": cmd_status,
    "run-now": cmd_run_now,
    "config": cmd_config,
    "doctor": cmd_doctor,
    "logs": cmd_logs,
    "service": cmd_service,
}


EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a writer that SIGPIPE ended


def _stdout_reader_gone() -> bool:
    """True when stdout is a pipe or socket nobody reads any more (poll reports an error on it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no stdout, or no poll() on this system
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code.  A reader that closed our stdout early (``| head -1``) ends the
    command quietly with 141, as SIGPIPE would end any other tool, instead of a traceback."""
    words = _expand_aliases(list(sys.argv[1:] if argv is None else argv))
    args = build_parser(_command_word(words)).parse_args(words)
    os.umask(0o077)  # every file and folder any command creates is private (0600 files, 0700 folders)
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a broken pipe shows here, not at interpreter exit where it is printed
    except BrokenPipeError:
        if not _stdout_reader_gone():  # a socket's broken pipe, say: a real error, with its traceback
            raise
        # Python's documented recipe: point stdout at /dev/null so the flush at exit cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
