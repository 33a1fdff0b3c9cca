"""The Redis value of each record kind: little-endian binary, fp16 vectors packed raw.

    item   <QQiiiIIHH  id hash, brand hash (contract.item_hashes), category, brand,
           price_bucket, len(title), len(text), title terms, text terms | vec D x f16 | title |
           text | title term hashes u64 | text-only term hashes u64
    query  <iI     category, n | n item id hashes u64, ascending | vec D x f16 | n x D f16 pair
                   vecs, one per hash: the query's (query, item) pairs
    user   <iiiI   age, gender, city_tier, n | n x D f16 history query vecs | n x D f16 pair vecs

-1 means unknown in every integer field. Decoding needs only D (the snapshot meta's text_dim).
The loader writes `RECORD_FORMAT` into each version's meta and the store reads no other.
"""

from __future__ import annotations

import functools
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from service._kernels import split_items
from service.contract import ItemTerms

_ITEM = struct.Struct("<QQiiiIIHH")
#: 2: a query record carries its pairs (before: a key per (query, item) pair).
RECORD_FORMAT = 2

_QUERY = struct.Struct("<iI")
_USER = struct.Struct("<iiiI")
_F16 = np.dtype("<f2")
_U64 = np.dtype("<u8")
Vector = npt.NDArray[Any]


@dataclass(frozen=True)
class QueryRecord:
    category: int
    vec: Vector  # (D,) float16
    pair_item_hash: npt.NDArray[np.uint64]  # (n,) ascending: the items the query has pairs with
    pair_vec: Vector  # (n, D) float16, row k the pair of the item hashed pair_item_hash[k]

    def pairs_of(
        self, item_hash: npt.NDArray[np.uint64], item_known: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.bool_], Vector]:
        """Which of N candidates (their id hashes, whether the index holds them) the query has a
        pair with, (N,) bool, and those pairs' vectors, (k, D) float16, in candidate order."""
        hashes = self.pair_item_hash
        if not len(hashes):
            return np.zeros(len(item_hash), dtype=bool), self.pair_vec
        at = np.minimum(np.searchsorted(hashes, item_hash), len(hashes) - 1)
        # An unknown candidate's hash is 0 in the candidate columns: never a pair's.
        paired = (hashes[at] == item_hash) & item_known
        return paired, self.pair_vec[at[paired]]


@dataclass(frozen=True)
class UserRecord:
    age: int
    gender: int
    city_tier: int
    history_query_vec: Vector  # (n, D) float16, oldest first
    history_pair_vec: Vector  # (n, D) float16


def _vec_bytes(vec: Vector) -> bytes:
    return np.ascontiguousarray(vec, dtype=_F16).tobytes()


def encode_item(
    id_hash: int,
    brand_hash: int,
    category: int,
    brand: int,
    price_bucket: int,
    vec: Vector,
    title: str,
    text: str,
    title_terms: npt.NDArray[np.uint64],
    text_terms: npt.NDArray[np.uint64],
) -> bytes:
    t, x = title.encode("utf-8"), text.encode("utf-8")
    head = _ITEM.pack(
        id_hash,
        brand_hash,
        category,
        brand,
        price_bucket,
        len(t),
        len(x),
        len(title_terms),
        len(text_terms),
    )
    terms = np.concatenate([title_terms, text_terms]).astype("<u8").tobytes()
    return head + _vec_bytes(vec) + t + x + terms


