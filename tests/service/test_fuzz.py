"""Property-based fuzzing: the request parser (hypothesis) and the whole API from its OpenAPI
schema (schemathesis) on a live server. Every answer must be a valid ranking or a valid
problem+json with a documented code; the service must stay up. Bounded in examples and time."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from service.errors import ErrorCode, ServiceError
from service.index.snapshot import Snapshot
from service.ranking import parse_rank_request
from service.schemas import RankRequest
from service.settings import Settings
from tests.service.conftest import live_server

CODES = {code.value for code in ErrorCode}
LIMITS: dict[str, Any] = {"max_candidates": 50, "max_string_length": 64, "max_body_bytes": 20_000}
_settings = Settings(store="redis", **LIMITS)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


def _check_parse(raw: bytes) -> None:
    try:
        request = parse_rank_request(raw, _settings)
    except ServiceError as err:
        assert err.code.value in CODES
        assert err.status in (400, 413, 422)
        assert err.detail
        return
    assert isinstance(request, RankRequest)
    assert 1 <= len(request.candidates) <= LIMITS["max_candidates"]
    assert len({c["item_id"] for c in request.candidates}) == len(request.candidates)


@given(raw=st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_parser_on_arbitrary_bytes_answers_with_a_code(raw: bytes) -> None:
    _check_parse(raw)


@given(body=json_values)
@settings(max_examples=200, deadline=None)
def test_parser_on_arbitrary_json_answers_with_a_code(body: Any) -> None:
    _check_parse(json.dumps(body, allow_nan=True).encode())


item_ids = st.text(min_size=0, max_size=70)
candidates = st.lists(
    st.fixed_dictionaries(
        {"item_id": item_ids},
        optional={
            "features": st.dictionaries(
                st.sampled_from(["item_category", "item_brand", "title", "x"]),
                st.integers(-5, 2000) | st.floats() | st.text(max_size=80),
                max_size=3,
            )
        },
    ),
    max_size=60,
)
near_valid = st.fixed_dictionaries(
    {"user_id": st.text(max_size=70), "query": st.text(max_size=70), "candidates": candidates},
    optional={
        "top_k": st.integers(-2, 80) | st.text(max_size=3),
        "explain": st.booleans() | st.integers(0, 1),
        "model": st.sampled_from(["prectr", "vanilla", "nope"]),
        "request_id": st.text(max_size=70),
        "context": st.fixed_dictionaries({"hour": st.integers(-3, 30)}),
    },
)


@given(body=near_valid)
@settings(max_examples=150, deadline=None)
def test_parser_on_near_valid_bodies_answers_with_a_code(body: dict[str, Any]) -> None:
    _check_parse(json.dumps(body, allow_nan=True).encode())


# --- through a live server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_base(tiny_exports: dict[str, Any], tiny_snapshot: Snapshot) -> Iterator[str]:
    config = Settings(
        models=[tiny_exports["prectr"].package.folder, tiny_exports["vanilla"].package.folder],
        default_model="prectr",
        store="embedded",
        snapshot=tiny_snapshot.folder,
        device="cpu",
        buckets=(16, 64),
        enable_docs=True,  # schemathesis reads the live OpenAPI document
        **LIMITS,
    )
    with live_server(config) as base:
        yield base


def assert_valid_answer(response: httpx.Response, body: Any) -> None:
    if response.status_code == 200:
        out = response.json()
        items = out["items"]
        scores = [item["score"] for item in items]
        assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)
        assert scores == sorted(scores, reverse=True)
        assert [item["rank"] for item in items] == list(range(1, len(items) + 1))
        sent = {c["item_id"] for c in body["candidates"]}
        assert {item["item_id"] for item in items} <= sent
        top_k = body.get("top_k")
        assert len(items) == (min(top_k, len(sent)) if top_k else len(sent))
        return
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] in CODES and problem["status"] == response.status_code
    assert response.status_code in (400, 413, 422)


@given(body=near_valid)
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_service_answers_near_valid_bodies_with_a_ranking_or_a_problem(
    fuzz_base: str, body: dict[str, Any]
) -> None:
    response = httpx.post(
        f"{fuzz_base}/rank",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert_valid_answer(response, body)


def test_the_service_is_still_up_after_fuzzing(fuzz_base: str) -> None:
    assert httpx.get(f"{fuzz_base}/readyz").status_code == 200


#: An invalid body is refused with 400, 413 (too many candidates, too large) or 422; the
#: check's defaults leave out 413, which a body over both maxItems and another rule gets.
FUZZ_CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": ["400", "413", "422"]}}}
)


def _ids_distinct(case: Any) -> bool:
    """The one rule of a valid body that JSON Schema cannot state (the document says it in
    words): no item_id twice."""
    ids = [c.get("item_id") for c in case.body.get("candidates", []) if isinstance(c, dict)]
    return len(ids) == len(set(ids))


@pytest.mark.parametrize("path", ["/rank", "/v1/rank"])
def test_openapi_fuzzing_of_rank(fuzz_base: str, path: str) -> None:
    """Schema-driven bodies, valid and invalid (schemathesis from the live OpenAPI document),
    with every check schemathesis has: never a 5xx, a documented status and body, every valid
    body (distinct ids aside) accepted with a ranking, every invalid one refused."""
    schema = schemathesis.openapi.from_url(f"{fuzz_base}/openapi.json", config=FUZZ_CONFIG)
    operation = schema[path]["POST"]

    @given(
        case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE).filter(_ids_distinct)
        | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
    )
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        response = case.call(base_url=fuzz_base)
        case.validate_response(response)

    check()
    assert httpx.get(f"{fuzz_base}/readyz").status_code == 200
