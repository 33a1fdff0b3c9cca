"""The index snapshot: the static index as files, the one input of both stores.

`export/snapshot.py` writes a snapshot from a world and its text tower; the loader copies it into
Redis; the embedded store memory-maps it. Layout (every array an ``.npy`` file, so each can be
memory-mapped; strings as one UTF-8 blob plus offsets):

    meta.json                  format, dims, dtype, fingerprints, counts, lexical settings
    queries/  text.*           normalized query texts (the known queries)
              category.npy     int32, -1 unknown
              vec.npy          (Q, D) float16 reduced vectors
    items/    key.*            raw item ids as requests send them
              title.*, text.*  for the lexical relevance features of unseen pairs
              category.npy, brand.npy, price_bucket.npy   int32, -1 unknown
              id_hash.npy, brand_hash.npy   uint64 contract.item_hashes (0: no brand)
              title_terms.npy, text_terms.npy (+ _offsets)   CSR of uint64 term hashes:
                               the title's, and the text's the title lacks (contract.ItemTerms)
              vec.npy          (I, D) float16
    users/    key.*            raw user ids
              age.npy, gender.npy, city_tier.npy          int32, -1 unknown
              history_offsets.npy   (U + 1,) int64 into history/
    history/  query_vec.npy, pair_vec.npy   (H, D) float16: each user's last <= 50 search clicks
    pairs/    query.npy, item.npy   int32 rows of queries/ and items/, sorted by (query, item)
              key.npy          int64 query row * items + item row (sorted: the lookup)
              vec.npy          (P, D) float16 reduced [CLS] Q [SEP] I [SEP] vectors
    lookup/   <kind>_hash.npy, <kind>_row.npy   sorted 64-bit key hashes -> rows
    lexical/  queries.faiss    faiss index of the queries' lexical vectors (row = query row)

Lookups by id go through sorted hashes (`searchsorted`), so opening a snapshot reads no table
into Python objects and costs the same for ten thousand items as for ten million.
"""

from __future__ import annotations

import functools
import json
import mmap as mmap_module
from dataclasses import asdict, dataclass
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from service.contract import ItemTerms, stable_hash
from service.index.lexical import QueryMatcher, deserialize_index
from service.index.records import TextColumn

SNAPSHOT_FORMAT = 3  # 2: items carry their term hashes; 3: and their id and brand hashes
META_FILE = "meta.json"
VECTOR_DTYPE = np.float16
LookupKind = Literal["query", "item", "user"]
Int64Array = npt.NDArray[np.int64]


class SnapshotError(ValueError):
    """A snapshot folder that is missing, malformed or of another format."""


def key_hash(kind: LookupKind, key: str) -> int:
    """The 64-bit hash a snapshot looks ids up by (queries by their normalized text)."""
    return stable_hash(f"index-{kind}", key)


def key_hashes(kind: LookupKind, keys: list[str]) -> npt.NDArray[np.uint64]:
    return np.fromiter((key_hash(kind, k) for k in keys), dtype=np.uint64, count=len(keys))


#: Ids whose lookup hash a serving process remembers (a C-level LRU; ~200 bytes an entry, so at
#: most ~40 MB): a blake2b per candidate was most of the embedded store's fetch, and the ids a
#: service sees repeat. Bounded, as anything clients fill must be.
LOOKUP_HASH_MEMO = 200_000
_memo_key_hash = functools.lru_cache(maxsize=LOOKUP_HASH_MEMO)(key_hash)


def lookup_hashes(kind: LookupKind, keys: list[str]) -> npt.NDArray[np.uint64]:
    """`key_hashes` for the request path, through the bounded memo."""
    return np.fromiter(
        map(_memo_key_hash, repeat(kind, len(keys)), keys), dtype=np.uint64, count=len(keys)
    )


def ragged_positions(starts: Int64Array, counts: Int64Array) -> Int64Array:
    """The positions ``starts[i] .. starts[i] + counts[i] - 1`` of every run, concatenated.

    >>> ragged_positions(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist()
    [5, 6, 9, 10, 11]
    """
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    return np.repeat(starts - (ends - counts), counts) + np.arange(total)


def pair_key(query_row: int | Int64Array, item_row: Int64Array, n_items: int) -> Int64Array:
    """The sortable int64 key of (query row, item row) pairs."""
    return np.asarray(query_row, dtype=np.int64) * max(n_items, 1) + item_row.astype(np.int64)