class TextColumn(Sequence[str]):
    """N strings, each a UTF-8 slice of a buffer (row i: ``sources[i][starts[i]:stops[i]]``),
    decoded only when read.

    The request path reads few of them (a title only where the phrase test needs it), so a
    batch of records costs neither a decode nor a copy per item: the slices point into the
    records as Redis returned them, or into a snapshot's string blob. An empty slice is the
    empty string (the form of an item the index lacks).

    >>> record = b"red shoes|hat"
    >>> column = TextColumn([record, record, b""], np.array([0, 10, 0]), np.array([9, 13, 0]))
    >>> list(column)
    ['red shoes', 'hat', '']
    """

    def __init__(
        self,
        sources: Sequence[bytes | mmap.mmap],
        starts: npt.NDArray[np.int64],
        stops: npt.NDArray[np.int64],
    ) -> None:
        self.sources, self.starts, self.stops = sources, starts, stops

    @classmethod
    def empty(cls, n: int) -> TextColumn:
        zeros = np.zeros(n, dtype=np.int64)
        return cls([b""] * n, zeros, zeros)

    @classmethod
    def from_strings(cls, values: Sequence[str]) -> TextColumn:
        encoded = [value.encode("utf-8") for value in values]
        sizes = np.array([len(e) for e in encoded], dtype=np.int64)
        return cls(encoded, np.zeros(len(encoded), dtype=np.int64), sizes)

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        start, stop = int(self.starts[index]), int(self.stops[index])
        return self.sources[index][start:stop].decode("utf-8")

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same strings."""
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"TextColumn({len(self)} strings)"

    def scatter(self, n: int, rows: npt.NDArray[np.int64]) -> TextColumn:
        """These strings at ``rows`` of an ``n``-long column whose other rows are empty."""
        sources: list[bytes | mmap.mmap] = [b""] * n
        for row, source in zip(rows.tolist(), self.sources, strict=True):
            sources[row] = source
        starts, stops = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        starts[rows], stops[rows] = self.starts, self.stops
        return TextColumn(sources, starts, stops)


@dataclass(frozen=True)
class ItemBatch:
    """Many item records decoded at once (the request path's form)."""

    id_hash: npt.NDArray[np.uint64]
    brand_hash: npt.NDArray[np.uint64]
    category: npt.NDArray[np.int32]
    brand: npt.NDArray[np.int32]
    price_bucket: npt.NDArray[np.int32]
    vec: Vector  # (k, D) float16
    titles: TextColumn
    texts: TextColumn
    terms: ItemTerms


@functools.cache
def _item_dtype(dim: int) -> np.dtype[Any]:
    return np.dtype(
        [
            ("id_hash", "<u8"),
            ("brand_hash", "<u8"),
            ("category", "<i4"),
            ("brand", "<i4"),
            ("price_bucket", "<i4"),
            ("n_title", "<u4"),
            ("n_text", "<u4"),
            ("n_title_terms", "<u2"),
            ("n_text_terms", "<u2"),
            ("vec", "<f2", (dim,)),
        ]
    )


def decode_items(raws: list[bytes], dim: int) -> ItemBatch:
    """Item records -> columns: the fixed-size heads in one array, every record's term hashes
    in another (split out in one C pass, `_kernels.split_items`), titles and texts left in the
    records until read. A record whose length disagrees with its head is a ValueError."""
    dtype = _item_dtype(dim)
    at = dtype.fields
    assert at is not None
    joined_heads, tails, stops, terms_at, term_offsets = split_items(
        raws,
        dtype.itemsize,
        at["n_title"][1],
        at["n_text"][1],
        at["n_title_terms"][1],
        at["n_text_terms"][1],
    )
    heads = np.frombuffer(joined_heads, dtype=dtype)
    title_stops = np.frombuffer(stops, np.int64)
    return ItemBatch(
        heads["id_hash"],
        heads["brand_hash"],
        heads["category"],
        heads["brand"],
        heads["price_bucket"],
        heads["vec"],
        TextColumn(raws, np.full(len(raws), dtype.itemsize, dtype=np.int64), title_stops),
        TextColumn(raws, title_stops, np.frombuffer(terms_at, np.int64)),
        # Term hashes end every record, title terms first: joined, they are ItemTerms' runs.
        ItemTerms(
            np.frombuffer(tails, _U64),
            np.frombuffer(term_offsets, np.int64),
            heads["n_title_terms"].astype(np.int64),
        ),
    )


def encode_query(
    category: int,
    vec: Vector,
    pair_item_hash: npt.NDArray[np.uint64],
    pair_vec: Vector,
) -> bytes:
    """A query record with its pairs: ``pair_item_hash`` (n,) the paired items' id hashes
    (distinct; stored ascending), ``pair_vec`` (n, D) their pair vectors."""
    if len(pair_vec) != len(pair_item_hash):
        raise ValueError("pair item hashes and pair vectors differ in length")
    order = np.argsort(pair_item_hash, kind="stable")
    hashes = np.asarray(pair_item_hash, dtype=_U64)[order]
    if bool(np.any(hashes[1:] == hashes[:-1])):
        raise ValueError("a query pairs the same item id hash twice")
    return (
        _QUERY.pack(category, len(hashes))
        + hashes.tobytes()
        + _vec_bytes(vec)
        + _vec_bytes(np.asarray(pair_vec).reshape(len(hashes), len(vec))[order])
    )


def decode_query(raw: bytes, dim: int) -> QueryRecord:
    """A query record (views into ``raw``); a length that disagrees with its head is a
    ValueError."""
    category, n = _QUERY.unpack_from(raw)
    size = _QUERY.size + n * _U64.itemsize + (1 + n) * dim * _F16.itemsize
    if len(raw) != size:
        raise ValueError(f"query record of {len(raw)} bytes, its head says {size}")
    vectors = np.frombuffer(raw, _F16, offset=_QUERY.size + n * _U64.itemsize)
    return QueryRecord(
        category,
        vectors[:dim],
        np.frombuffer(raw, _U64, count=n, offset=_QUERY.size),
        vectors[dim:].reshape(n, dim),
    )


def encode_user(
    age: int, gender: int, city_tier: int, history_query: Vector, history_pair: Vector
) -> bytes:
    n = len(history_query)
    if len(history_pair) != n:
        raise ValueError("history query and pair vectors differ in length")
    return (
        _USER.pack(age, gender, city_tier, n) + _vec_bytes(history_query) + _vec_bytes(history_pair)
    )


def decode_user(raw: bytes, dim: int) -> UserRecord:
    age, gender, city_tier, n = _USER.unpack_from(raw)
    vectors = np.frombuffer(raw, dtype=_F16, count=2 * n * dim, offset=_USER.size)
    vectors = vectors.reshape(2, n, dim)
    return UserRecord(age, gender, city_tier, vectors[0], vectors[1])
