"""Item records of the live index version, kept in-process between requests.

An index version is immutable (the loader writes a new version and moves the pointer), so an item
record read once stays right for as long as its version is the one read: a request whose
candidates were seen before reads only the others from Redis. The cache holds the raw records as
Redis returned them (they are decoded in one batch with the rest, so a hit and a miss cost the
same to decode), bounded in bytes; a fetch from another version empties it. Only records the
index holds are kept: an id the index lacks is never stored, so clients cannot fill the cache
with ids of their own.

Eviction is by two generations rather than a strict least-recently-used order: records stored or
used since the last turn are young, the others old. A lookup that finds an old record makes it
young again; when the young generation would pass half the bound, the old one is dropped whole
and the young one becomes old. So a record used at least once per turn stays, and a hit costs one
dictionary lookup: the strict order's move-to-end per hit was half the cache's time at 200
candidates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: Bookkeeping per entry on top of the key's and the record's bytes (dict slot, bytes and str
#: object headers), so the bound holds for the process, not only for the payload.
ENTRY_OVERHEAD_BYTES = 200


def entry_bytes(item_id: str, record: bytes) -> int:
    """What one cached record counts against the bound."""
    return len(item_id) + len(record) + ENTRY_OVERHEAD_BYTES


class ItemRecordCache:
    """Raw item records by id for one index version, at most ``max_bytes`` in all (0: nothing
    is kept; a record over half of it is never kept)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.version: str | None = None
        self._young: dict[str, bytes] = {}
        self._old: dict[str, bytes] = {}
        self._young_bytes = self._old_bytes = 0

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    @property
    def held_bytes(self) -> int:
        return self._young_bytes + self._old_bytes

    def lookup(self, version: str, item_ids: Sequence[str]) -> list[bytes | None]:
        """The cached record of each id (None where not cached); another version than the
        cached one empties the cache first."""
        if not self.max_bytes:  # no cache: nothing to look for
            return [None] * len(item_ids)
        if version != self.version:
            self._young, self._old = {}, {}
            self._young_bytes = self._old_bytes = 0
            self.version = version
        found = list(map(self._young.get, item_ids))
        if self._old and None in found:
            old, promoted = self._old, []
            for k, item_id in enumerate(item_ids):
                if found[k] is None and (raw := old.pop(item_id, None)) is not None:
                    found[k] = raw
                    promoted.append((item_id, raw))
            self._old_bytes -= sum(entry_bytes(item_id, raw) for item_id, raw in promoted)
            self._keep(promoted)
        return found

    def store(self, version: str, item_ids: Sequence[str], records: Sequence[bytes | None]) -> None:
        """Keep the records the index returned for ``version`` (None: not in the index)."""
        if version != self.version or not self.max_bytes:
            return
        young, old = self._young, self._old
        self._keep(
            (item_id, raw)
            for item_id, raw in zip(item_ids, records, strict=True)
            if raw is not None and item_id not in young and item_id not in old
        )

    def _keep(self, entries: Iterable[tuple[str, bytes]]) -> None:
        half = self.max_bytes // 2
        for item_id, raw in entries:
            size = entry_bytes(item_id, raw)
            if size > half:
                continue
            if self._young_bytes + size > half:  # turn: the old generation goes
                self._old, self._old_bytes = self._young, self._young_bytes
                self._young, self._young_bytes = {}, 0
            self._young[item_id] = raw
            self._young_bytes += size