class StringColumn:
    """Strings stored as one UTF-8 blob and (n + 1) int64 offsets; reads them lazily."""

    def __init__(self, folder: Path, name: str, mmap: bool = True) -> None:
        mode: Literal["r"] | None = "r" if mmap else None
        # Plain ndarray views and an mmap object: numpy.memmap's per-index overhead would cost
        # more than the reads themselves (two reads per candidate per request).
        self.offsets: Int64Array = np.load(folder / f"{name}.offsets.npy", mmap_mode=mode).view(
            np.ndarray
        )
        blob = folder / f"{name}.utf8"
        self.blob: bytes | mmap_module.mmap = b""
        if blob.stat().st_size:  # mmap refuses an empty file, and an empty column is valid
            with blob.open("rb") as handle:
                self.blob = (
                    mmap_module.mmap(handle.fileno(), 0, access=mmap_module.ACCESS_READ)
                    if mmap
                    else handle.read()
                )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> str:
        start, stop = self.offsets[row : row + 2].tolist()
        return self.blob[start:stop].decode("utf-8")

    def to_list(self) -> list[str]:
        return [self[i] for i in range(len(self))]

    def take(self, rows: Int64Array) -> TextColumn:
        """These rows' strings, decoded only when read ('' where a row is -1)."""
        if len(self) == 0:
            return TextColumn.empty(len(rows))
        known, at = rows >= 0, np.maximum(rows, 0)
        starts = np.where(known, self.offsets[at], 0)
        stops = np.where(known, self.offsets[at + 1], 0)
        return TextColumn([self.blob] * len(rows), starts, stops)

    @staticmethod
    def write(folder: Path, name: str, values: list[str]) -> None:
        encoded = [v.encode("utf-8") for v in values]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        (folder / f"{name}.utf8").write_bytes(b"".join(encoded))
        np.save(folder / f"{name}.offsets.npy", offsets)


@dataclass(frozen=True)
class SnapshotMeta:
    """meta.json: what a snapshot holds and what it was built from."""

    format: int
    created: str
    text_dim: int
    vector_dtype: str
    history_length: int
    encoder_fingerprint: str
    text_tower_fingerprint: str
    counts: dict[str, int]
    lexical: dict[str, Any]
    source: dict[str, Any]

    @classmethod
    def read(cls, folder: Path) -> SnapshotMeta:
        path = folder / META_FILE
        if not path.is_file():
            raise SnapshotError(f"{folder}: not a snapshot (no {META_FILE})")
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotError(
                f"{folder}: snapshot format {raw.get('format')}, this build reads {SNAPSHOT_FORMAT}"
            )
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


