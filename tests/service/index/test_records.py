"""Index records: what the loader encodes, the request path decodes exactly, in batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.index.records import TextColumn, decode_items, encode_item

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
