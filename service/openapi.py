"""The OpenAPI document: the /rank body the handler parses by hand, the real limits, and every
error response."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.admin import ReloadBody
from service.errors import (
    PROBLEM_TYPE,
    Problem,
)
from service.ranking import JSON
from service.schemas import (
    RankRequest,
    RankResponse,
)
from service.settings import Settings
from service.state import ServiceState


def _string_branch(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``type: string`` member of an optional string's schema (or the schema itself)."""
    return next((b for b in schema.get("anyOf", []) if b.get("type") == "string"), schema)


def openapi_schema(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The OpenAPI document, with what the handlers read by hand (the /rank body is parsed from
    raw bytes, for the size limit and stable error codes) and every error response declared."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (RankRequest, RankResponse, Problem, ReloadBody):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    # The limits the handler checks by hand, so generated clients and fuzzers know them.
    request = components["RankRequest"]["properties"]
    request["candidates"].update(minItems=1, maxItems=settings.max_candidates)
    limit = settings.max_string_length
    for name in ("user_id", "query"):
        request[name]["maxLength"] = limit
    _string_branch(request["request_id"])["maxLength"] = limit
    state: ServiceState | None = getattr(app.state, "service", None)
    if state is not None and state.configured:  # the names a request may ask for
        _string_branch(request["model"])["enum"] = sorted(state.configured)
    else:
        _string_branch(request["model"])["maxLength"] = limit
    request["candidates"]["description"] = (
        "the items to rank; each item_id at most once (JSON Schema cannot say it: a repeated "
        "id is refused with 422 duplicate_candidates)"
    )
    components["Candidate"]["properties"]["item_id"]["maxLength"] = limit
    supplied = components["SuppliedFeatures"]["properties"]
    for name in ("title", "text"):
        _string_branch(supplied[name])["maxLength"] = limit
    for name in ("item_category", "item_brand", "item_price_bucket"):
        for branch in supplied[name]["anyOf"]:
            if branch.get("type") in ("integer", "number"):
                branch.update(minimum=-(2**31), maximum=2**31 - 1)
            if branch.get("type") == "number":
                branch["multipleOf"] = 1  # an integral value: 3.0 is taken, 3.5 refused

    def content(model: str, media: str = JSON) -> dict[str, Any]:
        return {"content": {media: {"schema": {"$ref": f"#/components/schemas/{model}"}}}}

    problems = {
        str(status): {"description": text, **content("Problem", PROBLEM_TYPE)}
        for status, text in (
            (400, "invalid JSON, or an object that repeats a key"),
            (401, "admin token missing or wrong"),
            (408, "the body did not arrive within the body timeout"),
            (409, "reload refused"),
            (413, "too many candidates or too large a body"),
            (415, "the body is not application/json"),
            (422, "invalid input (the code says which)"),
            (500, "internal error"),
            (503, "not ready, overloaded or the store unavailable (Retry-After)"),
            (504, "the ranking ran past its deadline"),
        )
    }
    ranking = {"200": {"description": "the ranked candidates", **content("RankResponse")}}
    for path in ("/rank", "/v1/rank", "/v1/echo", "/admin/reload"):
        if path not in schema["paths"]:
            continue
        operation = schema["paths"][path]["post"]
        body_model = "ReloadBody" if path == "/admin/reload" else "RankRequest"
        operation["requestBody"] = {"required": True, **content(body_model)}
        if path in ("/rank", "/v1/rank"):
            operation["responses"] = {**ranking, **problems}
        else:
            operation["responses"] = {"200": {"description": "done"}, **problems}
    app.openapi_schema = schema
    return schema
