"""Every Redis key pmjobsd uses, in one place: ``pmjobsd:<group>:...``.

Keys hold job names, slots, member names, host names, versions, statuses
and counts only -- never anything read from the vault.
"""

from __future__ import annotations

PREFIX = "pmjobsd"


def claim(group: str, job: str, slot: str) -> str:
    """The claim of one cron slot of one job (value: member and fencing token; expires with the lease)."""
    return f"{PREFIX}:{group}:claim:{job}:{slot}"


def token(group: str, job: str) -> str:
    """The job's fencing counter: INCR gives each claim a token higher than every earlier one."""
    return f"{PREFIX}:{group}:token:{job}"


def member(group: str, name: str) -> str:
    """A member's heartbeat (host, version, pid, instance id; expires when it stops beating)."""
    return f"{PREFIX}:{group}:member:{name}"


def members(group: str) -> str:
    """The set of member names ever seen in the group (for ``status --group``: alive or lost)."""
    return f"{PREFIX}:{group}:members"


def runs(group: str) -> str:
    """The group's run stream (bounded length): who ran which slot of which job, and how it ended."""
    return f"{PREFIX}:{group}:runs"
