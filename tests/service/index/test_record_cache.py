"""The item record cache: bounded in bytes, least recently used out, one version at a time."""

from __future__ import annotations

from service.index.record_cache import ENTRY_OVERHEAD_BYTES, ItemRecordCache


def _size(item_id: str, record: bytes) -> int:
    return len(item_id) + len(record) + ENTRY_OVERHEAD_BYTES


def test_the_least_recently_used_records_leave_past_the_bound() -> None:
    record = b"x" * 100
    cache = ItemRecordCache(max_bytes=3 * _size("a", record))
    assert cache.lookup("v1", ["a", "b", "c"]) == [None, None, None]
    cache.store("v1", ["a", "b", "c"], [record, record, None])  # c: not in the index, not kept
    assert len(cache) == 2
    assert cache.lookup("v1", ["a"]) == [record]  # a is now the most recently used
    cache.store("v1", ["d", "e"], [record, record])
    assert cache.lookup("v1", ["a", "b", "d", "e"]) == [record, None, record, record]
    assert cache.bytes == 3 * _size("a", record) <= cache.max_bytes


def test_another_version_empties_it_and_a_late_store_for_the_old_one_is_dropped() -> None:
    cache = ItemRecordCache(max_bytes=10_000)
    cache.lookup("v1", ["a"])
    cache.store("v1", ["a"], [b"old"])
    assert cache.lookup("v2", ["a"]) == [None] and cache.bytes == 0
    cache.store("v1", ["a"], [b"old"])  # a fetch of v1 that finished after the switch
    assert cache.lookup("v2", ["a"]) == [None]


def test_no_bytes_keeps_nothing_and_an_oversized_record_is_not_kept() -> None:
    off = ItemRecordCache(max_bytes=0)
    off.lookup("v1", ["a"])
    off.store("v1", ["a"], [b"r"])
    assert off.lookup("v1", ["a"]) == [None]
    small = ItemRecordCache(max_bytes=ENTRY_OVERHEAD_BYTES + 10)
    small.lookup("v1", ["a", "b"])
    small.store("v1", ["a", "b"], [b"x" * 1000, b"y"])
    assert small.lookup("v1", ["a", "b"]) == [None, b"y"]
