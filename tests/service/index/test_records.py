"""Index records: what the loader encodes, the request path decodes exactly, in batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.index.records import TextColumn, decode_items, decode_query, encode_item, encode_query

DIM = 4
_hashes = st.lists(st.integers(0, 2**64 - 1), max_size=6, unique=True)
_items = st.fixed_dictionaries(
    {
        "id_hash": st.integers(0, 2**64 - 1),
        "brand_hash": st.integers(0, 2**64 - 1),
        "category": st.integers(-1, 2**31 - 1),
        "brand": st.integers(-1, 2**31 - 1),
        "price_bucket": st.integers(-1, 7),
        "vec": st.lists(st.floats(-4, 4, width=16), min_size=DIM, max_size=DIM),
        "title": st.text(max_size=20),
        "text": st.text(max_size=40),
        "title_terms": _hashes,
        "text_terms": _hashes,
    }
)


def _encode(item: dict[str, Any]) -> bytes:
    return encode_item(
        **{
            **item,
            "vec": np.asarray(item["vec"], dtype=np.float16),
            "title_terms": np.asarray(item["title_terms"], dtype=np.uint64),
            "text_terms": np.asarray(item["text_terms"], dtype=np.uint64),
        }
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(_items, max_size=8))
def test_a_batch_decodes_every_field_of_every_record(items: list[dict[str, Any]]) -> None:
    batch = decode_items([_encode(item) for item in items], DIM)

    for name in ("id_hash", "brand_hash", "category", "brand", "price_bucket"):
        assert getattr(batch, name).tolist() == [item[name] for item in items]
    assert batch.vec.astype(float).tolist() == [item["vec"] for item in items]
    assert list(batch.titles) == [item["title"] for item in items]
    assert list(batch.texts) == [item["text"] for item in items]
    terms = batch.terms
    assert len(terms) == len(items)
    assert terms.title_counts.tolist() == [len(item["title_terms"]) for item in items]
    for i, item in enumerate(items):
        run = terms.hashes[terms.offsets[i] : terms.offsets[i + 1]].tolist()
        assert run == item["title_terms"] + item["text_terms"]


def test_records_that_disagree_with_their_head_are_refused() -> None:
    terms = np.array([7, 9], dtype=np.uint64)
    raw = encode_item(1, 2, 3, 4, 1, np.ones(DIM), "red shoes", "text", terms, terms[:0])
    decode_items([raw], DIM)  # whole: fine
    for broken in (raw[:-1], raw + b"\0" * 8, raw[:10]):
        with pytest.raises(ValueError):
            decode_items([raw, broken], DIM)


def test_a_text_column_decodes_on_read_and_scatters_into_empty_rows() -> None:
    record = "añb".encode()
    column = TextColumn([record, record], np.array([0, 3]), np.array([3, 4]))
    assert list(column) == ["añ", "b"] and column[::-1] == ["b", "añ"]
    spread = column.scatter(4, np.array([1, 3]))
    assert spread == ["", "añ", "", "b"] and spread != ["", "añ", "", "c"]
    assert list(TextColumn.empty(2)) == ["", ""]
    assert TextColumn.from_strings(["añ", "", "b"]) == ["añ", "", "b"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 2**64 - 1), max_size=8, unique=True),
    st.lists(st.integers(0, 2**64 - 1), max_size=10),
    st.integers(-1, 2**31 - 1),
)
def test_a_query_record_finds_the_pair_of_each_candidate_it_pairs_with(
    paired: list[int], others: list[int], category: int
) -> None:
    """Pairs go in in any order and come out by candidate, in candidate order; a candidate the
    query has no pair with, or one the index lacks (its hash column reads 0), gets none."""
    rng = np.random.default_rng(len(paired))
    vec = rng.normal(size=DIM).astype(np.float16)
    pair_vec = rng.normal(size=(len(paired), DIM)).astype(np.float16)
    raw = encode_query(category, vec, np.array(paired, dtype=np.uint64), pair_vec)
    record = decode_query(raw, DIM)
    assert record.category == category and record.vec.tobytes() == vec.tobytes()
    assert record.pair_item_hash.tolist() == sorted(paired)

    candidates = [h for pair in zip(others, reversed(paired), strict=False) for h in pair]
    candidates += [0]  # an unknown item: hash 0, not known
    known = np.array([h != 0 or h in paired for h in candidates[:-1]] + [False])
    found, vectors = record.pairs_of(np.array(candidates, dtype=np.uint64), known)
    want = [bool(k) and h in paired for h, k in zip(candidates, known, strict=True)]
    assert found.tolist() == want
    wanted_rows = [paired.index(h) for h, w in zip(candidates, want, strict=True) if w]
    assert vectors.shape == (len(wanted_rows), DIM)
    assert vectors.tobytes() == pair_vec[wanted_rows].tobytes()


def test_query_records_that_disagree_with_their_head_or_pair_an_item_twice_are_refused() -> None:
    vec, hashes = np.ones(DIM, dtype=np.float16), np.array([5, 3], dtype=np.uint64)
    raw = encode_query(2, vec, hashes, np.zeros((2, DIM), dtype=np.float16))
    assert decode_query(raw, DIM).pair_item_hash.tolist() == [3, 5]
    for broken in (raw[:-2], raw + b"\0\0", raw[:8]):
        with pytest.raises(ValueError):
            decode_query(broken, DIM)
    with pytest.raises(ValueError):
        encode_query(2, vec, np.array([5, 5], dtype=np.uint64), np.zeros((2, DIM)))
    with pytest.raises(ValueError):
        encode_query(2, vec, hashes, np.zeros((1, DIM)))
