"""The compiled request-path loops (service/_kernels.c) against the numpy code they replaced,
kept here as the reference: equal on random input, bit for bit, and refusing what it refused."""

from __future__ import annotations

import sys
from typing import Any

import hiredis
import numpy as np
import numpy.typing as npt
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service._kernels import (
    hash_buckets,
    int_buckets,
    pack_keys,
    plain_item_ids,
    ranked_items,
    split_items,
    term_relevance,
)
from service.contract import FeatureField

FLAGS: tuple[list[str], ...] = (
    [],
    ["approximated_pair"],
    ["unknown_item"],
    ["unknown_item", "request_features"],
)


def reference_ranked_items(
    item_ids: list[str],
    scores: npt.NDArray[np.float32],
    top_k: int | None,
    item_known: npt.NDArray[np.bool_],
    pair_known: npt.NDArray[np.bool_],
    resolved: bool,
    described: npt.NDArray[np.bool_] | None,
) -> list[dict[str, Any]]:
    """service.ranking before the kernel: numpy's stable argsort, flag codes, a dict each."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    codes = np.where(item_known, resolved & ~pair_known, 2).astype(np.int8)
    if described is not None:
        codes[described & ~item_known] = 3
    ids = [item_ids[i] for i in order.tolist()]
    items: list[dict[str, Any]] = []
    for rank, (item_id, score, code) in enumerate(
        zip(ids, scores[order].tolist(), codes[order].tolist(), strict=True), start=1
    ):
        item: dict[str, Any] = {"item_id": item_id, "score": score, "rank": rank}
        if code:
            item["flags"] = FLAGS[code]
        items.append(item)
    return items


_score = st.one_of(
    st.floats(0, 1, width=32),
    st.sampled_from([0.5, 0.0, -0.0, float("nan"), float("inf"), 1e-30]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(_score, st.booleans(), st.booleans(), st.booleans()), max_size=40),
    st.one_of(st.none(), st.integers(1, 50)),
    st.booleans(),
    st.booleans(),
)
def test_ranked_items_equal_numpys_stable_order_and_the_flag_codes(
    rows: list[tuple[float, bool, bool, bool]],
    top_k: int | None,
    resolved: bool,
    any_described: bool,
) -> None:
    ids = [f"i{k}" for k in range(len(rows))]
    scores = np.array([r[0] for r in rows], dtype=np.float32)
    known = np.array([r[1] for r in rows], dtype=bool)
    pair = np.array([r[2] for r in rows], dtype=bool)
    described = np.array([r[3] for r in rows], dtype=bool) if any_described else None
    got, order = ranked_items(
        ids, scores, -1 if top_k is None else top_k, known, pair, resolved, described, FLAGS
    )
    want = reference_ranked_items(ids, scores, top_k, known, pair, resolved, described)
    # as served: the same JSON (NaN compares unequal to itself, its JSON does not)
    assert orjson.dumps(got) == orjson.dumps(want)
    assert [ids[i] for i in np.frombuffer(order, np.int64)] == [w["item_id"] for w in want]


def test_ranked_items_share_the_flag_lists_and_leak_no_references() -> None:
    ids = [f"item-{k}" for k in range(50)]
    scores = np.linspace(0, 1, 50, dtype=np.float32)
    known = np.arange(50) % 3 > 0
    before = [sys.getrefcount(x) for x in (*ids, *FLAGS)]
    for _ in range(100):
        items, _ = ranked_items(ids, scores, 10, known, ~known, True, None, FLAGS)
        assert items[0]["item_id"] == "item-49" and items[0]["flags"] is FLAGS[1]
    del items
    assert [sys.getrefcount(x) for x in (*ids, *FLAGS)] == before


def test_ranked_items_refuse_columns_of_another_length_or_type() -> None:
    ids, known = ["a", "b"], np.ones(2, dtype=bool)
    with pytest.raises(ValueError):
        ranked_items(ids, np.zeros(3, np.float32), -1, known, known, False, None, FLAGS)
    with pytest.raises(TypeError):
        ranked_items(ids, np.zeros(2, np.float64), -1, known, known, False, None, FLAGS)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ranked_items(ids, np.zeros(2, np.float32), -1, known, known, False, None, FLAGS[:2])


def reference_term_columns(
    hashes: npt.NDArray[np.uint64],
    offsets: npt.NDArray[np.int64],
    title_counts: npt.NDArray[np.int64],
    query_terms: npt.NDArray[np.uint64],
) -> tuple[npt.NDArray[np.float32], list[int]]:
    """contract.relevance_features_of_terms' term columns before the kernel (one cumulative
    count of query-term hits over every run)."""
    n, k = len(title_counts), len(query_terms)
    out = np.zeros((n, 5), dtype=np.float32)
    found = np.zeros(len(hashes) + 1, dtype=np.int64)
    np.cumsum(np.isin(hashes, query_terms), out=found[1:])
    starts, stops = offsets[:-1], offsets[1:]
    before = found[starts]
    hits = found[starts + title_counts] - before
    out[:, 1] = hits / k
    out[:, 2] = (found[stops] - before) / k
    out[:, 3] = hits / (k + title_counts - hits)
    return out, np.flatnonzero(hits == k).tolist()


_runs = st.lists(
    st.tuples(
        st.lists(st.integers(0, 12), max_size=8, unique=True),
        st.lists(st.integers(0, 12), max_size=8, unique=True),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(_runs, st.lists(st.integers(0, 12), min_size=1, max_size=6, unique=True))
def test_term_columns_equal_the_cumulative_count_bit_for_bit(
    runs: list[tuple[list[int], list[int]]], query: list[int]
) -> None:
    # a run holds distinct terms: the title's, then the text's the title lacks (the index form)
    parts = [(title, [t for t in text if t not in title]) for title, text in runs]
    hashes = np.array([t for title, text in parts for t in (*title, *text)], dtype=np.uint64)
    sizes = [len(title) + len(text) for title, text in parts]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    title_counts = np.array([len(title) for title, _ in parts], dtype=np.int64)
    query_terms = np.array(sorted(query), dtype=np.uint64)
    out = np.zeros((len(parts), 5), dtype=np.float32)
    full = term_relevance(hashes, offsets, title_counts, query_terms, out)
    want, want_full = reference_term_columns(hashes, offsets, title_counts, query_terms)
    assert out.tobytes() == want.tobytes() and full == want_full


def test_term_columns_refuse_runs_outside_the_hashes() -> None:
    hashes, out = np.arange(3, dtype=np.uint64), np.zeros((1, 5), dtype=np.float32)
    query = np.array([1], dtype=np.uint64)
    for offsets, titles in (([0, 4], [1]), ([2, 1], [0]), ([0, 2], [3])):
        with pytest.raises(ValueError):
            term_relevance(hashes, np.array(offsets), np.array(titles), query, out)
    with pytest.raises(ValueError):  # no query term
        term_relevance(hashes, np.array([0, 3]), np.array([1]), query[:0], out)


def test_items_refuse_records_of_the_wrong_size() -> None:
    with pytest.raises(ValueError):  # a length field past the head
        split_items([b"\0" * 8], 8, 6, 0, 0, 0)
    with pytest.raises(TypeError):
        split_items([None], 8, 0, 0, 0, 0)  # type: ignore[list-item]


_key_text = st.text(
    st.characters(blacklist_categories=("Cs",)),  # lone surrogates have no UTF-8
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(_key_text, st.tuples(_key_text, st.lists(_key_text, max_size=6))),
        max_size=6,
    )
)
def test_packed_keys_are_the_bytes_hiredis_packs(
    segments: list[str | tuple[str, list[str]]],
) -> None:
    keys = [
        key
        for segment in segments
        for key in ([segment] if isinstance(segment, str) else [segment[0] + i for i in segment[1]])
    ]
    assert pack_keys("MGET", segments) == hiredis.pack_command(("MGET", *keys))


def test_packed_keys_refuse_what_is_not_text() -> None:
    with pytest.raises(TypeError):
        pack_keys("MGET", [b"key"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        pack_keys("MGET", [("prefix:", [1])])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        pack_keys("MGET", [("prefix:",)])  # type: ignore[list-item]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2**64 - 1), st.booleans()), max_size=30),
    st.integers(2, 2**40),
)
def test_hash_buckets_are_the_contracts_buckets_of_hashes(
    rows: list[tuple[int, bool]], buckets: int
) -> None:
    field = FeatureField("item_id", "item", "categorical", buckets=buckets)
    # strided, as the item records' columns are: a field of a structured array
    table = np.zeros(len(rows), dtype=[("hash", "<u8"), ("pad", "<i4")])
    table["hash"] = [h for h, _ in rows]
    keep = np.array([k for _, k in rows], dtype=bool)
    out = np.full((len(rows), 3), -7, dtype=np.int64)
    hash_buckets(out, 1, table["hash"], buckets, keep)
    want = np.where(keep, field.buckets_of_hashes(table["hash"]), 0)
    assert out[:, 1].tolist() == want.tolist()
    assert (out[:, [0, 2]] == -7).all()  # the other columns untouched


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=30), st.integers(2, 300))
def test_int_buckets_are_the_contracts_encoding_of_small_integers(
    values: list[int], buckets: int
) -> None:
    field = FeatureField("item_category", "item", "categorical", buckets=buckets, hashed=False)
    column = np.array(values, dtype=np.int32)
    out = np.zeros((len(values), 2), dtype=np.int64)
    int_buckets(out, 0, column, buckets)
    assert out[:, 0].tolist() == field.encode(column).tolist()


def test_buckets_refuse_a_column_outside_the_matrix_or_of_another_type() -> None:
    out, keep = np.zeros((2, 2), dtype=np.int64), np.ones(2, dtype=bool)
    with pytest.raises(ValueError):
        hash_buckets(out, 2, np.zeros(2, np.uint64), 10, keep)
    with pytest.raises(ValueError):
        hash_buckets(out, 0, np.zeros(3, np.uint64), 10, np.ones(3, dtype=bool))
    with pytest.raises(TypeError):
        int_buckets(out, 0, np.zeros(2, np.int64), 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        int_buckets(out.T.copy()[:1], 0, np.zeros(2, np.int32), 10)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"item_id": st.sampled_from(["a", "b", "c", "d", "é", ""])}),
            st.dictionaries(st.sampled_from(["item_id", "features", "x"]), st.just("a")),
        ),
        max_size=6,
    )
)
def test_plain_item_ids_accept_exactly_distinct_non_empty_ids_alone(
    candidates: list[dict[str, str]],
) -> None:
    ids = [c.get("item_id") for c in candidates]
    plain = (
        bool(candidates)
        and all(list(c) == ["item_id"] and c["item_id"] for c in candidates)
        and len(set(ids)) == len(ids)
    )
    assert plain_item_ids(candidates) == (ids if plain else None)
