"""browser_bridge_health: is the app's local browser bridge answering?

Reads the app's ``browser_bridge`` settings (defaults as in the app's
``utils/config.py``: disabled, 127.0.0.1:43110, no TLS, no domain socket).
Enabled: ``GET /v1/status`` (https when ``enable_tls``, trusting only the
app's own certificate ``<config dir>/tls/localhost.crt``) must answer 200 with
``{"status": "ok", ...}``; with ``enable_domain_socket`` the app's socket must
answer a framed request too.  The bridge runs only while the app runs: with
``expect="when_app_running"`` an unreachable bridge while no app process runs
is OK ("app not running").
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pmjobsd.api import JobContext, JobResult, validate
from pmjobsd.jobs.browser_bridge_health_spec import APP_COMMANDS, BridgeHealthOptions

# The app's defaults (secure_password_manager/utils/config.py, DEFAULT_SETTINGS["browser_bridge"]).
APP_DEFAULTS = {
    "enabled": False,
    "host": "127.0.0.1",
    "port": 43110,
    "enable_tls": False,
    "enable_domain_socket": False,
}
APP_MODULES = ("secure_password_manager",)  # the app's modules (APP_COMMANDS: its console scripts)
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class ProbeFailure(Exception):
    """The bridge did not answer as it should; ``reason`` is one short phrase."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- is the app running? ---------------------------------------------------------
def app_commands() -> tuple[str, ...]:
    """The app's console scripts, from its installed metadata when present, else the 1.11 names."""
    from importlib import metadata  # ~1 MB and ~10 ms: when the job runs, not when its options are read

    try:
        names = {
            ep.name
            for ep in metadata.distribution("secure-password-manager").entry_points
            if ep.group in ("console_scripts", "gui_scripts")
        }
    except metadata.PackageNotFoundError:
        names = set()
    return tuple(sorted(names | set(APP_COMMANDS)))


def is_app_command_line(cmdline: list[str], commands: tuple[str, ...] | list[str]) -> bool:
    """True for ``password-manager ...``, ``python /venv/bin/password-manager`` or ``python -m secure_password_manager...``."""
    names = set(commands)
    if not cmdline:
        return False
    if os.path.basename(cmdline[0]) in names:
        return True
    if not os.path.basename(cmdline[0]).startswith("python"):
        return False
    # A Python interpreter: its first non-option argument is the script, or -m names the module.
    args = iter(cmdline[1:])
    for arg in args:
        if arg == "-m":
            return next(args, "").split(".")[0] in APP_MODULES
        if arg in ("-c",):
            return False
        if not arg.startswith("-"):
            return os.path.basename(arg) in names
    return False


def app_running(commands: tuple[str, ...] | list[str]) -> bool:
    """True when a process on this host runs the app (psutil: Linux /proc, macOS sysctl)."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if cmdline and is_app_command_line(cmdline, commands):
            return True
    return False


# --- probes ---------------------------------------------------------------------------
def bridge_settings(app_settings: dict[str, Any], source: Path) -> dict[str, Any]:
    """The app's effective bridge settings; raise ValueError naming the file and key."""
    raw = app_settings.get("browser_bridge", {})
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: browser_bridge: expected an object, got {type(raw).__name__}")
    merged = {**APP_DEFAULTS, **raw}
    port = merged["port"]
    if isinstance(port, str) and port.isdigit():
        port = int(port)  # the app itself does int(settings.get("port"))
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{source}: browser_bridge.port: expected a port number 1-65535, got {merged['port']!r}")
    if not isinstance(merged["host"], str):
        raise ValueError(f"{source}: browser_bridge.host: expected a host name or address, got {merged['host']!r}")
    host = _WILDCARD_HOSTS.get(merged["host"], merged["host"])
    return {**merged, "port": port, "host": host}


def probe_http(host: str, port: int, tls: bool, cert: Path, timeout: float) -> tuple[float, dict]:
    """GET /v1/status; return (latency in ms, answer) or raise ProbeFailure."""
    import requests  # when the probe runs, not when the settings name the job

    if tls and not cert.is_file():
        raise ProbeFailure("TLS certificate missing")
    url_host = f"[{host}]" if ":" in host else host
    url = f"{'https' if tls else 'http'}://{url_host}:{port}/v1/status"
    started = time.monotonic()
    try:
        with requests.Session() as session:
            session.trust_env = False  # the app's own local bridge: never through HTTP(S)_PROXY
            response = session.get(url, timeout=timeout, verify=str(cert) if tls else True, allow_redirects=False)
    except requests.exceptions.SSLError:
        raise ProbeFailure("TLS error") from None
    except requests.exceptions.Timeout:
        raise ProbeFailure("timeout") from None
    except requests.exceptions.ConnectionError as exc:
        refused = isinstance(exc.__context__, ConnectionRefusedError) or "refused" in str(exc).lower()
        raise ProbeFailure("refused" if refused else "connection failed") from None
    latency_ms = (time.monotonic() - started) * 1000
    if response.status_code != 200:
        raise ProbeFailure(f"bad answer (HTTP {response.status_code})")
    try:
        answer = response.json()
    except ValueError:
        raise ProbeFailure("bad answer (not JSON)") from None
    if not isinstance(answer, dict) or answer.get("status") != "ok":
        raise ProbeFailure("bad answer (status is not ok)")
    return latency_ms, answer


