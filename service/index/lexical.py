"""Unseen query text -> the nearest known query, with no language model online.

`lexical_vectors` turns normalized texts into cheap lexical vectors: character trigrams of the
padded text and whole words, hashed (crc32, stable across processes) with a sign into ``dim``
buckets, sqrt term frequency, L2-normalized, so an inner product is a cosine similarity that
forgives word order, plurals and typos. `QueryMatcher` holds the known queries' normalized texts
and a faiss inner-product index over their vectors: an exact text match wins, otherwise the
nearest known query is used when its similarity reaches the threshold.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt

from service.contract import normalize_text

LEXICAL_DIM = 512
#: Above this many known queries an HNSW graph replaces the exact flat index.
FLAT_LIMIT = 200_000
MatchKind = Literal["exact", "nearest", "none", "empty"]


def _features(text: str) -> list[str]:
    padded = f" {text} "
    grams = [padded[i : i + 3] for i in range(len(padded) - 2)]
    return grams + [f"w:{word}" for word in text.split()]


def lexical_vectors(texts: Sequence[str], dim: int = LEXICAL_DIM) -> npt.NDArray[np.float32]:
    """(N, dim) L2-normalized lexical vectors of normalized texts (an empty text gives zeros).

    >>> v = lexical_vectors(["red running shoes", "running shoes red", "oak desk"])
    >>> bool(v[0] @ v[1] > 0.8), bool(v[0] @ v[2] < 0.3)  # word order forgiven
    (True, True)
    """
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for feature in _features(text):
            code = zlib.crc32(feature.encode("utf-8"))
            out[row, code % dim] += 1.0 if (code >> 31) & 1 else -1.0
    magnitude = np.sign(out) * np.sqrt(np.abs(out))
    norms = np.linalg.norm(magnitude, axis=1, keepdims=True)
    unit: npt.NDArray[np.float32] = np.divide(
        magnitude, norms, out=np.zeros_like(magnitude), where=norms > 0
    )
    return unit


def build_index(vectors: npt.NDArray[np.float32]) -> Any:
    """A faiss inner-product index over the rows of ``vectors`` (row i = query i)."""
    dim = vectors.shape[1]
    index = (
        faiss.IndexFlatIP(dim)
        if len(vectors) <= FLAT_LIMIT
        else faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    )
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def serialize_index(index: Any) -> bytes:
    return bytes(faiss.serialize_index(index).tobytes())


def deserialize_index(blob: bytes) -> Any:
    return faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8).copy())


@dataclass(frozen=True)
class QueryMatch:
    """How a request's query text was resolved: ``row`` is the known query used (-1 none)."""

    text: str
    kind: MatchKind
    row: int
    matched_text: str
    similarity: float


class QueryMatcher:
    """Known queries (normalized texts, in index row order) and their lexical faiss index."""

    def __init__(
        self, texts: Sequence[str], index: Any, threshold: float, dim: int = LEXICAL_DIM
    ) -> None:
        if index.ntotal != len(texts):
            raise ValueError(f"lexical index holds {index.ntotal} vectors for {len(texts)} texts")
        self.texts = list(texts)
        self.rows = {text: row for row, text in enumerate(self.texts)}
        self.index = index
        self.threshold = threshold
        self.dim = dim

    def match(self, query: str) -> QueryMatch:
        text = normalize_text(query)
        if not text:
            return QueryMatch(text, "empty", -1, "", 0.0)
        row = self.rows.get(text)
        if row is not None:
            return QueryMatch(text, "exact", row, text, 1.0)
        if self.index.ntotal == 0:
            return QueryMatch(text, "none", -1, "", 0.0)
        scores, found = self.index.search(lexical_vectors([text], self.dim), 1)
        similarity, nearest = float(scores[0, 0]), int(found[0, 0])
        if nearest < 0 or similarity < self.threshold:
            return QueryMatch(text, "none", -1, "", max(similarity, 0.0))
        return QueryMatch(text, "nearest", nearest, self.texts[nearest], similarity)
