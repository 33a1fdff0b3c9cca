"""Item records of the live index version, kept in-process between requests.

An index version is immutable (the loader writes a new version and moves the pointer), so an item
record read once stays right for as long as its version is the one read: a request whose
candidates were seen before reads only the others from Redis. The cache holds the raw records as
Redis returned them (they are decoded in one batch with the rest, so a hit and a miss cost the
same to decode), least recently used first out, bounded in bytes; a fetch from another version
empties it. Only records the index holds are kept: an id the index lacks is never stored, so
clients cannot fill the cache with ids of their own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

#: Bookkeeping per entry on top of the key's and the record's bytes (dict slot, bytes and str
#: object headers), so the bound holds for the process, not only for the payload.
ENTRY_OVERHEAD_BYTES = 200


class ItemRecordCache:
    """Raw item records by id for one index version, least recently used out past
    ``max_bytes`` (0: nothing is kept)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.version: str | None = None
        self.bytes = 0
        self._records: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def lookup(self, version: str, item_ids: Sequence[str]) -> list[bytes | None]:
        """The cached record of each id (None where not cached); another version than the
        cached one empties the cache first."""
        if version != self.version:
            self._records.clear()
            self.bytes, self.version = 0, version
        records = self._records
        found = [records.get(item_id) for item_id in item_ids]
        for item_id, raw in zip(item_ids, found, strict=True):
            if raw is not None:
                records.move_to_end(item_id)
        return found

    def store(self, version: str, item_ids: Sequence[str], records: Sequence[bytes | None]) -> None:
        """Keep the records the index returned for ``version`` (None: not in the index)."""
        if version != self.version or not self.max_bytes:
            return
        for item_id, raw in zip(item_ids, records, strict=True):
            if raw is None or item_id in self._records:
                continue
            size = len(item_id) + len(raw) + ENTRY_OVERHEAD_BYTES
            if size > self.max_bytes:
                continue
            self._records[item_id] = raw
            self.bytes += size
        while self.bytes > self.max_bytes:
            old_id, old = self._records.popitem(last=False)
            self.bytes -= len(old_id) + len(old) + ENTRY_OVERHEAD_BYTES