def socket_path(ctx: JobContext) -> Path:
    # The app's utils/domain_socket.py: $XDG_RUNTIME_DIR/secure-password-manager, else <data dir>/sockets.
    return ctx.paths.bridge_socket_path or ctx.paths.data_dir / "sockets" / "bridge.sock"


def probe_socket(path: Path, timeout: float) -> None:
    """Send one framed request (4-byte length + JSON, as the app's domain_socket.py) and read the reply.

    The app's socket server answers paths it does not route with status 404:
    any framed JSON reply proves it is alive.
    """
    if not path.exists():
        raise ProbeFailure("socket missing")
    request = json.dumps({"path": "/v1/status", "method": "GET", "headers": {}, "body": {}}).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(len(request).to_bytes(4, "big") + request)
            length = int.from_bytes(_recv_exact(sock, 4), "big")
            if length > 1 << 20:
                raise ProbeFailure("bad socket answer (too large)")
            reply = json.loads(_recv_exact(sock, length))
    except TimeoutError:
        raise ProbeFailure("socket timeout") from None
    except ConnectionRefusedError:
        raise ProbeFailure("socket refused") from None
    except (OSError, ValueError):
        raise ProbeFailure("bad socket answer") from None
    if not isinstance(reply, dict) or "status_code" not in reply:
        raise ProbeFailure("bad socket answer")


def _recv_exact(sock: socket.socket, length: int) -> bytes:
    data = b""
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


# --- the job ---------------------------------------------------------------------------------
def make_job(is_app_running: Callable[[BridgeHealthOptions], bool] | None = None) -> Callable[[JobContext], JobResult]:
    """The job function; ``is_app_running`` replaces the process scan (tests)."""
    detect = is_app_running or (lambda options: app_running(tuple(options.app_commands) + app_commands()))

    def browser_bridge_health(ctx: JobContext) -> JobResult:
        options: BridgeHealthOptions = (
            ctx.options
            if isinstance(ctx.options, BridgeHealthOptions)
            else validate(BridgeHealthOptions, ctx.options or {})
        )
        try:
            bridge = bridge_settings(dict(ctx.app_settings), ctx.paths.settings_path)
        except ValueError as exc:
            return JobResult.fail(f"bad bridge settings: {exc}", details={"reason": "settings"})
        if not bridge["enabled"]:
            return JobResult.ok("bridge disabled", details={"enabled": False})
        timeout = min(options.timeout, max(0.1, ctx.time_left()))
        details: dict[str, Any] = {"enabled": True, "tls": bool(bridge["enable_tls"]), "port": bridge["port"]}
        metrics: dict[str, float] = {}
        problems: list[str] = []
        latency_ms: float | None = None
        try:
            latency_ms, answer = probe_http(
                bridge["host"], bridge["port"], bool(bridge["enable_tls"]), ctx.paths.bridge_cert_path, timeout
            )
            metrics["latency_ms"] = round(latency_ms, 1)
            details["pairing_active"] = bool(answer.get("pairing_active"))
        except ProbeFailure as exc:
            problems.append(f"HTTP: {exc.reason}")
        ctx.check_cancelled()
        if bridge["enable_domain_socket"]:
            try:
                probe_socket(socket_path(ctx), timeout)
                details["socket"] = "ok"
            except ProbeFailure as exc:
                problems.append(exc.reason)
        metrics["reachable"] = 0.0 if problems else 1.0
        if not problems:
            assert latency_ms is not None  # no problems: the HTTP probe answered
            ctx.log.info("bridge.reachable", latency_ms=metrics["latency_ms"])
            summary = f"bridge answering in {latency_ms:.0f} ms"
            if options.slow_after is not None and latency_ms > options.slow_after * 1000:
                return JobResult.warn(f"bridge slow: {summary}", details=details, metrics=metrics)
            return JobResult.ok(summary, details=details, metrics=metrics)
        details["problems"] = problems
        if options.expect == "when_app_running":
            running = detect(options)
            details["app_running"] = running
            metrics["app_running"] = 1.0 if running else 0.0
            if not running:
                return JobResult.ok("app not running", details=details, metrics=metrics)
        ctx.log.warning("bridge.unreachable", reason="; ".join(problems))
        return JobResult.fail(f"bridge unreachable: {'; '.join(problems)}", details=details, metrics=metrics)

    return browser_bridge_health


run = make_job()  # what JOB.func names
