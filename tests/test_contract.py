"""The feature contract: spec persistence, stable hashing, text normalization, derived features."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.contract import (
    RELEVANCE_FEATURES,
    FeatureField,
    FeatureSpec,
    default_feature_spec,
    normalize_text,
    relevance_features,
    stable_bucket,
)


def test_spec_round_trips_through_json_with_its_hash(tmp_path: Path) -> None:
    spec = default_feature_spec()
    spec.save(tmp_path / "feature_spec.json")
    loaded = FeatureSpec.load(tmp_path / "feature_spec.json")
    assert loaded == spec
    assert loaded.content_hash == spec.content_hash


def test_spec_hash_changes_with_any_field() -> None:
    spec = default_feature_spec()
    changed = FeatureSpec(
        fields=tuple(replace(f, buckets=9) if f.name == "user_age" else f for f in spec.fields),
        relevance_features=spec.relevance_features,
    )
    assert changed.content_hash != spec.content_hash
    assert default_feature_spec(text_dim=32).content_hash != spec.content_hash


def test_spec_with_tampered_body_is_refused() -> None:
    text = default_feature_spec().to_json().replace('"buckets": 8', '"buckets": 9', 1)
    with pytest.raises(ValueError, match="content hash mismatch"):
        FeatureSpec.from_json(text)


def test_every_field_has_source_kind_and_size() -> None:
    spec = default_feature_spec()
    for f in spec.fields:
        if f.kind == "categorical":
            assert f.buckets is not None and f.buckets >= 2
        if f.kind == "vector":
            assert f.dim == 64
    assert {f.source for f in spec.fields} == {"user", "query", "item", "pair", "context"}
    assert tuple(f.name for f in spec.select(source="pair", kind="dense")) == RELEVANCE_FEATURES


def test_invalid_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="buckets"):
        FeatureField("x", "user", "categorical")
    with pytest.raises(ValueError, match="dim"):
        FeatureField("x", "user", "vector")
    with pytest.raises(ValueError, match="duplicate"):
        FeatureSpec(fields=(FeatureField("x", "user", "dense"), FeatureField("x", "item", "dense")))


def test_hash_bucket_is_the_same_in_two_processes() -> None:
    code = (
        "from service.contract import stable_bucket;"
        "print(stable_bucket('item_id', 'sku-12345', 500009), stable_bucket('user_id', 77, 1000))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {
        f"{stable_bucket('item_id', 'sku-12345', 500009)} {stable_bucket('user_id', 77, 1000)}"
    }


def test_hashed_buckets_spread_and_reserve_zero() -> None:
    field = default_feature_spec()["item_id"]
    buckets = field.encode(range(5_000))
    assert buckets.min() >= 1 and buckets.max() < (field.buckets or 0)
    assert len(np.unique(buckets)) > 4_800  # ~125 collisions expected among 5k ids in 100k
    assert field.encode([None, ""]).tolist() == [0, 0]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([f.name for f in default_feature_spec().select(kind="categorical")]),
    st.one_of(st.none(), st.just(""), st.integers(-3, 2**31 - 1), st.text(max_size=8)),
)
def test_one_value_encodes_as_in_a_batch(name: str, value: object) -> None:
    field = default_feature_spec()[name]
    if not field.hashed and isinstance(value, str) and value:
        value = len(value)  # a non-hashed field takes integers (or None / '')
    assert field.encode_one(value) == field.encode([value]).tolist()[0]


def test_text_normalization_folds_case_unicode_and_whitespace() -> None:
    assert normalize_text("Ｃａｆé\tLATTE,  large") == "café latte large"
    assert normalize_text("   ") == ""
    assert normalize_text("e\u0301") == "é"  # combining accent composed by NFKC


def test_relevance_features_for_unknown_category_and_empty_query() -> None:
    out = relevance_features("wool socks", -1, ["Wool socks", "Hat"], ["", "socks"], [2, 2])
    assert out.shape == (2, len(RELEVANCE_FEATURES))
    assert out[:, 0].tolist() == [0.0, 0.0]  # unknown query category never matches
    assert out[0, 4] == 1.0 and out[1, 2] == 0.5
    assert not relevance_features("", 2, ["Wool socks"], [""], [2]).any()


def _reference_relevance(query: str, category: int, title: str, text: str, item_category: int):
    """The features as the contract defines them, with plain Python sets."""
    from service.contract import normalize_text, tokenize

    q, t, x = set(tokenize(query)), set(tokenize(title)), set(tokenize(text))
    if not q:
        return [0.0] * 5
    hit = len(q & t)
    return [
        float(category >= 0 and category == item_category),
        hit / len(q),
        (hit + len((q - t) & x)) / len(q),
        hit / len(q | t),
        float(f" {normalize_text(query)} " in f" {normalize_text(title)} "),
    ]


_words = st.sampled_from(["red", "Red", "shoes", "shoe", "oak", "desk", "wool", "ÉTÉ", "x-1", "a"])
_texts = st.lists(_words, max_size=6).map(" ".join)


@given(
    query=_texts,
    category=st.integers(-1, 3),
    items=st.lists(st.tuples(_texts, _texts, st.integers(-1, 3)), max_size=8),
)
@settings(max_examples=300, deadline=None)
def test_vectorized_relevance_features_match_their_definition(
    query: str, category: int, items: list[tuple[str, str, int]]
) -> None:
    from service.contract import relevance_features

    got = relevance_features(
        query, category, [i[0] for i in items], [i[1] for i in items], [i[2] for i in items]
    )
    want = np.array([_reference_relevance(query, category, *i) for i in items], dtype=np.float32)
    np.testing.assert_allclose(got, want.reshape(len(items), 5), atol=1e-6)
