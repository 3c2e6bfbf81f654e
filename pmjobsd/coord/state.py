"""What the daemon knows about coordination right now, for status, /metrics and doctor.

One :class:`CoordinationState` per daemon, updated by the claim side (the
engine's reachability, claims won and lost, leases held) and by the group
side (heartbeats, a duplicate member); read by the status snapshot.  All
counts are since the daemon started.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class CoordinationSnapshot:
    group: str
    member: str
    engine: str  # the URL as engine.display_url shows it (no password)
    reachable: bool = False
    reachable_since: float | None = None  # epoch seconds of the last change of ``reachable``
    reconnect_at: float | None = None  # epoch seconds of the next attempt while unreachable
    last_error: str | None = None  # why the engine was last unreachable (scrubbed; no URL)
    leases_held: int = 0
    claims_won: int = 0
    claims_lost: int = 0  # slots another member held
    leases_lost: int = 0  # runs told to stop because their lease was lost
    engine_down_skips: int = 0  # vault runs skipped because the engine was unreachable
    engine_down_local: int = 0  # vault runs run here alone because the engine was unreachable
    last_heartbeat: float | None = None
    duplicate_member: str | None = None  # set while another daemon beats under the same member name


class CoordinationState:
    """A thread-safe holder of the current :class:`CoordinationSnapshot`."""

    def __init__(self, group: str, member: str, engine: str):
        self._lock = threading.Lock()
        self._snapshot = CoordinationSnapshot(group, member, engine)

    def snapshot(self) -> CoordinationSnapshot:
        with self._lock:
            return self._snapshot

    def update(self, **changes: object) -> None:
        """Replace fields; ``reachable`` changes also stamp ``reachable_since``."""
        with self._lock:
            current = self._snapshot
            if "reachable" in changes and changes["reachable"] != current.reachable:
                changes.setdefault("reachable_since", time.time())
            self._snapshot = replace(current, **changes)  # type: ignore[arg-type]

    def count(self, field: str, by: int = 1) -> None:
        """Add ``by`` to the counter ``field``."""
        with self._lock:
            self._snapshot = replace(self._snapshot, **{field: getattr(self._snapshot, field) + by})