class Snapshot:
    """A snapshot folder opened read-only (memory-mapped unless ``mmap=False``)."""

    def __init__(self, folder: Path, mmap: bool = True) -> None:
        self.folder = folder
        self.meta = SnapshotMeta.read(folder)
        mode: Literal["r"] | None = "r" if mmap else None

        def array(relative: str) -> npt.NDArray[Any]:
            path = folder / relative
            if not path.is_file():
                raise SnapshotError(f"{folder}: missing {relative}")
            loaded: npt.NDArray[Any] = np.load(path, mmap_mode=mode)
            return loaded.view(np.ndarray)  # still file-backed; no memmap indexing overhead

        self.array = array
        self.query_text = StringColumn(folder / "queries", "text", mmap)
        self.query_category = array("queries/category.npy")
        self.query_vec = array("queries/vec.npy")
        self.item_key = StringColumn(folder / "items", "key", mmap)
        self.item_title = StringColumn(folder / "items", "title", mmap)
        self.item_text = StringColumn(folder / "items", "text", mmap)
        self.item_category = array("items/category.npy")
        self.item_brand = array("items/brand.npy")
        self.item_price_bucket = array("items/price_bucket.npy")
        self.item_vec = array("items/vec.npy")
        self.item_id_hash = array("items/id_hash.npy")
        self.item_brand_hash = array("items/brand_hash.npy")
        self.item_title_terms = array("items/title_terms.npy")
        self.item_title_terms_offsets = array("items/title_terms_offsets.npy")
        self.item_text_terms = array("items/text_terms.npy")
        self.item_text_terms_offsets = array("items/text_terms_offsets.npy")
        self.user_key = StringColumn(folder / "users", "key", mmap)
        self.user_age = array("users/age.npy")
        self.user_gender = array("users/gender.npy")
        self.user_city_tier = array("users/city_tier.npy")
        self.history_offsets = array("users/history_offsets.npy")
        self.history_query_vec = array("history/query_vec.npy")
        self.history_pair_vec = array("history/pair_vec.npy")
        self.pair_query = array("pairs/query.npy")
        self.pair_item = array("pairs/item.npy")
        self.pair_vec = array("pairs/vec.npy")
        self._lookup = {
            kind: (array(f"lookup/{kind}_hash.npy"), array(f"lookup/{kind}_row.npy"))
            for kind in ("query", "item", "user")
        }
        self._pair_keys = array("pairs/key.npy")  # query row * items + item row, sorted
        self._check_counts()

    def _check_counts(self) -> None:
        found = {
            "queries": len(self.query_text),
            "items": len(self.item_key),
            "users": len(self.user_key),
            "pairs": len(self.pair_vec),
            "history": len(self.history_query_vec),
        }
        if found != self.meta.counts:
            raise SnapshotError(
                f"{self.folder}: counts {found} differ from meta {self.meta.counts}"
            )

    @property
    def lexical_index_path(self) -> Path:
        return self.folder / "lexical" / "queries.faiss"

    def query_matcher(self, threshold: float | None = None) -> QueryMatcher:
        """The known queries and their lexical index (threshold: the snapshot's unless given)."""
        lexical = self.meta.lexical
        return QueryMatcher(
            self.query_text.to_list(),
            deserialize_index(self.lexical_index_path.read_bytes()),
            float(lexical["threshold"] if threshold is None else threshold),
            int(lexical["dim"]),
        )

    def rows(self, kind: LookupKind, keys: list[str]) -> Int64Array:
        """Rows of the given ids (-1 where unknown)."""
        hashes, rows = self._lookup[kind]
        wanted = lookup_hashes(kind, keys)
        if len(hashes) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        at = np.clip(np.searchsorted(hashes, wanted), 0, len(hashes) - 1)
        return np.where(hashes[at] == wanted, rows[at].astype(np.int64), -1)

    def pair_rows(self, query_row: int, item_rows: Int64Array) -> Int64Array:
        """Rows of the (query, item) pairs (-1 where the pair or the item is unknown)."""
        if query_row < 0 or len(self._pair_keys) == 0:
            return np.full(len(item_rows), -1, dtype=np.int64)
        wanted = pair_key(query_row, item_rows, len(self.item_key))
        at = np.clip(np.searchsorted(self._pair_keys, wanted), 0, len(self._pair_keys) - 1)
        return np.where((self._pair_keys[at] == wanted) & (item_rows >= 0), at, -1)

    def item_term_hashes(self, row: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """An item's title term hashes and its text-only term hashes (none for row -1)."""
        if row < 0:
            empty = np.zeros(0, dtype=np.uint64)
            return empty, empty
        title, text = self.item_title_terms_offsets, self.item_text_terms_offsets
        return (
            self.item_title_terms[title[row] : title[row + 1]],
            self.item_text_terms[text[row] : text[row + 1]],
        )

    def item_terms(self, rows: Int64Array) -> ItemTerms:
        """The term hashes of these item rows (none for -1), as the relevance features read them:
        each item's title run then its text run, gathered for every item at once."""
        known, at = rows >= 0, np.maximum(rows, 0)
        title, text = self.item_title_terms_offsets, self.item_text_terms_offsets
        title_starts, text_starts = title[at], text[at]
        title_counts = np.where(known, title[at + 1] - title_starts, 0).astype(np.int64)
        text_counts = np.where(known, text[at + 1] - text_starts, 0).astype(np.int64)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(title_counts + text_counts, out=offsets[1:])
        hashes = np.empty(int(offsets[-1]), dtype=np.uint64)
        item_starts = offsets[:-1]
        hashes[ragged_positions(item_starts, title_counts)] = self.item_title_terms[
            ragged_positions(title_starts, title_counts)
        ]
        hashes[ragged_positions(item_starts + title_counts, text_counts)] = self.item_text_terms[
            ragged_positions(text_starts, text_counts)
        ]
        return ItemTerms(hashes, offsets, title_counts)

    def user_history(self, row: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """(query vectors, pair vectors) of a user's history, oldest first, each (n, D)."""
        start, stop = int(self.history_offsets[row]), int(self.history_offsets[row + 1])
        return self.history_query_vec[start:stop], self.history_pair_vec[start:stop]
