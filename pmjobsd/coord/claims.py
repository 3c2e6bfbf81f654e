"""Claims on cron slots, with fencing tokens: each step one Lua script, so each is atomic in Redis.

A claim is the key ``keys.claim(group, job, slot)`` whose value is
``<member>|<token>|<state>``: ``running`` while the holder runs it (it expires
with the lease unless renewed), ``retry`` while the holder waits to try the
slot again, ``done`` once it finished (kept for a bounded time, so that a late
member does not run the slot again).  The token comes from INCR of the job's
counter, raised first to a *floor* when the counter is lower: the claimer's
clock in milliseconds, or the highest token this member has seen plus one,
whichever is higher.  So tokens keep increasing when Redis restarts without its
data (the counter starts again at 0): see docs/coordination.md, "Tokens".

Nothing here retries, sleeps or catches: the caller (coordinator.py) decides
what an unreachable server means.  ``clock`` (epoch seconds) is injectable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pmjobsd.coord import keys

if TYPE_CHECKING:
    import redis

RUNNING, RETRY, DONE = "running", "retry", "done"

# KEYS: claim, counter.  ARGV: member, lease_ms, floor.  A claim absent, or our own waiting
# for its retry, is taken with a new token; anything else is answered with its value.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then
  local holder, state = string.match(current, '^(.*)|%d+|(%a+)$')
  if not (holder == ARGV[1] and state == 'retry') then
    return {0, current}
  end
end
local token = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if token < floor then
  redis.call('SET', KEYS[2], ARGV[3])
  token = floor
end
local value = ARGV[1] .. '|' .. string.format('%.0f', token) .. '|running'
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value}
"""

# KEYS: claim, counter.  ARGV: our value, lease_ms, our token.  1: renewed; 2: the key was gone
# (a restarted Redis) and is ours again, the counter raised to our token; 0: someone else's.
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
if counter < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[3])
end
return 2
"""

# KEYS: claim.  ARGV: our value, the new value ('' deletes), keep_ms.  1 when it was still ours, or
# gone (a restarted Redis lost it: the done mark is ours to write, so a watcher does not run it again).
_SETTLE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""


@dataclass(frozen=True)
class ClaimValue:
    """What a claim key holds: who, with which token, in which state."""

    member: str
    token: int
    state: str

    @classmethod
    def parse(cls, raw: str) -> ClaimValue:
        member, token, state = raw.rsplit("|", 2)
        return cls(member, int(token), state)

    def raw(self) -> str:
        return f"{self.member}|{self.token}|{self.state}"


@dataclass(frozen=True)
class Claim:
    """The answer to :meth:`Claims.claim`: ``won``, and the value the key holds now."""

    job: str
    slot: str
    won: bool
    value: ClaimValue
    taken_at: float  # the claimer's clock when it was asked

    @property
    def token(self) -> int:
        return self.value.token

    @property
    def holder(self) -> str:
        return self.value.member


class Claims:
    """Claim, renew, finish and fence the slots of one group, as ``member``, with leases of ``lease`` s."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        group: str,
        member: str,
        lease: float,
        clock: Callable[[], float] = time.time,
        highest_seen: int = 0,
    ):
        self.client = client
        self.group, self.member, self.lease = group, member, lease
        self.clock = clock
        self.highest_seen = highest_seen  # the highest token this member has seen (the floor's second part)
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._settle = client.register_script(_SETTLE)

    @property
    def lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    def _seen(self, token: int) -> None:
        self.highest_seen = max(self.highest_seen, token)

    def floor(self) -> int:
        """The lowest token the next claim may get: our clock in ms, or above every token we have seen."""
        return max(int(self.clock() * 1000), self.highest_seen + 1)

    def claim(self, job: str, slot: str) -> Claim:
        """Take ``slot`` of ``job`` if nobody holds it (or it is ours, waiting for a retry)."""
        now = self.clock()
        won, raw = self._claim(
            keys=[keys.claim(self.group, job, slot), keys.token(self.group, job)],
            args=[self.member, self.lease_ms, self.floor()],
        )
        value = ClaimValue.parse(raw)
        self._seen(value.token)
        return Claim(job, slot, bool(won), value, now)

    def renew(self, claim: Claim) -> bool:
        """Extend our lease by ``lease``; False when the slot is someone else's now.

        A key that vanished (a restarted Redis lost it) is taken again with the same token.
        """
        result = self._renew(
            keys=[keys.claim(self.group, claim.job, claim.slot), keys.token(self.group, claim.job)],
            args=[claim.value.raw(), self.lease_ms, claim.token],
        )
        return bool(result)

    def finish(self, claim: Claim, state: str, keep_for: float) -> bool:
        """Mark our claim ``done`` (or ``retry``) for ``keep_for`` s; False when it was no longer ours."""
        new = ClaimValue(claim.value.member, claim.token, state).raw()
        return self._settle_value(claim, new, keep_for)

    def release(self, claim: Claim) -> bool:
        """Give the slot up now (another member may run it at once); False when it was no longer ours."""
        return self._settle_value(claim, "", 0)

    def _settle_value(self, claim: Claim, new: str, keep_for: float) -> bool:
        result = self._settle(
            keys=[keys.claim(self.group, claim.job, claim.slot)],
            args=[claim.value.raw(), new, max(1, int(keep_for * 1000))],
        )
        return bool(result)

    def peek(self, job: str, slot: str) -> ClaimValue | None:
        """The claim on ``slot`` now, or None when there is none (never taken, expired, lost)."""
        raw = self.client.get(keys.claim(self.group, job, slot))
        if raw is None:
            return None
        value = ClaimValue.parse(_text(raw))
        self._seen(value.token)
        return value

    def newest_token(self, job: str) -> int | None:
        """The job's counter: the newest token given to anyone (None when Redis has none)."""
        raw = self.client.get(keys.token(self.group, job))
        if raw is None:
            return None
        token = int(_text(raw))
        self._seen(token)
        return token

    def holds(self, claim: Claim) -> bool:
        """The fencing check: is ``claim`` still the slot's (no member took it over with a newer token)?

        It is :meth:`renew`: a claim still ours is extended, one that vanished with a restarted
        Redis is put back (nobody took the slot over), one that is someone else's fails.
        """
        return self.renew(claim)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
