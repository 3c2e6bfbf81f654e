"""Checks that need the network (``--online``): the breach API and the app's browser bridge."""

from __future__ import annotations

import re
import time

import requests

from pmjobsd import __version__
from pmjobsd.core.privacy import scrub_text
from pmjobsd.diagnostics.doctor.env import Check, DoctorEnv, fail, ok, shell_quote

DEFAULT_BREACH_API = "https://api.pwnedpasswords.com"
_HASH_LINE = re.compile(r"^[0-9A-Fa-f]{35}:\d+\s*$")


def breach_api_base(env: DoctorEnv) -> str:
    if env.breach_api_base:
        return env.breach_api_base
    definitions = (env.loaded.app_settings.get("jobs") or {}).get("definitions") or {}
    options = (
        (definitions.get("breach_cache_refresh") or {}).get("options") or {} if isinstance(definitions, dict) else {}
    )
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
        return fail(
            "online.breach_api",
            f"{shown}: {type(exc).__name__}",
            "check the network, a proxy (HTTPS_PROXY) and the breach_cache_refresh api_base option",
        )
    latency = (time.monotonic() - started) * 1000
    first = response.text.splitlines()[0] if response.ok and response.text else ""
    if response.status_code != 200 or not _HASH_LINE.match(first):
        return fail(
            "online.breach_api",
            f"{shown}: unexpected answer (HTTP {response.status_code})",
            "check the breach_cache_refresh api_base option and any proxy in between",
        )
    return ok("online.breach_api", f"{shown} answers in {latency:.0f} ms")


def check_bridge(env: DoctorEnv) -> Check:
    from pmjobsd.jobs import browser_bridge_health as bridge_job

    try:
        bridge = bridge_job.bridge_settings(dict(env.loaded.app_settings), env.loaded.source)
    except ValueError as exc:
        return fail("online.bridge", str(exc), f"fix browser_bridge in {shell_quote(env.loaded.source)}")
    if not bridge["enabled"]:
        return ok("online.bridge", "browser bridge disabled in the app's settings")
    problems = []
    try:
        latency, _ = bridge_job.probe_http(
            bridge["host"], bridge["port"], bool(bridge["enable_tls"]), env.paths.bridge_cert_path, env.timeout
        )
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
    return fail(
        "online.bridge",
        f"browser bridge at {where} unreachable while the app runs: {'; '.join(problems)}",
        "restart the app; check browser_bridge.port and enable_tls in settings.json",
    )
