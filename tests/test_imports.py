"""What each command imports: a code path loads a library only when it needs it (issue 16).

Each command runs as a real ``python -X importtime -m pmjobsd ...`` process on a temporary
home; the modules it imported are read from its importtime lines on stderr.  No timing is
asserted (benchmarks/bench_cli.py measures that): a library a command has no use for must
simply not be there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pmjobsd.core.registry import BUILTIN_JOBS, SPEC_SUFFIX
from tests.support import REPO
from tests.support.daemon import AppHome, DaemonProcess, all_builtins_disabled, wait_for

# Never needed by a command that only reads: HTTP, alert sinks, Prometheus, the daemon itself.
NOT_FOR_READERS = {
    *("requests", "urllib3", "apprise", "jeepney", "prometheus_client", "filelock", "pmjobsd.core.daemon"),
    "redis",  # coordination's client: only with jobs.coordination, and only where it talks to Redis
}
# Settings are validated with msgspec (pmjobsd.core.validation): nothing imports pydantic, and a
# command that does not validate the settings loads neither.
VALIDATION = {"msgspec", "pydantic", "pydantic_core", "pmjobsd.core.settings", "pmjobsd.core.validation"}
# What a daemon with the metrics endpoint off, no metrics textfile and no alert target has no
# use for: HTTP and the sinks, Prometheus, pydantic, the HTTP server, OpenSSL (_hashlib: hashlib,
# hmac and secrets load it; the daemon hashes with CPython's own SHA-256), libsystemd outside systemd,
# python-daemon (``daemon``) in the foreground.
NOT_FOR_A_QUIET_DAEMON = NOT_FOR_READERS - {"pmjobsd.core.daemon"} | {
    "pydantic",
    "http.server",
    "_hashlib",
    "systemd.daemon",
    "systemd.journal",
    "daemon",
    "pmjobsd.system.detach",
}
if os.environ.get("COVERAGE_RUN"):  # CI measures the daemons too, and coverage itself loads _hashlib
    NOT_FOR_A_QUIET_DAEMON -= {"_hashlib"}
# Every module of pmjobsd/jobs/ but the jobs' declarations (``*_spec``) and the packages: a job's
# implementation and its helpers are imported at its first run, not when the settings are read.
JOB_IMPLEMENTATIONS = {
    ".".join(path.relative_to(REPO).with_suffix("").parts)
    for path in (REPO / "pmjobsd/jobs").rglob("*.py")
    if path.name != "__init__.py" and not path.stem.endswith(SPEC_SUFFIX)
}


def imported(stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                names.add(name)
    return names


def run_cli(home: AppHome, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pmjobsd", *args],
        env=home.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, imported(result.stderr)


def test_the_parser_of_importtime_lines_finds_modules(home):
    result, modules = run_cli(home, "--version")
    assert result.returncode == 0 and result.stdout.startswith("pmjobsd ")
    assert {"pmjobsd", "pmjobsd.cli", "argparse"} <= modules  # the reading itself works, so absences mean something


def test_version_imports_nothing_heavy(home):
    result, modules = run_cli(home, "--version")
    assert result.returncode == 0
    assert modules.isdisjoint(NOT_FOR_READERS | VALIDATION), sorted(modules & (NOT_FOR_READERS | VALIDATION))


@pytest.mark.parametrize("args", [("status", "--json"), ("status",), ("config", "validate"), ("config", "show")])
def test_read_only_commands_without_a_daemon_load_no_sink_http_metrics_or_daemon(home, args):
    # A settings file that names every kind of sink and the metrics endpoint: reading it needs none of them.
    home.write_settings(
        {
            "alerts": {"desktop": True, "targets": ["json://127.0.0.1:9/hook", "mailtos://u:p@example.org"]},
            "metrics": {"enabled": True, "port": 9464},
            "definitions": {name: {"enabled": True} for name in all_builtins_disabled()},
        }
    )
    result, modules = run_cli(home, *args)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    assert {"msgspec", "pmjobsd.core.validation"} <= modules  # these validate the settings...
    assert not {"pydantic", "pydantic_core"} & modules  # ...without pydantic
    assert modules.isdisjoint(NOT_FOR_READERS), sorted(modules & NOT_FOR_READERS)


def test_status_with_a_daemon_running_asks_it_without_validating_settings(home):
    home.write_settings({})
    daemon = DaemonProcess(home).wait_ready()
    try:
        result, modules = run_cli(home, "status", "--json")
    finally:
        daemon.stop()
    assert result.returncode in (0, 1), result.stderr[-2000:]
    assert '"running": true' in result.stdout  # the daemon's own answer, not the offline document
    assert modules.isdisjoint(NOT_FOR_READERS | VALIDATION), sorted(modules & (NOT_FOR_READERS | VALIDATION))


def test_status_with_jobs_paths_in_the_settings_still_finds_the_daemon(home, tmp_path):
    # jobs.paths moves the state folder (and so the socket): the settings are read to find it.
    data_dir = tmp_path / "elsewhere"
    data_dir.mkdir(mode=0o700)
    home.write_settings({"paths": {"data_dir": str(data_dir)}})
    daemon = DaemonProcess(home)
    try:
        wait_for(
            lambda: (
                (data_dir / "logs/jobs.log").exists() and b"daemon.ready" in (data_dir / "logs/jobs.log").read_bytes()
            )
        )
        result, _ = run_cli(home, "status", "--json")
    finally:
        daemon.stop()
    assert '"running": true' in result.stdout, result.stderr[-2000:]


def test_the_daemon_with_no_targets_and_no_due_job_loads_no_http_or_sink_library(home):
    # Every built-in job on, none due while the test runs (catch_up off, the HTTP jobs on 1 January).
    definitions = {name: {"enabled": True, "catch_up": False} for name in all_builtins_disabled()}
    for name in ("breach_cache_refresh", "browser_bridge_health"):
        definitions[name]["cron"] = "0 0 1 1 *"
    home.write_settings({"alerts": {"desktop": False, "targets": []}, "definitions": definitions})
    stderr_path = home.root / "daemon-importtime.stderr"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "pmjobsd", "run", "--no-console"],
            env=home.env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_for(lambda: home.events("daemon.ready") or proc.poll() is not None, 30, message="daemon.ready")
            assert proc.poll() is None, stderr_path.read_text()[-2000:]
        finally:
            proc.terminate()
            proc.wait(30)
    modules = imported(stderr_path.read_text())
    # importlib.import_module (how the registry loads a job) is not in importtime's lines; the
    # modules a job's module imports with `import` are: the declarations were read (they import
    # pmjobsd.api), and none of the jobs' implementations or helpers (none ran).
    assert "pmjobsd.core.daemon" in modules and "pmjobsd.api" in modules
    assert modules.isdisjoint(JOB_IMPLEMENTATIONS), sorted(modules & JOB_IMPLEMENTATIONS)
    assert modules.isdisjoint(NOT_FOR_A_QUIET_DAEMON), sorted(modules & NOT_FOR_A_QUIET_DAEMON)
    assert {"pmjobsd.coord.coordinator", "pmjobsd.coord.state"}.isdisjoint(modules)  # without jobs.coordination


def test_a_daemon_with_metrics_off_and_no_targets_never_loads_them(home):
    """``sys.modules`` of a real daemon, as a user job running inside it reports it, before and after runs."""
    definitions = {name: {"enabled": True, "catch_up": False} for name in all_builtins_disabled()}
    for name in ("breach_cache_refresh", "browser_bridge_health"):
        definitions[name]["cron"] = "0 0 1 1 *"  # never due while the test runs
    # The daemon validates settings (msgspec); pydantic it must never load.
    watched = sorted(
        NOT_FOR_A_QUIET_DAEMON | VALIDATION - {"pmjobsd.core.settings", "pmjobsd.core.validation", "msgspec"}
    )
    definitions["report"] = {
        "cron": "0 0 1 1 *",
        "callable": "tests.support.sample_jobs:loaded_modules",
        "options": {"modules": [*watched, "pmjobsd.core.daemon", "pmjobsd.core.settings"]},
    }
    home.write_settings({"alerts": {"desktop": False, "targets": []}, "definitions": definitions})
    daemon = DaemonProcess(home).wait_ready()
    try:
        first = home.cli("run-now", "report", "--wait", "--json")
        status = home.cli("status", "--json")  # a status request and a finished run do not load them either
        second = home.cli("run-now", "report", "--wait", "--json")
    finally:
        daemon.stop()
    assert '"running": true' in status.stdout, status.stderr[-2000:]
    for result in (first, second):
        assert result.returncode == 0, result.stdout + result.stderr[-2000:]
        run = json.loads(result.stdout)["run"]
        # The report is real: it names the daemon's own modules, and only those of the watched list.
        assert run["summary"] == "loaded: pmjobsd.core.daemon,pmjobsd.core.settings", run["summary"]


def test_a_daemon_imports_a_builtin_jobs_implementation_at_its_first_run_only(home):
    """Every built-in job on with its defaults (none due, catch_up off): ``sys.modules`` of the real daemon."""
    definitions = {name: {"enabled": True, "catch_up": False} for name in BUILTIN_JOBS}
    for name in ("breach_cache_refresh", "browser_bridge_health", "log_rotation"):
        definitions[name]["cron"] = "0 0 1 1 *"  # never due while the test runs
    definitions["report"] = {
        "cron": "0 0 1 1 *",
        "callable": "tests.support.sample_jobs:loaded_modules",
        "options": {"modules": sorted(JOB_IMPLEMENTATIONS)},
    }
    home.write_settings({"alerts": {"desktop": False, "targets": []}, "definitions": definitions})
    daemon = DaemonProcess(home).wait_ready()
    try:
        before = home.cli("run-now", "report", "--wait", "--json")
        purge = home.cli("run-now", "log_purge", "--wait", "--json")  # the first run of one built-in job
        after = home.cli("run-now", "report", "--wait", "--json")
    finally:
        daemon.stop()
    assert purge.returncode == 0, purge.stdout + purge.stderr[-2000:]
    summaries = []
    for result in (before, after):
        assert result.returncode == 0, result.stdout + result.stderr[-2000:]
        summaries.append(json.loads(result.stdout)["run"]["summary"])
    assert summaries[0] == "loaded: ", summaries[0]  # six jobs scheduled, none of their code imported
    # log_purge's implementation and its helpers now, and still nothing of the five others.
    loaded = set(summaries[1].removeprefix("loaded: ").split(","))
    assert {"pmjobsd.jobs.logs.log_purge", "pmjobsd.jobs.logs.retention", "pmjobsd.jobs.logs.archives"} <= loaded
    assert not {name for name in loaded if not name.startswith("pmjobsd.jobs.logs.")}, sorted(loaded)
    assert "pmjobsd.jobs.logs.log_rotation" not in loaded


def test_reading_settings_imports_no_job_implementation_but_config_validate_checks_them(home):
    """``status`` (offline) reads the declarations only; ``config validate`` imports each implementation."""
    home.write_settings({"definitions": {name: {"enabled": True} for name in BUILTIN_JOBS}})
    probe = (
        "import sys, pmjobsd.cli as cli\n"
        "code = cli.main(sys.argv[1:])\n"
        "print('job modules:', *sorted(m for m in sys.modules if m.startswith('pmjobsd.jobs.')), file=sys.stderr)\n"
        "raise SystemExit(code)\n"
    )
    found = {}
    for command in (["status", "--json"], ["config", "validate"]):
        result = subprocess.run(
            [sys.executable, "-c", probe, *command], env=home.env(), capture_output=True, text=True, timeout=60
        )
        assert result.returncode in (0, 1), result.stderr[-2000:]
        line = next(line for line in result.stderr.splitlines() if line.startswith("job modules:"))
        found[command[0]] = set(line.split()[2:])
    specs = set(BUILTIN_JOBS.values())
    assert specs <= found["status"] and found["status"].isdisjoint(JOB_IMPLEMENTATIONS), sorted(found["status"])
    implementations = {spec.removesuffix(SPEC_SUFFIX) for spec in specs}
    assert implementations <= found["config"], sorted(implementations - found["config"])


def test_status_group_reads_redis_without_the_daemon_or_prometheus(home, redis_server):
    home.write_settings({"coordination": {"url": redis_server.url, "group": "g", "member": "m"}})
    result, modules = run_cli(home, "status", "--group")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "redis" in modules
    unneeded = NOT_FOR_READERS - {"redis"}
    assert modules.isdisjoint(unneeded), sorted(modules & unneeded)
