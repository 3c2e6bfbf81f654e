"""The group view end to end: real `pmjobsd run` processes, a real redis-server, the CLI, /metrics and doctor."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
import zipfile

from pmjobsd.coord import keys
from tests.support.alert_fixtures import free_port, webhook_receiver
from tests.support.appfixtures import CANARY, assert_no_canary, canary_entry, create_backup, create_vault
from tests.support.daemon import AppHome, DaemonProcess, wait_for
from tests.support.redis_server import RedisServer

VAULT_JOB = {"cron": "* * * * * *", "callable": "tests.support.sample_jobs:ok", "scope": "vault", "catch_up": False}
DEVICE_JOB = {"cron": "* * * * * *", "callable": "tests.support.sample_jobs:ok", "catch_up": False}


def _settings(home: AppHome, url: str, member: str, **extra) -> int:
    """Coordinated settings with a vault job and a device job every second; the metrics port."""
    port = free_port()
    jobs = {
        "coordination": {"url": url, "group": "home-vault", "member": member, "lease": "3s"},
        "metrics": {"enabled": True, "port": port},
        "definitions": {"vaultjob": VAULT_JOB, "devicejob": DEVICE_JOB},
        **extra,
    }
    home.write_settings(jobs)
    return port


def _metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def _group(home: AppHome) -> tuple[int, dict]:
    result = home.cli("status", "--group", "--json")
    return result.returncode, json.loads(result.stdout)


def _stop_all(*daemons: DaemonProcess) -> None:
    for daemon in daemons:
        if daemon.proc.poll() is None:
            daemon.kill()


def test_status_group_shows_every_member_and_who_ran_each_vault_job(tmp_path, redis_server):
    alpha, beta = AppHome(tmp_path / "alpha"), AppHome(tmp_path / "beta")
    port = _settings(alpha, redis_server.url, "alpha")
    _settings(beta, redis_server.url, "beta")
    first, second = DaemonProcess(alpha).wait_ready(), DaemonProcess(beta).wait_ready()
    client = redis_server.client()
    try:
        wait_for(
            lambda: {f["member"] for _, f in client.xrange(keys.runs("home-vault"))} == {"alpha", "beta"},
            20,
            message="runs from both members in the stream",
        )
        code, document = _group(alpha)
        assert code == 0, document
        members = {m["name"]: m for m in document["members"]}
        assert set(members) == {"alpha", "beta"}
        assert {m["state"] for m in members.values()} == {"alive"}
        assert members["alpha"]["pid"] == first.pid and members["beta"]["pid"] == second.pid
        assert all(m["version"] and m["host"] and m["heartbeat_age_s"] < 3 for m in members.values())
        jobs = {job["name"]: job["latest"] for job in document["jobs"]}
        assert "devicejob" not in jobs, "device jobs are not published"
        assert jobs["vaultjob"]["member"] in {"alpha", "beta"} and jobs["vaultjob"]["status"] == "OK"
        assert jobs["vaultjob"]["slot"], "a scheduled run names its slot"
        assert {f["job"] for _, f in client.xrange(keys.runs("home-vault"))} == {"vaultjob"}

        text = alpha.cli("status", "--group")
        assert text.returncode == 0
        assert "alpha  alive" in text.stdout and "beta   alive" in text.stdout
        assert "vaultjob  OK    slot " in text.stdout

        exposition = _metrics(port)
        assert 'pmjobsd_coordination_info{group="home-vault",member="alpha"} 1.0' in exposition
        assert "pmjobsd_coordination_duplicate_member 0.0" in exposition
        age = next(line for line in exposition.splitlines() if line.startswith("pmjobsd_coordination_heartbeat_age"))
        assert float(age.split()[1]) < 3
        for name in ("engine_reachable", "leases_held", "claims_won_total", "claims_lost_total", "leases_lost_total"):
            assert f"\npmjobsd_coordination_{name} " in exposition

        second.kill()  # kill -9: no goodbye, the member key expires (3 beats of 1 s)
        wait_for(
            lambda: {m["name"]: m["state"] for m in _group(alpha)[1]["members"]}.get("beta") == "lost",
            10,
            message="beta shown lost",
        )
        code, document = _group(alpha)
        assert code == 1, "a lost member is a WARN"
        assert first.stop() == 0
        code, document = _group(alpha)  # no daemon here: read from Redis all the same
        assert {m["name"]: m["state"] for m in document["members"]} == {"alpha": "stopped", "beta": "lost"}
        assert code == 1
    finally:
        _stop_all(first, second)


def test_without_coordination_there_are_no_coordination_metrics(home):
    port = free_port()
    home.write_settings({"metrics": {"enabled": True, "port": port}, "definitions": {"devicejob": DEVICE_JOB}})
    daemon = DaemonProcess(home).wait_ready()
    try:
        assert "pmjobsd_coordination" not in _metrics(port)
        result = home.cli("status", "--group")
        assert result.returncode == 2
        assert "coordination is off" in result.stderr and result.stdout == ""
        result = home.cli("status", "--group", "--json")
        assert result.returncode == 2 and "coordination is off" in json.loads(result.stdout)["error"]
    finally:
        daemon.stop()


def test_status_group_says_when_the_engine_does_not_answer(home, tmp_path):
    closed = free_port()
    home.write_settings(
        {"coordination": {"url": f"redis://u:{CANARY}-pw@127.0.0.1:{closed}/0", "group": "g", "member": "m"}}
    )
    result = home.cli("status", "--group")
    assert result.returncode == 2
    assert result.stderr.startswith(f"pmjobsd: cannot reach the engine redis://u:<redacted>@127.0.0.1:{closed}/0: ")
    as_json = home.cli("status", "--group", "--json")
    assert as_json.returncode == 2 and "cannot reach" in json.loads(as_json.stdout)["error"]
    assert_no_canary(result.stdout, result.stderr, as_json.stdout, as_json.stderr)
    doctor = home.cli("doctor", "--json")
    checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
    assert checks["coordination.engine"]["status"] == "FAIL"
    assert "when_engine_down=skip" in checks["coordination.engine"]["message"]
    assert_no_canary(doctor.stdout, doctor.stderr)


def test_status_group_names_invalid_coordination_settings(home):
    home.write_settings({"coordination": {"url": f"redis://u:{CANARY}-pw@nas.example:6379/0", "group": "g"}})
    result = home.cli("status", "--group")
    assert result.returncode == 2
    assert "jobs.coordination" in result.stderr and "allow_remote" in result.stderr
    assert "coordination is off" not in result.stderr
    assert_no_canary(result.stdout, result.stderr)


def test_hostile_member_data_in_redis_is_escaped_in_the_text_output(home, redis_server):
    home.write_settings({"coordination": {"url": redis_server.url, "group": "g", "member": "m"}})
    client = redis_server.client()
    client.zadd(keys.members("g"), {"evil\x1b[2Jname": 1.0})
    client.hset(keys.member("g", "evil\x1b[2Jname"), mapping={"host": "h\r\nOK forged", "version": "\x9b1"})
    client.xadd(keys.runs("g"), {"job": "j\x07ob", "status": "OK\x1b[0m", "member": "x", "host": "y"})
    result = home.cli("status", "--group")
    for raw in ("\x1b", "\r", "\x07", "\x9b"):
        assert raw not in result.stdout
    assert "\\x1b[2J" in result.stdout and "\\r\\n" in result.stdout and "j\\x07ob" in result.stdout
    assert result.returncode == 1, "a status this version does not know is a WARN"


def test_two_daemons_with_one_member_name_both_report_it(tmp_path, redis_server):
    server, received = webhook_receiver()
    homes = [AppHome(tmp_path / "one"), AppHome(tmp_path / "two")]
    alerts = {"desktop": False, "targets": [f"json://127.0.0.1:{server.server_port}/hook"]}
    ports = [_settings(home, redis_server.url, "twin", alerts=alerts) for home in homes]
    daemons = [DaemonProcess(home).wait_ready() for home in homes]
    try:
        for home in homes:
            wait_for(lambda h=home: h.events("coordination.duplicate_member"), 15, message="duplicate_member logged")
        for port in ports:
            wait_for(lambda p=port: "pmjobsd_coordination_duplicate_member 1.0" in _metrics(p), 10, message="gauge")
        wait_for(
            lambda: sum(b"pmjobsd member name" in r["body"] for r in received.snapshot()) >= 2, 20, message="alerts"
        )
        code, document = _group(homes[0])
        assert code == 2, "a duplicate member is a FAIL"
        assert document["members"][0]["duplicate"]
        doctor = homes[0].cli("doctor", "--json")
        checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
        assert checks["coordination.member"]["status"] == "FAIL", checks["coordination.member"]
        assert doctor.returncode == 2
        for home in homes:  # once, not at every beat
            assert len(home.events("coordination.duplicate_member")) == 1
        assert sum(b"pmjobsd member name" in r["body"] for r in received.snapshot()) == 2
        # Claims, not names, decide who runs a slot: the group keeps running it (on either twin).
        assert any(home.events("job.succeeded", job="vaultjob") for home in homes), "vault jobs keep running"
        status = json.loads(homes[0].cli("status", "--json").stdout)
        assert "responding" not in status["daemon"], "status reaches the daemon in its per-member state folder"
        assert status["coordination"]["duplicate_member"] and status["coordination"]["last_heartbeat"]
    finally:
        _stop_all(*daemons)


def test_tls_with_an_acl_user_and_credentials_redacted_everywhere(tmp_path, home):
    password = f"{CANARY}-redis-password"
    # An ACL user that may touch pmjobsd's keys only; the default user is switched off.
    # (the least-privilege user docs/coordination.md suggests).
    acl = ("--user", "alice", "on", f">{password}", "~pmjobsd:*", "+@all", "-@admin", "-@dangerous", "+info")
    acl += ("--user", "default", "off")
    server = RedisServer(tmp_path / "tls", tls=tmp_path / "cert", extra=acl)
    try:
        url = server.url.replace("rediss://", f"rediss://alice:{password}@")
        port = _settings(home, url, "laptop")
        daemon = DaemonProcess(home).wait_ready()
        try:
            client = server.client(url)
            wait_for(lambda: client.xlen(keys.runs("home-vault")) > 0, 15, message="a run published over TLS")
            assert client.exists(keys.member("home-vault", "laptop"))
            code, document = _group(home)
            assert code == 0 and document["engine"] == f"rediss://alice:<redacted>@127.0.0.1:{server.port}/0"
            doctor = home.cli("doctor", "--json")
            checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
            assert checks["coordination.engine"]["status"] == "OK", checks["coordination.engine"]
            assert checks["coordination.tls"]["status"] == "OK"
            assert checks["coordination.member"]["status"] == "OK", checks["coordination.member"]
            assert checks["coordination.state_folder"]["status"] == "OK"
            outputs = [
                home.cli("config", "show").stdout,
                home.cli("status", "--json").stdout,
                home.cli("status", "--group").stdout,
                doctor.stdout,
                _metrics(port),
            ]
            bundle = home.cli("logs", "bundle", "-o", str(tmp_path / "bundle.zip"))
            assert bundle.returncode == 0, bundle.stderr
            with zipfile.ZipFile(tmp_path / "bundle.zip") as archive:
                outputs += [archive.read(name).decode(errors="replace") for name in archive.namelist()]
        finally:
            daemon.stop()
        outputs.append(home.jobs_log.read_text())
        assert_no_canary(*outputs)
        # Without the password, or without TLS, the engine refuses: said, and still no password shown.
        home.write_settings({"coordination": {"url": server.url, "group": "home-vault", "member": "laptop"}})
        refused = home.cli("status", "--group")
        assert refused.returncode == 2 and "cannot reach the engine" in refused.stderr
        plain = f"redis://alice:{password}@127.0.0.1:{server.port}/0"
        home.write_settings({"coordination": {"url": plain, "group": "home-vault", "member": "laptop"}})
        refused = home.cli("status", "--group")
        assert refused.returncode == 2 and "cannot reach the engine" in refused.stderr
        assert_no_canary(refused.stdout, refused.stderr)
    finally:
        server.stop()


def test_no_canary_reaches_redis_from_a_coordinated_daemon_running_the_vault_jobs(home, redis_server):
    vault = home.data_dir / "passwords.db"
    create_vault(vault, [canary_entry(1, expires_in_days=-2), canary_entry(2, expires_in_days=3), canary_entry(3)])
    backups = home.data_dir / "backups"
    create_backup(backups, vault, timestamp=1_700_000_000)
    port = free_port()
    vault_jobs = ("expiring_password_digest", "backup_integrity_check")
    home.write_settings(
        {
            "coordination": {"url": redis_server.url, "group": "home-vault", "member": f"laptop-{os.getpid()}"},
            "metrics": {"enabled": True, "port": port},
            "alerts": {"desktop": False},
            "definitions": {name: {"enabled": True, "catch_up": True, "retries": 0} for name in vault_jobs},
        }
    )
    daemon = DaemonProcess(home).wait_ready()
    client = redis_server.client()
    try:
        wait_for(
            lambda: {f["job"] for _, f in client.xrange(keys.runs("home-vault"))} >= set(vault_jobs),
            30,
            message="both vault jobs published",
        )
        outputs = [
            home.cli("status", "--json").stdout,
            home.cli("status").stdout,
            home.cli("status", "--group", "--json").stdout,
            home.cli("status", "--group").stdout,
            _metrics(port),
        ]
    finally:
        daemon.signal(signal.SIGTERM)
        daemon.stop()
    raw = redis_server.client()
    raw_bytes = __import__("redis").Redis.from_url(redis_server.url, socket_timeout=5)
    everything: list[object] = []
    for key in raw.scan_iter("*"):
        everything.append(key)
        everything.append(raw_bytes.dump(key))
        kind = raw.type(key)
        if kind == "stream":
            everything.append(raw.xrange(key))
        elif kind == "hash":
            everything.append(raw.hgetall(key))
        elif kind == "zset":
            everything.append(raw.zrange(key, 0, -1, withscores=True))
        elif kind == "string":
            everything.append(raw.get(key))
    assert len(everything) >= 6
    assert_no_canary(*everything, *outputs)
    assert all(str(key).startswith("pmjobsd:home-vault:") for key in raw.scan_iter("*"))


def test_config_show_names_the_engine_without_its_password(home):
    url = f"rediss://alice:{CANARY}-pw@127.0.0.1:6380/0?ssl_ca_certs=/etc/ssl/{CANARY}.pem"
    home.write_settings({"coordination": {"url": url, "group": "g", "member": "m"}})
    result = home.cli("config", "show")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["coordination"]["url"] == "rediss://alice:<redacted>@127.0.0.1:6380/0"
    assert_no_canary(result.stdout, result.stderr)


def test_a_hung_engine_never_holds_up_the_daemon(home, redis_server):
    marker = home.root / "device.txt"
    device = {**DEVICE_JOB, "options": {"marker": str(marker)}}
    home.write_settings(
        {
            "coordination": {"url": redis_server.url, "group": "g", "member": "m", "lease": "3s"},
            "definitions": {"vaultjob": VAULT_JOB, "devicejob": device},
        }
    )
    daemon = DaemonProcess(home).wait_ready()
    try:
        wait_for(lambda: redis_server.client().exists(keys.member("g", "m")), 10, message="a first beat")
        redis_server.pause()  # SIGSTOP: connections open, nothing answered

        def runs() -> int:
            return len(marker.read_text().splitlines()) if marker.exists() else 0

        before = runs()
        wait_for(lambda: runs() >= before + 3, 15, message="device runs go on")
        code, _ = home.status()
        assert code in (0, 1, 2)  # it answers; what it says about the engine is the claim side's
        started = time.monotonic()
        assert daemon.stop(timeout=30) == 0
        assert time.monotonic() - started < 8, "a hung engine must not hold the shutdown"
        assert home.events("coordination.heartbeat_failed")
    finally:
        redis_server.resume()
        _stop_all(daemon)
