"""The two decoders of a /rank body agree: whatever msgspec's fast path accepts, the pydantic
model accepts as the same request (values and the fields the body gave), and bodies the fast
path cannot mirror fall through to the model with its error codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.errors import ServiceError, from_validation
from service.schemas import (
    RankRequest,
    decode_plain,
    decode_rank_request,
    request_of,
)

PLAIN = {"user_id": "u1", "query": "red shoes", "candidates": [{"item_id": "a"}, {"item_id": "b"}]}

#: Values a field may take: right and wrong types, integral floats, bounds and their edges.
field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=30),
    st.integers(),
    st.sampled_from([0.0, 1.0, 3.0, 23.0, 24.0, 1.5, -1.0, 1e2]),
    st.text(max_size=6),
    st.just(""),
    st.just({}),
    st.just([]),
)
good_candidates = st.lists(
    st.fixed_dictionaries({"item_id": st.sampled_from(["a", "b", "c", "d", "e"])}),
    min_size=1,
    max_size=4,
    unique_by=lambda c: c["item_id"],
)
candidate_values: st.SearchStrategy[Any] = st.one_of(
    st.fixed_dictionaries({"item_id": st.sampled_from(["a", "b", ""])}),
    st.dictionaries(
        st.sampled_from(["item_id", "features", "x"]),
        st.one_of(st.sampled_from(["a", "b", ""]), st.none(), st.integers(), st.just({})),
        max_size=3,
    ),
    field_values,
)
context_values = st.one_of(
    st.dictionaries(st.sampled_from(["hour", "x"]), field_values, max_size=2), field_values
)
#: Each field's values: mostly right for the required ones, so many bodies are valid.
request_fields = {
    "request_id": field_values,
    "user_id": st.one_of(*[st.just("u1")] * 4, field_values),
    "query": st.one_of(*[st.just("red shoes")] * 3, st.just(""), field_values),
    "candidates": st.one_of(*[good_candidates] * 4, st.lists(candidate_values, max_size=4)),
    "top_k": field_values,
    "model": st.one_of(st.just("prectr"), field_values),
    "explain": field_values,
    "context": context_values,
    "unknown": field_values,
}
REQUIRED = ["user_id", "query", "candidates"]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A JSON object of /rank fields: the required ones (each may be left out), others, some of
    them repeated, in any order."""
    names = [name for name in REQUIRED if draw(st.integers(0, 9))]
    names += draw(st.lists(st.sampled_from(sorted(request_fields)), max_size=3))
    names = draw(st.permutations(names))
    pairs = [(name, draw(request_fields[name])) for name in names]
    return ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}").encode()


def fast(raw: bytes) -> RankRequest | None:
    plain = decode_plain(raw)
    return None if plain is None else request_of(plain)


def assert_same(fast_request: RankRequest, raw: bytes) -> None:
    model = RankRequest.model_validate_json(raw)  # raises if the fast path took a bad body
    assert fast_request.model_dump() == model.model_dump()
    assert fast_request.model_fields_set == model.model_fields_set
    if model.context is not None:
        assert fast_request.context is not None
        assert fast_request.context.model_fields_set == model.context.model_fields_set


@given(raw=bodies())
@settings(max_examples=1500, deadline=None)
def test_the_fast_path_accepts_only_what_the_model_accepts_as_the_same_request(raw: bytes) -> None:
    request = fast(raw)
    if request is not None:
        assert_same(request, raw)
        # The ids the store's read is sent with, before the request is built, are its own.
        plain = decode_plain(raw)
        assert plain is not None
        assert plain.item_ids == [c["item_id"] for c in request.candidates]
        assert (plain.fields.user_id, plain.fields.query) == (request.user_id, request.query)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"request_id": "r1", "top_k": 1, "model": "prectr", "explain": True},
        {"request_id": None, "top_k": None, "model": None, "context": None},
        {"context": {}},
        {"context": {"hour": 0}},
        {"context": {"hour": None}},
    ],
)
def test_plain_bodies_take_the_fast_path(extra: dict[str, Any]) -> None:
    raw = json.dumps({**PLAIN, **extra}).encode()
    request = fast(raw)
    assert request is not None
    assert_same(request, raw)
    assert decode_rank_request(raw) == request


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"top_k": 3.0}, "an integral float, which the model takes as 3"),
        ({"context": {"hour": 12.0}}, "an integral float hour"),
        ({"candidates": [{"item_id": "a", "features": None}]}, "a features key"),
        ({"candidates": [{"item_id": "a", "features": {"title": "hat"}}]}, "supplied features"),
    ],
)
def test_bodies_the_fast_path_cannot_mirror_go_to_the_model(
    extra: dict[str, Any], why: str
) -> None:
    raw = json.dumps({**PLAIN, **extra}).encode()
    assert fast(raw) is None, why
    assert decode_rank_request(raw) == RankRequest.model_validate_json(raw)


@pytest.mark.parametrize(
    "extra",
    [
        {"candidates": []},
        {"candidates": [{"item_id": "a"}, {"item_id": "a"}]},
        {"candidates": [{"item_id": ""}]},
        {"candidates": [{"item": "a"}]},
        {"candidates": [{"item_id": "a", "x": "b"}]},
        {"top_k": 0},
        {"explain": 1},
        {"context": {"hour": 24}},
        {"surprise": 1},
    ],
)
def test_errors_are_the_models_with_their_codes(extra: dict[str, Any]) -> None:
    raw = json.dumps({**PLAIN, **extra}).encode()
    with pytest.raises(ValidationError) as model_error:
        RankRequest.model_validate_json(raw)
    expected = from_validation(model_error.value)
    with pytest.raises(ServiceError) as caught:
        decode_rank_request(raw)
    assert (caught.value.code, caught.value.errors) == (expected.code, expected.errors)
