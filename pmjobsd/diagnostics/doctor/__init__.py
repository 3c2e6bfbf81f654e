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

from collections.abc import Callable, Sequence

from pmjobsd.core.privacy import scrub_text
from pmjobsd.diagnostics.doctor.checks_coordination import check_coordination
from pmjobsd.diagnostics.doctor.checks_files import (
    check_app_exposure,
    check_folders,
    check_secret_files,
    check_settings,
    check_settings_file,
    check_vault,
)
from pmjobsd.diagnostics.doctor.checks_jobs import check_jobs
from pmjobsd.diagnostics.doctor.checks_online import DEFAULT_BREACH_API, breach_api_base, check_breach_api, check_bridge
from pmjobsd.diagnostics.doctor.checks_python import (
    check_app_gui,
    check_dependencies,
    check_python,
    qt_platform_plugin_dir,
    requirement_problem,
)
from pmjobsd.diagnostics.doctor.checks_system import (
    DISK_FAIL_BYTES,
    DISK_WARN_BYTES,
    DISK_WARN_FRACTION,
    GIB,
    MIB,
    check_daemon,
    check_disk,
    check_service,
    check_threads,
    check_writable,
)
from pmjobsd.diagnostics.doctor.env import Check, DoctorEnv, current_status, fail, ok, warn
from pmjobsd.diagnostics.doctor.render import exit_code, render_text, report

# Every check, in the order of the report.
CheckFunction = Callable[[DoctorEnv], "Check | list[Check]"]
OFFLINE_CHECKS: tuple[CheckFunction, ...] = (
    check_python,
    check_dependencies,
    check_app_gui,
    check_settings,
    check_vault,
    check_secret_files,
    check_settings_file,
    check_app_exposure,
    check_folders,
    check_disk,
    check_writable,
    check_service,
    check_daemon,
    check_threads,
    check_jobs,
    check_coordination,
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
            outcome = fail(
                name,
                f"the check itself failed: {type(exc).__name__}: {scrub_text(str(exc))[:200]}",
                "report this with the support bundle: pmjobsd logs bundle",
            )
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


__all__ = [
    "DEFAULT_BREACH_API",
    "DISK_FAIL_BYTES",
    "DISK_WARN_BYTES",
    "DISK_WARN_FRACTION",
    "GIB",
    "MIB",
    "Check",
    "CheckFunction",
    "DoctorEnv",
    "ONLINE_CHECKS",
    "OFFLINE_CHECKS",
    "breach_api_base",
    "current_status",
    "exit_code",
    "fail",
    "ok",
    "qt_platform_plugin_dir",
    "render_text",
    "report",
    "requirement_problem",
    "run_checks",
    "warn",
    *(function.__name__ for function in OFFLINE_CHECKS + ONLINE_CHECKS),
]
