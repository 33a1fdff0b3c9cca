"""Errors as RFC 9457 problem+json with a stable machine-readable ``code`` and the request id.

Clients branch on ``code`` (never on ``detail``, which is for people). Field errors list the
offending field as a dotted path (``candidates.3.item_id``).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

PROBLEM_TYPE = "application/problem+json"
#: Seconds a client is told to wait (Retry-After) when the service is not ready or its store
#: is unavailable; an overloaded worker says 1.
RETRY_AFTER_S = "2"


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    DUPLICATE_KEY = "duplicate_key"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_VALUE = "invalid_value"
    EMPTY_CANDIDATES = "empty_candidates"
    DUPLICATE_CANDIDATES = "duplicate_candidates"
    TOO_MANY_CANDIDATES = "too_many_candidates"
    STRING_TOO_LONG = "string_too_long"
    NON_FINITE_FEATURE = "non_finite_feature"
    UNKNOWN_MODEL = "unknown_model"
    BODY_TOO_LARGE = "body_too_large"
    BODY_TIMEOUT = "body_timeout"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    NOT_READY = "not_ready"
    OVERLOADED = "overloaded"
    STORE_UNAVAILABLE = "store_unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    UNAUTHORIZED = "unauthorized"
    RELOAD_REFUSED = "reload_refused"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL = "internal_error"


STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.DUPLICATE_KEY: 400,
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.BODY_TIMEOUT: 408,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.TOO_MANY_CANDIDATES: 413,
    ErrorCode.NOT_READY: 503,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.STORE_UNAVAILABLE: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.RELOAD_REFUSED: 409,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.INTERNAL: 500,
}
#: The order in which one code is chosen when a request has several field errors.
_PRIORITY = (
    ErrorCode.TOO_MANY_CANDIDATES,
    ErrorCode.MISSING_FIELD,
    ErrorCode.WRONG_TYPE,
    ErrorCode.UNKNOWN_FIELD,
    ErrorCode.EMPTY_CANDIDATES,
    ErrorCode.DUPLICATE_CANDIDATES,
    ErrorCode.STRING_TOO_LONG,
    ErrorCode.NON_FINITE_FEATURE,
    ErrorCode.INVALID_VALUE,
)
_PYDANTIC_CODES: dict[str, ErrorCode] = {
    "missing": ErrorCode.MISSING_FIELD,
    "extra_forbidden": ErrorCode.UNKNOWN_FIELD,
    "finite_number": ErrorCode.NON_FINITE_FEATURE,
    "string_too_long": ErrorCode.STRING_TOO_LONG,
    "json_invalid": ErrorCode.INVALID_JSON,
    "json_type": ErrorCode.INVALID_JSON,
}


_UNION_MEMBERS = {"int", "float", "str", "bool"}


#: A problem response lists at most this many field errors and counts the rest: a body of
#: 300k bad candidates must not be answered with a 30 MB list.
MAX_LISTED_ERRORS = 20


class ServiceError(Exception):
    """An error the service answers with a problem response (at most `MAX_LISTED_ERRORS` field
    errors listed, ``omitted`` counting the rest)."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail
        listed = errors or []
        self.errors = listed[:MAX_LISTED_ERRORS]
        self.omitted = len(listed) - len(self.errors)
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 422)


def field_error(location: str, code: ErrorCode, message: str) -> dict[str, Any]:
    return {"field": location, "code": code.value, "message": message}


def from_validation(err: ValidationError) -> ServiceError:
    """A pydantic validation error as one ServiceError: the most specific code wins."""
    errors = []
    non_finite: set[str] = set()
    for e in err.errors(include_url=False):
        kind = str(e["type"])
        parts = [str(part) for part in e["loc"]]
        if parts and parts[-1] in _UNION_MEMBERS:  # "features.x.float": the field is features.x
            parts = parts[:-1]
        location = ".".join(parts)
        if kind == "finite_number":
            non_finite.add(location)
        code = _PYDANTIC_CODES.get(kind)
        if code is None:
            custom = e.get("ctx", {}).get("code")
            if custom:
                code = ErrorCode(custom)
            elif kind.endswith(("_type", "_parsing")):
                code = ErrorCode.WRONG_TYPE
            else:
                code = ErrorCode.INVALID_VALUE
        errors.append(field_error(location, code, str(e["msg"])))
    # A NaN in a number-or-string field also fails the other members of the union; what is
    # wrong with it is that it is not finite.
    errors = [
        e
        for e in errors
        if e["field"] not in non_finite or e["code"] == ErrorCode.NON_FINITE_FEATURE.value
    ]
    codes = {ErrorCode(e["code"]) for e in errors}
    if ErrorCode.INVALID_JSON in codes:
        return ServiceError(ErrorCode.INVALID_JSON, "the body is not valid JSON", errors=errors)
    chosen = next((c for c in _PRIORITY if c in codes), ErrorCode.INVALID_VALUE)
    first = next(e for e in errors if e["code"] == chosen.value)
    return ServiceError(chosen, f"{first['field']}: {first['message']}", errors=errors)


class FieldProblem(BaseModel):
    field: str
    code: str
    message: str


class Problem(BaseModel):
    """The body of every error response (application/problem+json)."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str
    request_id: str | None
    errors: list[FieldProblem] | None = None


_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,200}")


def request_id_header(request_id: str | None) -> dict[str, str]:
    """X-Request-ID when the id can travel in a header (visible ASCII); the body always has it."""
    if request_id is not None and _HEADER_SAFE.fullmatch(request_id):
        return {"X-Request-ID": request_id}
    return {}


def problem(err: ServiceError, request_id: str | None, instance: str) -> Response:
    body: dict[str, Any] = {
        "type": f"/errors/{err.code.value}",
        "title": err.code.value.replace("_", " "),
        "status": err.status,
        "code": err.code.value,
        "detail": err.detail,
        "instance": instance,
        "request_id": request_id,
    }
    if err.errors:
        body["errors"] = err.errors
    if err.omitted:
        body["errors_omitted"] = err.omitted
    headers = {**request_id_header(request_id), **err.headers}
    return Response(orjson.dumps(body), err.status, headers, media_type=PROBLEM_TYPE)
