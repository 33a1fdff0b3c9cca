"""The Redis value of each record kind: little-endian binary, fp16 vectors packed raw.

    item   <QQiiiIIHH  id hash, brand hash (contract.item_hashes), category, brand,
           price_bucket, len(title), len(text), title terms, text terms | vec D x f16 | title |
           text | title term hashes u64 | text-only term hashes u64
    query  <i      category | vec D x f16
    user   <iiiI   age, gender, city_tier, n | n x D f16 history query vecs | n x D f16 pair vecs
    pair   vec D x f16

-1 means unknown in every integer field. Decoding needs only D (the snapshot meta's text_dim).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

_ITEM = struct.Struct("<QQiiiIIHH")
_QUERY = struct.Struct("<i")
_USER = struct.Struct("<iiiI")
_F16 = np.dtype("<f2")
_U64 = np.dtype("<u8")
Vector = npt.NDArray[Any]


@dataclass(frozen=True)
class QueryRecord:
    category: int
    vec: Vector  # (D,) float16


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


@dataclass(frozen=True)
class ItemBatch:
    """Many item records decoded at once (the request path's form)."""

    id_hash: npt.NDArray[np.uint64]
    brand_hash: npt.NDArray[np.uint64]
    category: npt.NDArray[np.int32]
    brand: npt.NDArray[np.int32]
    price_bucket: npt.NDArray[np.int32]
    vec: Vector  # (k, D) float16
    titles: list[str]
    texts: list[str]
    title_terms: npt.NDArray[np.uint64]  # all records' title term hashes, in record order
    title_term_counts: npt.NDArray[np.int64]  # (k,)
    text_terms: npt.NDArray[np.uint64]
    text_term_counts: npt.NDArray[np.int64]


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
    """Item records -> columns: the fixed-size heads and vectors in one frombuffer."""
    dtype = _item_dtype(dim)
    fixed = dtype.itemsize
    heads = np.frombuffer(b"".join([raw[:fixed] for raw in raws]), dtype=dtype)
    n_title, n_text = heads["n_title"].tolist(), heads["n_text"].tolist()
    n_title_terms = heads["n_title_terms"].astype(np.int64)
    n_text_terms = heads["n_text_terms"].astype(np.int64)
    titles, texts, term_bytes = [], [], []
    for raw, title_len, text_len, terms_len in zip(
        raws, n_title, n_text, (8 * (n_title_terms + n_text_terms)).tolist(), strict=True
    ):
        at = fixed + title_len + text_len
        titles.append(raw[fixed : fixed + title_len].decode("utf-8"))
        texts.append(raw[fixed + title_len : at].decode("utf-8"))
        term_bytes.append(raw[at : at + terms_len])
    # Every record's terms in one buffer: [title 1, text 1, title 2, text 2, ...]; split with
    # segment labels instead of a Python slice per item.
    flat = np.frombuffer(b"".join(term_bytes), dtype=_U64)
    lengths = np.stack([n_title_terms, n_text_terms], axis=1).ravel()
    is_title = np.repeat(np.arange(len(lengths)) % 2 == 0, lengths)
    return ItemBatch(
        heads["id_hash"],
        heads["brand_hash"],
        heads["category"],
        heads["brand"],
        heads["price_bucket"],
        heads["vec"],
        titles,
        texts,
        flat[is_title],
        n_title_terms,
        flat[~is_title],
        n_text_terms,
    )


def decode_pairs(raws: list[bytes], dim: int) -> Vector:
    """Many pair records -> (k, D) float16."""
    return np.frombuffer(b"".join(raws), dtype=_F16).reshape(len(raws), dim)


def encode_query(category: int, vec: Vector) -> bytes:
    return _QUERY.pack(category) + _vec_bytes(vec)


def decode_query(raw: bytes, dim: int) -> QueryRecord:
    (category,) = _QUERY.unpack_from(raw)
    return QueryRecord(category, np.frombuffer(raw, dtype=_F16, count=dim, offset=_QUERY.size))


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


def encode_pair(vec: Vector) -> bytes:
    return _vec_bytes(vec)
