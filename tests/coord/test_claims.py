"""Claim, renew, finish and fence against a real redis-server, with an injectable clock for the token floor."""

from __future__ import annotations

import time

from pmjobsd.coord.claims import DONE, RETRY, Claims
from pmjobsd.coord.engine import connect

SLOT = "2026-12-01T20:30:00.000+00:00"


class FakeClock:
    def __init__(self, now: float = 1_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _claims(server, member, *, lease=30.0, clock=None):
    client = connect(server.url, member=member, timeout=2)
    return Claims(client, group="g", member=member, lease=lease, clock=clock or FakeClock())


def test_a_slot_is_won_once_and_the_loser_learns_the_holder_and_its_token(redis_server):
    laptop, desktop = _claims(redis_server, "laptop"), _claims(redis_server, "desktop")
    won = laptop.claim("breach", SLOT)
    lost = desktop.claim("breach", SLOT)
    assert won.won and not lost.won
    assert (lost.holder, lost.token, lost.value.state) == ("laptop", won.token, "running")
    assert desktop.claim("breach", "2026-12-01T20:31:00.000+00:00").token > won.token  # one counter per job


def test_tokens_start_at_the_clock_floor_and_keep_increasing_when_the_clock_goes_back(redis_server):
    clock = FakeClock(1_000.0)
    claims = _claims(redis_server, "laptop", clock=clock)
    first = claims.claim("breach", "s1").token
    assert first == 1_000_000  # milliseconds of the claimer's clock
    clock.now = 10.0  # the clock jumped back: the highest token seen keeps the floor up
    assert claims.claim("breach", "s2").token == first + 1


def test_a_restart_that_loses_every_key_still_gives_higher_tokens(redis_server):
    clock = FakeClock(1_000.0)
    laptop = _claims(redis_server, "laptop", clock=clock)
    before = [laptop.claim("breach", f"s{n}").token for n in range(3)]
    redis_server.restart()  # no persistence: the counter starts again at 0
    clock.now += 1.0  # a second later, on another member's clock
    desktop = _claims(redis_server, "desktop", clock=clock)
    after = desktop.claim("breach", "s9").token
    assert after > max(before)


def test_the_fence_fails_once_the_slot_was_taken_over_and_passes_across_a_restart(redis_server):
    laptop = _claims(redis_server, "laptop", lease=0.3)
    desktop = _claims(redis_server, "desktop", lease=0.3)
    old = laptop.claim("backup", "s1")
    assert laptop.holds(old)
    assert desktop.claim("backup", "s2").won and laptop.holds(old)  # another slot's run is no takeover
    time.sleep(0.45)  # the holder stalled past its lease; another member takes its slot over
    new = desktop.claim("backup", "s1")
    assert new.won and new.token > old.token
    assert not laptop.holds(old) and desktop.holds(new)
    redis_server.restart()
    assert desktop.holds(new)  # nobody took it over since the data was lost: still the newest
    assert laptop.peek("backup", "s1").token == new.token


def test_only_the_holder_renews_and_an_expired_claim_goes_to_the_next_claimer(redis_server):
    laptop = _claims(redis_server, "laptop", lease=0.3)
    desktop = _claims(redis_server, "desktop", lease=0.3)
    mine = laptop.claim("breach", SLOT)
    assert laptop.renew(mine)
    assert not desktop.claim("breach", SLOT).won
    time.sleep(0.45)  # no renewal for longer than the lease: the holder is presumed gone
    taken = desktop.claim("breach", SLOT)
    assert taken.won and taken.token > mine.token
    assert not laptop.renew(mine)  # the slot is the other member's now


def test_a_renewal_after_a_restart_takes_the_vanished_claim_again_and_raises_the_counter(redis_server):
    laptop, desktop = _claims(redis_server, "laptop"), _claims(redis_server, "desktop")
    mine = laptop.claim("breach", SLOT)
    redis_server.restart()
    assert laptop.renew(mine)
    assert desktop.peek("breach", SLOT).member == "laptop"
    assert desktop.newest_token("breach") == mine.token  # a claim made now gets a higher one
    assert desktop.claim("breach", "s2").token > mine.token


def test_a_done_mark_keeps_others_out_for_its_time_then_goes(redis_server):
    laptop, desktop = _claims(redis_server, "laptop"), _claims(redis_server, "desktop")
    mine = laptop.claim("breach", SLOT)
    assert laptop.finish(mine, DONE, keep_for=0.3)
    lost = desktop.claim("breach", SLOT)
    assert not lost.won and lost.value.state == "done"
    time.sleep(0.45)
    assert desktop.peek("breach", SLOT) is None


def test_a_claim_waiting_for_its_retry_is_the_holders_alone(redis_server):
    laptop, desktop = _claims(redis_server, "laptop"), _claims(redis_server, "desktop")
    first = laptop.claim("breach", SLOT)
    assert laptop.finish(first, RETRY, keep_for=30)
    assert not desktop.claim("breach", SLOT).won
    again = laptop.claim("breach", SLOT)
    assert again.won and again.token > first.token
    assert not laptop.finish(first, DONE, keep_for=30)  # the first attempt's value is stale


def test_a_released_slot_can_be_taken_at_once(redis_server):
    laptop, desktop = _claims(redis_server, "laptop"), _claims(redis_server, "desktop")
    mine = laptop.claim("breach", SLOT)
    assert laptop.release(mine)
    assert desktop.claim("breach", SLOT).won
    assert not laptop.release(mine)  # not ours any more: left alone
