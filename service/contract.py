"""The feature contract: the one definition of every feature that training and serving share.

This module owns
- the feature fields (name, source, kind, bucket count or dimension, default) in a `FeatureSpec`
  that is saved as JSON with a content hash (the analogue of FuxiCTR's feature_map.json);
- the stable hashing of raw ids into embedding buckets (blake2b, never Python's salted `hash()`);
- query and item text normalization and tokenization;
- the derived relevance features that PRECTR's RSL module reads, computed by one function
  (`relevance_features`) that the offline pipeline and the online service both call.

It imports only the standard library and numpy, so that `training/`, `export/` and the torch-free
service can all depend on it (see tests/test_architecture.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import numpy.typing as npt

from service._kernels import term_relevance

Source = Literal["user", "query", "item", "pair", "context"]
Kind = Literal["categorical", "dense", "vector"]

SPEC_FORMAT_VERSION = 1
#: Bucket 0 of every categorical table is reserved for "missing / unknown / out of range".
MISSING_BUCKET = 0
#: Longest user history (query, clicked item) the models read (PRECTR 5.1: at most 50).
HISTORY_LENGTH = 50
#: Relevance levels, PRECTR's k = 4: 0 irrelevant, 1 weak, 2 relevant, 3 strongly relevant.
RELEVANCE_LEVELS = 4
#: The query id of a recommendation request, which has no query text (SRJGraph's q_phi).
EMPTY_QUERY_ID = 0


@dataclass(frozen=True)
class FeatureField:
    """One feature: where it comes from, what it is, and what stands in when it is missing.

    Args:
        name: the field name; ONNX inputs and index records use it verbatim.
        source: which entity owns the value (user | query | item | pair | context).
        kind: categorical (an embedding bucket), dense (a float) or vector (a float vector).
        buckets: categorical only: the embedding table size, bucket 0 included.
        hashed: categorical only: raw values are hashed into buckets 1..buckets-1; when False the
            value is a small integer ``v`` that maps to bucket ``v + 1``.
        dim: vector only: the vector's dimension.
        max_length: vector only: set for a sequence of vectors (the user's history).
        default: the value served when the source has none (a bucket, a float, or a fill value).
        description: what the field means, for people.
    """

    name: str
    source: Source
    kind: Kind
    buckets: int | None = None
    hashed: bool = True
    dim: int | None = None
    max_length: int | None = None
    default: float = 0.0
    description: str = ""

    def __post_init__(self) -> None:
        if self.source not in get_args(Source):
            raise ValueError(f"{self.name}: unknown source {self.source!r}")
        if self.kind not in get_args(Kind):
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if self.kind == "categorical" and (self.buckets is None or self.buckets < 2):
            raise ValueError(f"{self.name}: a categorical field needs buckets >= 2")
        if self.kind == "vector" and (self.dim is None or self.dim < 1):
            raise ValueError(f"{self.name}: a vector field needs dim >= 1")
        if self.kind != "vector" and self.max_length is not None:
            raise ValueError(f"{self.name}: only vector fields can be sequences")

    def buckets_of_hashes(self, hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        """`encode` of values whose `stable_hash` under this field's name is already known.

        >>> f = FeatureField("item_id", "item", "categorical", buckets=101)
        >>> h = np.array([stable_hash("item_id", "i7")], dtype=np.uint64)
        >>> f.buckets_of_hashes(h).tolist() == f.encode(["i7"]).tolist()
        True
        """
        if not self.hashed or self.buckets is None:
            raise TypeError(f"{self.name} is not a hashed categorical field")
        return (hashes % np.uint64(self.buckets - 1)).astype(np.int64) + 1

    def encode_one(self, value: object) -> int:
        """`encode` of one value (a request-level field, once per request).

        >>> f = FeatureField("user_age", "user", "categorical", buckets=8, hashed=False)
        >>> [f.encode_one(v) for v in (0, 7, None)] == f.encode([0, 7, None]).tolist()
        True
        """
        if self.kind != "categorical" or self.buckets is None:
            raise TypeError(f"{self.name} is {self.kind}, not categorical")
        if self.hashed:
            return stable_bucket(self.name, value, self.buckets)
        # `encode`'s rule for one value, in plain Python: a numpy call per request-level field
        # cost more than the rest of the field's work (tests/test_contract.py holds them equal)
        number = -1 if value is None or value == "" else int(value)  # type: ignore[call-overload]
        return number + 1 if 0 <= number < self.buckets - 1 else MISSING_BUCKET

    def encode(self, values: Iterable[object]) -> npt.NDArray[np.int64]:
        """Map raw categorical values to embedding buckets (0 for missing: None or '').

        >>> f = FeatureField("item_price_bucket", "item", "categorical", buckets=8, hashed=False)
        >>> f.encode([0, 3, 7, None, -1]).tolist()
        [1, 4, 0, 0, 0]
        """
        if self.kind != "categorical" or self.buckets is None:
            raise TypeError(f"{self.name} is {self.kind}, not categorical")
        if self.hashed:
            return stable_buckets(self.name, values, self.buckets)
        if isinstance(values, np.ndarray) and values.dtype.kind in "iu":  # the request path
            ints = values.astype(np.int64)
        else:
            ints = np.array(
                [-1 if v is None or v == "" else int(v) for v in values],  # type: ignore[call-overload]
                dtype=np.int64,
            )
        in_range = (ints >= 0) & (ints < self.buckets - 1)
        return np.where(in_range, ints + 1, MISSING_BUCKET)


@dataclass(frozen=True)
class FeatureSpec:
    """The whole contract: an ordered tuple of fields plus the text-vector dimension.

    The content hash covers every field, so a model and an index built from different contracts
    are told apart before they meet.
    """

    fields: tuple[FeatureField, ...]
    format_version: int = SPEC_FORMAT_VERSION
    relevance_features: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"duplicate feature names: {duplicated}")

    def __getitem__(self, name: str) -> FeatureField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def select(
        self, *, source: Source | None = None, kind: Kind | None = None
    ) -> tuple[FeatureField, ...]:
        """The fields of one source and/or kind, in contract order."""
        return tuple(
            f
            for f in self.fields
            if (source is None or f.source == source) and (kind is None or f.kind == kind)
        )

    def to_dict(self) -> dict[str, Any]:
        body = {
            "format_version": self.format_version,
            "fields": [asdict(f) for f in self.fields],
            "relevance_features": list(self.relevance_features),
        }
        return {**body, "content_hash": _content_hash(body)}

    @property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the spec (hex, 64 characters)."""
        return str(self.to_dict()["content_hash"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        """Parse a saved spec; refuses one whose content hash does not match its body."""
        raw = json.loads(text)
        stored_hash = raw.pop("content_hash", None)
        spec = cls(
            fields=tuple(FeatureField(**f) for f in raw["fields"]),
            format_version=int(raw["format_version"]),
            relevance_features=tuple(raw.get("relevance_features", ())),
        )
        if stored_hash is not None and stored_hash != spec.content_hash:
            raise ValueError(
                f"feature spec content hash mismatch: file says {stored_hash[:12]}, "
                f"body hashes to {spec.content_hash[:12]}"
            )
        return spec

    def save(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> FeatureSpec:
        return cls.from_json(path.read_text(encoding="utf-8"))


def _content_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- stable hashing ------------------------------------------------------------------------------


def stable_hash(field_name: str, value: object) -> int:
    """A 64-bit hash of ``value`` salted by the field name, identical in every process.

    >>> stable_hash("user_id", 42) == stable_hash("user_id", "42")
    True
    >>> stable_hash("user_id", 42) == stable_hash("item_id", 42)
    False
    """
    digest = hashlib.blake2b(
        f"{field_name}\x1f{value}".encode(), digest_size=8, person=b"ranker-v1"
    ).digest()
    return int.from_bytes(digest, "little")


#: Memory bounds of the caches below, which the request path feeds with client text (queries,
#: item ids, supplied titles and texts). Text longer than CACHED_TEXT_CHARS is never cached:
#: long texts come from clients (supplied features of unknown items), each seen about once, and
#: caching them let 120 requests grow a worker to 3.6 GB. Queries, terms and ids are short. So a
#: cache holds at most its entries x (a 128-character key + its value): ~25 MB each.
CACHED_TEXT_CHARS = 128
TEXT_CACHE_ENTRIES = 50_000
BUCKET_CACHE_ENTRIES = 1 << 16

_T = TypeVar("_T")


def _short_text_cache(function: Callable[[str], _T]) -> Callable[[str], _T]:
    """``function`` with an LRU cache of TEXT_CACHE_ENTRIES for texts up to CACHED_TEXT_CHARS."""
    cached = functools.lru_cache(maxsize=TEXT_CACHE_ENTRIES)(function)

    @functools.wraps(function)
    def call(text: str) -> _T:
        return cached(text) if len(text) <= CACHED_TEXT_CHARS else function(text)

    return call


def _bucket(field_name: str, value: object, buckets: int) -> int:
    if value is None or value == "":
        return MISSING_BUCKET
    return 1 + stable_hash(field_name, value) % (buckets - 1)


# typed: 1, True and 1.0 are equal keys but format (and so hash) differently.
_cached_bucket = functools.lru_cache(maxsize=BUCKET_CACHE_ENTRIES, typed=True)(_bucket)


def stable_bucket(field_name: str, value: object, buckets: int) -> int:
    """The bucket in 1..buckets-1 of a raw id; None and '' go to bucket 0 (missing)."""
    if type(value) is str and len(value) > CACHED_TEXT_CHARS:
        return _bucket(field_name, value, buckets)  # a long client id: not worth a cache entry
    return _cached_bucket(field_name, value, buckets)


def stable_buckets(
    field_name: str, values: Iterable[object], buckets: int
) -> npt.NDArray[np.int64]:
    """`stable_bucket` over many values (numpy scalars count as their Python values)."""
    return np.fromiter(
        (
            stable_bucket(field_name, v.item() if isinstance(v, np.generic) else v, buckets)
            for v in values
        ),
        dtype=np.int64,
    )


# --- text --------------------------------------------------------------------------------------

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


@_short_text_cache
def normalize_text(text: str) -> str:
    """Unicode NFKC, case-folded, punctuation to spaces, whitespace collapsed.

    >>> normalize_text("  \\uff32ed  Running-SHOES!! ")  # fullwidth R
    'red running shoes'
    >>> normalize_text("Straße")
    'strasse'
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NON_WORD.sub(" ", folded).split())


@_short_text_cache
def tokenize(text: str) -> tuple[str, ...]:
    """The terms of a text after normalization, in order (duplicates kept).

    >>> tokenize("Wool  socks, WOOL!")
    ('wool', 'socks', 'wool')
    """
    return tuple(normalize_text(text).split())


@_short_text_cache
def _term_set(text: str) -> frozenset[str]:
    return frozenset(tokenize(text))


# --- derived relevance features ---------------------------------------------------------------

RELEVANCE_FEATURES: tuple[str, ...] = (
    "category_match",
    "title_term_coverage",
    "text_term_coverage",
    "title_jaccard",
    "exact_phrase_in_title",
)
"""Names of the columns `relevance_features` returns, in order."""

_U64 = np.uint64


@_short_text_cache
def _term_hashes(text: str) -> npt.NDArray[np.uint64]:
    """The sorted, distinct 64-bit hashes of a text's terms (what the index stores per item)."""
    hashes = np.fromiter((stable_hash("term", t) for t in _term_set(text)), dtype=_U64)
    hashes.sort()
    hashes.flags.writeable = False  # shared by the cache
    return hashes


def item_term_hashes(
    title: str, text: str
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """An item's title term hashes and the hashes of its text terms the title lacks."""
    in_title = _term_hashes(title)
    in_text = _term_hashes(text)
    return in_title, np.setdiff1d(in_text, in_title, assume_unique=True)


def csr(
    parts: Sequence[npt.NDArray[np.uint64]],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """Arrays -> (their concatenation, (len(parts) + 1,) offsets bounding each)."""
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(part) for part in parts], out=offsets[1:])
    flat = np.concatenate(parts) if len(parts) else np.zeros(0, dtype=_U64)
    return flat.astype(_U64, copy=False), offsets


@dataclass(frozen=True)
class ItemTerms:
    """The term hashes of N items in CSR form: what the lexical relevance features read.

    Item i's run is ``hashes[offsets[i]:offsets[i + 1]]``: its ``title_counts[i]`` title term
    hashes, then the hashes of its text terms the title lacks (the layout of an index record, so
    the request path decodes it without splitting).
    """

    hashes: npt.NDArray[np.uint64]
    offsets: npt.NDArray[np.int64]  # (N + 1,)
    title_counts: npt.NDArray[np.int64]  # (N,)

    def __len__(self) -> int:
        return len(self.title_counts)

    @classmethod
    def none(cls, n: int) -> ItemTerms:
        """N items without terms (unknown items)."""
        return cls(np.zeros(0, dtype=_U64), np.zeros(n + 1, dtype=np.int64), np.zeros(n, np.int64))

    @classmethod
    def from_lists(
        cls,
        titles: Sequence[npt.NDArray[np.uint64]],
        texts: Sequence[npt.NDArray[np.uint64]],
    ) -> ItemTerms:
        """Per item: its title term hashes and its text-only term hashes."""
        hashes, offsets = csr([part for pair in zip(titles, texts, strict=True) for part in pair])
        return cls(hashes, offsets[::2].copy(), np.diff(offsets)[::2].copy())

    def scatter(self, n: int, rows: npt.NDArray[np.int64]) -> ItemTerms:
        """These items' runs at ``rows`` (increasing) of N items whose other rows have none."""
        offsets = np.zeros(n + 1, dtype=np.int64)
        offsets[rows + 1] = np.diff(self.offsets)
        np.cumsum(offsets, out=offsets)
        title_counts = np.zeros(n, dtype=np.int64)
        title_counts[rows] = self.title_counts
        return ItemTerms(self.hashes[self.offsets[0] :], offsets, title_counts)

    @classmethod
    def of_texts(cls, titles: Sequence[str], texts: Sequence[str]) -> ItemTerms:
        pairs = [item_term_hashes(title, text) for title, text in zip(titles, texts, strict=True)]
        return cls.from_lists([p[0] for p in pairs], [p[1] for p in pairs])


def relevance_features(
    query: str,
    query_category: int,
    titles: Sequence[str],
    texts: Sequence[str],
    item_categories: Sequence[int] | npt.NDArray[np.integer[Any]],
) -> npt.NDArray[np.float32]:
    """Lexical relevance features of one query against many items, shape (N, 5).

    Columns (see `RELEVANCE_FEATURES`):
    - category_match: 1 when the query's category is known (>= 0) and equals the item's;
    - title_term_coverage: the fraction of distinct query terms found in the title;
    - text_term_coverage: the same over the title and the item text together;
    - title_jaccard: |Q & T| / |Q | T| over term sets;
    - exact_phrase_in_title: 1 when the whole normalized query appears in the title as words.
    An empty query (a recommendation request) gives all zeros.

    >>> relevance_features("red shoes", 3, ["Red running shoes", "Blue hat"],
    ...                    ["", "a red hat"], [3, 5]).astype(float).round(2).tolist()
    [[1.0, 1.0, 1.0, 0.67, 0.0], [0.0, 0.0, 0.5, 0.0, 0.0]]
    """
    if len(texts) != len(titles) or len(item_categories) != len(titles):
        raise ValueError("titles, texts and item_categories must have the same length")
    return relevance_features_of_terms(
        query, query_category, ItemTerms.of_texts(titles, texts), titles, item_categories
    )


def relevance_features_of_terms(
    query: str,
    query_category: int,
    terms: ItemTerms,
    titles: Sequence[str],
    item_categories: Sequence[int] | npt.NDArray[np.integer[Any]],
) -> npt.NDArray[np.float32]:
    """`relevance_features` over items given as term hashes (what the index holds): the term
    columns in one C pass over every item's run (`_kernels.term_relevance`).

    ``titles`` is read only for the items whose title holds every query term (the phrase test).
    """
    n = len(terms)
    out = np.zeros((n, len(RELEVANCE_FEATURES)), dtype=np.float32)
    query_terms = _term_hashes(query)
    if len(query_terms) == 0 or n == 0:
        return out
    if query_category >= 0:
        out[:, 0] = np.asarray(item_categories, dtype=np.int64) == query_category
    whole_query_in_title = term_relevance(
        np.ascontiguousarray(terms.hashes, dtype=_U64),
        np.ascontiguousarray(terms.offsets, dtype=np.int64),
        np.ascontiguousarray(terms.title_counts, dtype=np.int64),
        query_terms,
        out,
    )
    phrase = f" {normalize_text(query)} "
    for i in whole_query_in_title:  # every term present: is it the phrase?
        out[i, 4] = phrase in f" {normalize_text(titles[i])} "
    return out


# --- the default contract ------------------------------------------------------------------------

#: The reduced text-vector dimension the text tower produces and the index stores (PRECTR 4.2).
DEFAULT_TEXT_DIM = 64


def item_hashes(item_id: str, brand: int) -> tuple[int, int]:
    """The `stable_hash` of an item's id and brand under the contract's field names, which the
    index stores so the service buckets candidates with one vectorized modulo (0: no brand)."""
    return stable_hash("item_id", item_id), (stable_hash("item_brand", brand) if brand >= 0 else 0)


def default_feature_spec(text_dim: int = DEFAULT_TEXT_DIM) -> FeatureSpec:
    """The contract every model of this project is trained and served with."""

    def categorical(
        name: str, source: Source, buckets: int, description: str, *, hashed: bool = True
    ) -> FeatureField:
        return FeatureField(
            name, source, "categorical", buckets=buckets, hashed=hashed, description=description
        )

    def dense(name: str, source: Source, description: str) -> FeatureField:
        return FeatureField(name, source, "dense", default=0.0, description=description)

    def vector(
        name: str, source: Source, description: str, max_length: int | None = None
    ) -> FeatureField:
        return FeatureField(
            name, source, "vector", dim=text_dim, max_length=max_length, description=description
        )

    fields = (
        categorical("user_id", "user", 50_021, "hashed user id"),
        categorical("user_age", "user", 8, "age bucket 0..5", hashed=False),
        categorical("user_gender", "user", 4, "0 unknown, 1, 2", hashed=False),
        categorical("user_city_tier", "user", 6, "city tier 0..3", hashed=False),
        dense("history_length", "user", "number of history pairs / 50"),
        vector("history_query_vec", "user", "reduced vectors of history queries", HISTORY_LENGTH),
        vector(
            "history_pair_vec", "user", "reduced relevance vectors of history pairs", HISTORY_LENGTH
        ),
        categorical("query_id", "query", 20_011, "hashed normalized query text"),
        categorical(
            "query_category", "query", 1_024, "query category, unknown -> missing", hashed=False
        ),
        dense("query_length", "query", "number of query terms / 4"),
        vector("query_vec", "query", "reduced MiniLM vector of the query text"),
        categorical("item_id", "item", 100_003, "hashed item id"),
        categorical("item_category", "item", 1_024, "item category", hashed=False),
        categorical("item_brand", "item", 2_003, "hashed brand"),
        categorical("item_price_bucket", "item", 8, "price bucket 0..4", hashed=False),
        vector("item_vec", "item", "reduced MiniLM vector of the item title and text"),
        *(dense(name, "pair", "derived relevance feature") for name in RELEVANCE_FEATURES),
        vector("pair_vec", "pair", "reduced MiniLM vector of [CLS] Q [SEP] I [SEP]"),
        categorical("is_search", "context", 3, "1 search request, 0 recommendation", hashed=False),
        categorical("hour", "context", 25, "hour of day 0..23", hashed=False),
        # No display position: it is not known when ranking, so no served input may carry it.
        # Training learns its bias in a shallow tower beside the model (training/models/
        # position.py), added to the click logit in training only.
    )
    return FeatureSpec(fields=fields, relevance_features=RELEVANCE_FEATURES)
