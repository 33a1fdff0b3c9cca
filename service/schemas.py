"""The HTTP contract of POST /rank: request and response bodies.

Limits that depend on the configuration (candidates per request, string lengths) are checked by
`check_limits` after parsing, so one model serves every configuration.
"""

from __future__ import annotations

import json
import operator
import re
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

import msgspec
import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from service._kernels import plain_item_ids
from service.errors import ErrorCode, ServiceError, field_error, from_validation
from service.settings import Settings


class SuppliedFeatures(BaseModel):
    """What a caller knows about an item the index may lack (used only where it does)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    item_category: int | float | None = None
    item_brand: int | float | None = None
    item_price_bucket: int | float | None = None
    title: str | None = None
    text: str | None = None

    @field_validator("item_category", "item_brand", "item_price_bucket")
    @classmethod
    def _integral(cls, value: int | float | None) -> int | None:
        if value is None:
            return None
        if isinstance(value, float) and not value.is_integer():
            raise PydanticCustomError(
                "invalid_value", "a category, brand or price bucket is an integer"
            )
        if not -(2**31) <= value < 2**31:
            raise PydanticCustomError("invalid_value", "out of the 32-bit integer range")
        return int(value)


def _integral_float_as_int(value: Any) -> Any:
    """JSON Schema's integer includes 3.0: take an integral float as the int it is (strict
    models refuse floats, and a client's JSON library may write 3.0)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = BeforeValidator(_integral_float_as_int)

ITEM_ID = operator.itemgetter("item_id")


class Candidate(TypedDict):
    """One item to rank. A dict, not a model: a request holds up to 1000 of them, and pydantic
    validates a TypedDict without building an object per item (half the parse time at 1000)."""

    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]

    item_id: Annotated[str, Field(min_length=1)]
    features: NotRequired[SuppliedFeatures | None]


