"""Run ids: UUID version 7 (RFC 9562), so the history's key index grows at its end."""

from __future__ import annotations

import uuid

from pmjobsd.core.runner import new_run_id


def test_a_run_id_is_a_uuid7_of_its_start_in_ms_and_ids_sort_by_start():
    ids = [new_run_id(1_796_000_000.0 + index / 1000) for index in range(50)]
    parsed = [uuid.UUID(hex=run_id) for run_id in ids]
    assert all(len(run_id) == 32 and run_id == run_id.lower() for run_id in ids)
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    assert [int(run_id[:12], 16) for run_id in ids] == [1_796_000_000_000 + index for index in range(50)]
    assert sorted(ids) == ids  # time order is text order: the index by run id is appended to
    assert len(set(new_run_id(1_796_000_000.0) for _ in range(1000))) == 1000  # 74 random bits within a ms
