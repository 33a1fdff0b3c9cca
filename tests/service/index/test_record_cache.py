"""The item record cache: bounded in bytes, what is used each turn stays, one version at a time."""

from __future__ import annotations

from service.index.record_cache import ENTRY_OVERHEAD_BYTES, ItemRecordCache, entry_bytes


def test_records_used_since_the_last_turn_stay_and_the_rest_leave_past_the_bound() -> None:
    record = b"x" * 100
    size = entry_bytes("a", record)
    cache = ItemRecordCache(max_bytes=6 * size)  # three records a generation
    assert cache.lookup("v1", ["a", "b", "c", "z"]) == [None] * 4
    cache.store("v1", ["a", "b", "c", "z"], [record, record, record, None])  # z: not in the index
    assert len(cache) == 3
    cache.store("v1", ["d"], [record])  # the young generation is full: a turn, a b c are old
    assert cache.lookup("v1", ["a"]) == [record]  # used again: young again, beside d
    cache.store("v1", ["e", "f"], [record, record])  # a turn: b c leave, a d e old, f young
    assert cache.lookup("v1", ["a", "b", "c", "d", "e", "f"]) == [
        record,
        None,
        None,
        record,
        record,
        record,
    ]
    assert cache.held_bytes == 4 * size <= cache.max_bytes
    for k in range(20):  # however many come, the bound holds
        cache.store("v1", [f"n{k}"], [record])
        assert cache.held_bytes <= cache.max_bytes and len(cache) <= 6


def test_another_version_empties_it_and_a_late_store_for_the_old_one_is_dropped() -> None:
    cache = ItemRecordCache(max_bytes=10_000)
    cache.lookup("v1", ["a"])
    cache.store("v1", ["a"], [b"old"])
    assert cache.lookup("v2", ["a"]) == [None] and cache.held_bytes == 0
    cache.store("v1", ["a"], [b"old"])  # a fetch of v1 that finished after the switch
    assert cache.lookup("v2", ["a"]) == [None]


def test_no_bytes_keeps_nothing_and_a_record_over_half_the_bound_is_not_kept() -> None:
    off = ItemRecordCache(max_bytes=0)
    off.lookup("v1", ["a"])
    off.store("v1", ["a"], [b"r"])
    assert off.lookup("v1", ["a"]) == [None]
    small = ItemRecordCache(max_bytes=2 * (ENTRY_OVERHEAD_BYTES + 10))
    small.lookup("v1", ["a", "b"])
    small.store("v1", ["a", "b"], [b"x" * 1000, b"y"])
    assert small.lookup("v1", ["a", "b"]) == [None, b"y"]