class Context(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    hour: Annotated[int | None, WholeNumber] = Field(
        None, ge=0, le=23, description="hour of day; default: now, UTC"
    )


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    request_id: str | None = None
    user_id: str = Field(min_length=1)
    query: str
    candidates: list[Candidate]
    top_k: Annotated[int | None, WholeNumber] = Field(None, ge=1)
    model: str | None = None
    explain: bool = False
    context: Context | None = None

    @field_validator("candidates")
    @classmethod
    def _distinct_and_present(cls, candidates: list[Candidate]) -> list[Candidate]:
        if not candidates:
            raise PydanticCustomError(
                "empty_candidates", "at least one candidate is needed", {"code": "empty_candidates"}
            )
        item_ids = list(map(ITEM_ID, candidates))
        if len(set(item_ids)) == len(item_ids):  # C speed; the loop only names the repeat
            return candidates
        seen: set[str] = set()
        for item_id in item_ids:
            if item_id in seen:
                raise PydanticCustomError(
                    "duplicate_candidates",
                    "item {item_id} appears more than once",
                    {"code": "duplicate_candidates", "item_id": item_id},
                )
            seen.add(item_id)
        return candidates


class _PlainContext(msgspec.Struct, forbid_unknown_fields=True):
    hour: Annotated[int, msgspec.Meta(ge=0, le=23)] | msgspec.UnsetType | None = msgspec.UNSET


class _PlainRankRequest(msgspec.Struct, forbid_unknown_fields=True):
    """`RankRequest` in its common form, for msgspec's validated decode: types as strict and
    bounds as tight as the model's, integers only where it also takes integral floats (those
    bodies take the model's path). Every field defaults to UNSET, so what the body gave is
    known (the duplicate-key check counts it). Candidates are plain string maps here;
    `_from_plain` accepts only those that are exactly ``{"item_id": <non-empty>}``."""

    user_id: Annotated[str, msgspec.Meta(min_length=1)]
    query: str
    candidates: list[dict[str, str]]
    request_id: str | msgspec.UnsetType | None = msgspec.UNSET
    top_k: Annotated[int, msgspec.Meta(ge=1)] | msgspec.UnsetType | None = msgspec.UNSET
    model: str | msgspec.UnsetType | None = msgspec.UNSET
    explain: bool | msgspec.UnsetType = msgspec.UNSET
    context: _PlainContext | msgspec.UnsetType | None = msgspec.UNSET


_PLAIN_DECODER = msgspec.json.Decoder(_PlainRankRequest)
_REQUEST_FIELDS = _PlainRankRequest.__struct_fields__


def _given(struct: msgspec.Struct, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: value for name in names if (value := getattr(struct, name)) is not msgspec.UNSET}


@dataclass(frozen=True)
class PlainBody:
    """A /rank body in its common form (a query, a user, plain candidate ids: `_PlainRankRequest`,
    typed and bounded by msgspec; candidates all exactly ``{"item_id": <non-empty>}`` and
    distinct), before it is a `RankRequest`: what the store's read needs, so the read can go
    out before the rest of the request is built and checked (`request_of`)."""

    fields: _PlainRankRequest
    item_ids: list[str]  # the candidates' ids, in order


def decode_plain(raw: bytes) -> PlainBody | None:
    """``raw`` as a `PlainBody`, or None where it is not one (the model's path,
    `decode_model`, then validates it and names what is wrong)."""
    try:
        fields = _PLAIN_DECODER.decode(raw)
    except msgspec.DecodeError:
        return None
    item_ids = plain_item_ids(fields.candidates)  # one C pass over the candidates
    return None if item_ids is None else PlainBody(fields, item_ids)


def request_of(plain: PlainBody) -> RankRequest:
    """The `RankRequest` pydantic would make of the body ``plain`` was decoded from."""
    given = _given(plain.fields, _REQUEST_FIELDS)
    context = given.get("context")
    if context is not None:
        fields = _given(context, ("hour",))
        given["context"] = Context.model_construct(set(fields), **fields)
    return RankRequest.model_construct(set(given), **given)


def decode_model(raw: bytes) -> RankRequest:
    """A /rank body validated by the model itself (`ServiceError` with the fields' errors if
    invalid): every error and its code come from here."""
    try:
        return RankRequest.model_validate_json(raw)
    except ValidationError as err:
        raise from_validation(err) from err


def decode_rank_request(raw: bytes) -> RankRequest:
    """A /rank body -> `RankRequest` (`ServiceError` with the fields' errors if invalid).

    Most bodies are a query, a user and plain candidate ids: msgspec validates those against
    a strict mirror of the model in a fifth of pydantic's time (20 against 100 us at 200
    candidates). Whatever it refuses or cannot mirror (supplied features, integral floats, any
    error) goes through the model itself, so every error and its code comes from one place. A
    test holds the two paths to the same request for every body the fast one accepts."""
    plain = decode_plain(raw)
    return request_of(plain) if plain is not None else decode_model(raw)


def _too_many_candidates(n: int, limit: int) -> ServiceError:
    return ServiceError(
        ErrorCode.TOO_MANY_CANDIDATES,
        f"{n} candidates; the limit is {limit}",
        errors=[field_error("candidates", ErrorCode.TOO_MANY_CANDIDATES, "too many candidates")],
    )


def check_candidate_count(raw: bytes, limit: int) -> None:
    """Refuse a raw body with more than ``limit`` candidates before validating any of them.

    Every candidate is a JSON object, so a body with at most ``limit`` + 1 opening braces
    cannot hold more (a C-speed count, ~0.1 ms per MB); only a body with more braces (supplied
    features, or an attack) is parsed to count its candidates. Without this, 330k ``{}``
    candidates were validated one by one (seconds of a worker) into a 29 MB error list.
    """
    if raw.count(b"{") <= limit + 1:
        return
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return  # validation names what is wrong with it
    candidates = body.get("candidates") if isinstance(body, dict) else None
    if isinstance(candidates, list) and len(candidates) > limit:
        raise _too_many_candidates(len(candidates), limit)


#: The end of an object key: an unescaped closing quote, then a colon. Inside a string a quote is
#: always escaped, so every key matches once, and a non-key match needs ``\\"`` before a colon.
_KEY_END = re.compile(rb'"\s*:')
_FIELDS_SET = operator.attrgetter("__pydantic_fields_set__")


def carries_features(candidates: list[Candidate]) -> bool:
    """Whether any candidate is more than its id (a ``features`` key, if only null): one
    C-speed pass, so the request path loops over candidates for their features only then."""
    return max(map(len, candidates), default=0) > 1


def _keys_given(request: RankRequest) -> int:
    """How many keys the parsed body had, distinct per object (``extra="forbid"``: every key is
    a field, and a field given twice is set once)."""
    candidates = request.candidates
    supplied = (
        [f for c in candidates if (f := c.get("features")) is not None]
        if carries_features(candidates)
        else []
    )
    n = len(request.model_fields_set) + sum(map(len, candidates))
    n += sum(map(len, map(_FIELDS_SET, supplied)))
    return n + (len(request.context.model_fields_set) if request.context is not None else 0)


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    repeated = sorted(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
    if repeated:
        raise ServiceError(
            ErrorCode.DUPLICATE_KEY,
            f"a JSON object repeats the key {repeated[0]!r}",
            errors=[field_error(key, ErrorCode.DUPLICATE_KEY, "repeated") for key in repeated],
        )
    return dict(pairs)


def check_unique_keys(raw: bytes, request: RankRequest) -> None:
    """Refuse a body whose objects repeat a key (400 ``duplicate_key``): JSON parsers disagree on
    which value wins, so a proxy, a log and this service could each read another request.

    The parser keeps the last value silently, so the check compares counts: outside strings a
    colon only ends a key, so a body with as many colons (or, where strings hold colons, key
    ends) as the parsed request has distinct keys repeats none (~0.1 ms per 1000 candidates).
    Only a body where the counts differ (a repeated key, or a string with an escaped quote
    before a colon) is parsed again, key by key.
    """
    distinct = _keys_given(request)
    if raw.count(b":") == distinct or len(_KEY_END.findall(raw)) == distinct:
        return
    try:
        json.loads(raw, object_pairs_hook=_refuse_duplicates)
    except ValueError:
        return  # not this parser's JSON (the service's parser accepted it): no key is repeated


def check_limits(request: RankRequest, settings: Settings) -> None:
    """The configured limits: candidates per request (413) and string lengths (422)."""
    n = len(request.candidates)
    if n > settings.max_candidates:
        raise _too_many_candidates(n, settings.max_candidates)
    limit = settings.max_string_length
    too_long: list[dict[str, Any]] = []

    def check(location: str, value: str) -> None:
        if len(value) > limit:
            too_long.append(
                field_error(location, ErrorCode.STRING_TOO_LONG, f"longer than {limit} characters")
            )

    for name in ("request_id", "user_id", "query", "model"):
        value = getattr(request, name)
        if isinstance(value, str):
            check(name, value)
    candidates = request.candidates
    # Two C-speed passes find whether any candidate needs a look (an over-long id, or supplied
    # features); at 200 candidates the loop below was a third of the validation's time, and few
    # requests need it.
    longest_id = max(map(len, map(ITEM_ID, candidates)), default=0)
    needs_look = carries_features(candidates) or longest_id > limit
    for i, candidate in enumerate(candidates if needs_look else ()):
        check(f"candidates.{i}.item_id", candidate["item_id"])
        supplied = candidate.get("features")
        for key in ("title", "text"):
            value = getattr(supplied, key) if supplied is not None else None
            if value is not None:
                check(f"candidates.{i}.features.{key}", value)
    if too_long:
        raise ServiceError(
            ErrorCode.STRING_TOO_LONG,
            f"{too_long[0]['field']}: {too_long[0]['message']}",
            errors=too_long,
        )


class Explain(BaseModel):
    p_rsl: list[float]
    p_click_given_rsl: list[float]
    tau: float


class RankedItem(BaseModel):
    item_id: str
    score: float
    rank: int
    flags: list[str] | None = None
    explain: Explain | None = None


class ModelRef(BaseModel):
    name: str
    version: str
    arm: str


#: How a request's query text was resolved against the index's known queries.
QueryResolution = Literal["exact", "borrowed", "none", "empty"]


class Resolution(BaseModel):
    """What the index knew of the request: its query (``exact``: a known query; ``borrowed``:
    the lexically nearest known query ``borrowed_from`` at ``similarity`` stood in for it;
    ``none``: nothing close enough, the query's vector and id are unknown; ``empty``: a
    recommendation request) and its user."""

    query: QueryResolution
    borrowed_from: str | None = None
    similarity: float | None = None
    user_known: bool


class RankResponse(BaseModel):
    request_id: str
    model: ModelRef
    items: list[RankedItem]
    timing_ms: dict[str, float]
    degraded: list[str]
    resolution: Resolution
    index_version: str | None = None
