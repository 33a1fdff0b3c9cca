"""The Redis value of each record kind: little-endian binary, fp16 vectors packed raw.

    item   <iiiII  category, brand, price_bucket, len(title), len(text) | vec D x f16 | title | text
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

_ITEM = struct.Struct("<iiiII")
_QUERY = struct.Struct("<i")
_USER = struct.Struct("<iiiI")
_F16 = np.dtype("<f2")
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
    category: int, brand: int, price_bucket: int, vec: Vector, title: str, text: str
) -> bytes:
    t, x = title.encode("utf-8"), text.encode("utf-8")
    return _ITEM.pack(category, brand, price_bucket, len(t), len(x)) + _vec_bytes(vec) + t + x


@dataclass(frozen=True)
class ItemBatch:
    """Many item records decoded at once (the request path's form)."""

    category: npt.NDArray[np.int32]
    brand: npt.NDArray[np.int32]
    price_bucket: npt.NDArray[np.int32]
    vec: Vector  # (k, D) float16
    titles: list[str]
    texts: list[str]


def _item_dtype(dim: int) -> np.dtype[Any]:
    return np.dtype(
        [
            ("category", "<i4"),
            ("brand", "<i4"),
            ("price_bucket", "<i4"),
            ("n_title", "<u4"),
            ("n_text", "<u4"),
            ("vec", "<f2", (dim,)),
        ]
    )


def decode_items(raws: list[bytes], dim: int) -> ItemBatch:
    """Item records -> columns: the fixed-size heads and vectors in one frombuffer."""
    dtype = _item_dtype(dim)
    fixed = dtype.itemsize
    heads = np.frombuffer(b"".join([raw[:fixed] for raw in raws]), dtype=dtype)
    titles, texts = [], []
    for raw, n_title, n_text in zip(
        raws, heads["n_title"].tolist(), heads["n_text"].tolist(), strict=True
    ):
        titles.append(raw[fixed : fixed + n_title].decode("utf-8"))
        texts.append(raw[fixed + n_title : fixed + n_title + n_text].decode("utf-8"))
    return ItemBatch(
        heads["category"], heads["brand"], heads["price_bucket"], heads["vec"], titles, texts
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
