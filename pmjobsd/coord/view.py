"""``pmjobsd status --group``: the group as Redis holds it, read straight from the engine.

Works with or without a daemon on this machine: it reads the members' heartbeat
keys and the run stream (keys.py) and nothing else.  Every value read back is
treated as untrusted text: the JSON keeps it as it is, the text output escapes
control characters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pmjobsd.coord import keys
from pmjobsd.core.outcomes import Severity, Status
from pmjobsd.core.privacy import escape_control
from pmjobsd.core.timestamps import utc_iso

if TYPE_CHECKING:
    import redis

SCAN_RUNS = 1000  # newest stream entries read for "the latest run of each job"
HOST_LIMIT = 100


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _member(name: str, score: float, raw: Mapping[str, Any], now: float) -> dict[str, Any]:
    fields = {str(key): str(value) for key, value in raw.items()}
    if not fields:
        state = "lost"  # the key expired: the member stopped beating without saying goodbye
    elif fields.get("stopped"):
        state = "stopped"
    else:
        state = "alive"
    started = _float(fields.get("started"))
    return {
        "name": name,
        "state": state,
        "host": fields.get("host", "")[:HOST_LIMIT] or None,
        "version": fields.get("version") or None,
        "pid": int(fields["pid"]) if fields.get("pid", "").isdigit() else None,
        "started_at": utc_iso(started) if started else None,
        "last_heartbeat": utc_iso(score),
        "heartbeat_age_s": round(max(0.0, now - score), 3),
        "duplicate": fields.get("duplicate") or None if state == "alive" else None,
    }


def _run(entry_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    def text(key: str) -> str | None:
        value = fields.get(key)
        return str(value)[:HOST_LIMIT] if value not in (None, "") else None

    duration, token, attempt = text("duration_ms"), text("token"), text("attempt")
    return {
        "id": entry_id,
        "slot": text("slot"),
        "member": text("member"),
        "host": text("host"),
        "status": text("status"),
        "trigger": text("trigger"),
        "attempt": int(attempt) if attempt and attempt.isdigit() else None,
        "final": text("final") != "0",
        "started_at": text("started"),
        "duration_ms": int(duration) if duration and duration.isdigit() else None,
        "fencing_token": int(token) if token and token.isdigit() else None,
        "run_id": text("run_id"),
    }


def read_group(
    client: redis.Redis, group: str, *, vault_jobs: Iterable[str] = (), scan: int = SCAN_RUNS
) -> dict[str, Any]:
    """The group document: each member remembered and the newest published run of each job.

    ``vault_jobs`` (this machine's settings) are listed even before any run of them was published.
    Raises redis-py's errors when the engine does not answer.
    """
    seconds, micros = client.time()
    now = seconds + micros / 1e6
    names: list[Any] = client.zrange(keys.members(group), 0, -1, withscores=True)
    pipe = client.pipeline(transaction=False)
    for name, _score in names:
        pipe.hgetall(keys.member(group, str(name)))
    hashes = pipe.execute() if names else []
    members = [_member(str(name), float(score), raw, now) for (name, score), raw in zip(names, hashes, strict=True)]
    latest: dict[str, dict[str, Any]] = {}
    entries: list[Any] = client.xrevrange(keys.runs(group), count=scan)  # type: ignore[assignment]
    for entry_id, fields in entries:
        job = str(fields.get("job", ""))[:HOST_LIMIT]
        if job and job not in latest:
            latest[job] = _run(str(entry_id), fields)
    for member in members:  # a lost member's host is still known from the runs it published
        if member["host"] is None:
            member["host"] = next((run["host"] for run in latest.values() if run["member"] == member["name"]), None)
    jobs = sorted(set(vault_jobs) | set(latest))
    return {
        "group": group,
        "server_time": utc_iso(now),
        "members": members,
        "jobs": [{"name": job, "latest": latest.get(job)} for job in jobs],
    }


def severity(document: Mapping[str, Any]) -> Severity:
    """FAIL for a duplicate member or a latest run that failed; WARN for a lost member or a WARN run."""
    worst = Severity.OK
    for member in document.get("members", []):
        if member.get("duplicate"):
            worst = max(worst, Severity.FAIL)
        elif member.get("state") == "lost":
            worst = max(worst, Severity.WARN)
    for job in document.get("jobs", []):
        run = job.get("latest")
        if run is None:
            continue
        try:
            worst = max(worst, Status(run.get("status")).severity)
        except ValueError:  # a status this version does not know (a newer member's): worth a look
            worst = max(worst, Severity.WARN)
    return worst


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"


def render_text(document: Mapping[str, Any]) -> str:
    """The group document for a terminal: one line per member, one per job; control characters escaped."""

    def show(value: Any) -> str:
        return escape_control(str(value)) if value not in (None, "") else "-"

    lines = [f"group {show(document.get('group'))} on {show(document.get('engine'))}"]
    members = document.get("members", [])
    lines.append(f"members ({len(members)}):")
    if not members:
        lines.append("  none has beaten yet")
    width = max((len(show(member["name"])) for member in members), default=0)
    for member in members:
        mark = " (this machine's member name)" if member["name"] == document.get("member") else ""
        line = (
            f"  {show(member['name']):<{width}}  {member['state']:<7}  host {show(member['host'])}"
            f"  version {show(member['version'])}  last heartbeat {_age(member['heartbeat_age_s'])}"
            f" ({show(member['last_heartbeat'])}){mark}"
        )
        lines.append(line)
        if member.get("duplicate"):
            lines.append(f"    FAIL: duplicate member name: also beating from {show(member['duplicate'])}")
    jobs = document.get("jobs", [])
    lines.append("vault jobs (latest published run):")
    if not jobs:
        lines.append("  none")
    width = max((len(show(job["name"])) for job in jobs), default=0)
    for job in jobs:
        run = job["latest"]
        if run is None:
            lines.append(f"  {show(job['name']):<{width}}  -     no run published yet")
            continue
        slot = f"slot {show(run['slot'])}" if run["slot"] else f"{show(run['trigger'])} run"
        token = f", token {run['fencing_token']}" if run["fencing_token"] is not None else ""
        duration = f"{run['duration_ms']} ms" if run["duration_ms"] is not None else "-"
        attempt = f", attempt {run['attempt']}" if run["attempt"] and run["attempt"] > 1 else ""
        lines.append(
            f"  {show(job['name']):<{width}}  {show(run['status']):<5} {slot} by {show(run['member'])}"
            f" on {show(run['host'])} at {show(run['started_at'])} in {duration}{attempt}{token}"
        )
    return "\n".join(lines)
