"""POST /rank: admission (arrival age, in-flight limit) -> media type -> body under its size
and time limits -> parse -> route -> fetch (one round trip, bounded by the deadline) ->
assemble -> ONNX Runtime -> sort -> the answer with per-stage timings. A store that fails or
is slow degrades the answer unless ``RANKER_FAIL_ON_STORE_ERROR`` is set."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import Request
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from service import metrics
from service._kernels import ranked_items
from service.errors import (
    RETRY_AFTER_S,
    ErrorCode,
    ServiceError,
    problem,
    request_id_header,
)
from service.models import LoadedModel
from service.protocol import ARRIVED, OPEN_REQUESTS
from service.routing import Route
from service.schemas import (
    ITEM_ID,
    RankRequest,
    SuppliedFeatures,
    carries_features,
    check_candidate_count,
    check_limits,
    check_unique_keys,
    decode_model,
    decode_plain,
    decode_rank_request,
    request_of,
)
from service.settings import Settings
from service.state import ServiceState
from service.store import (
    IndexUnavailable,
    Prefetch,
    RequestFeatures,
    unavailable_features,
)

log = logging.getLogger(__name__)


JSON = "application/json"


CLIENT_CLOSED = "499"

#: Request ids the service makes: 32 hex digits, as a UUID's, a random tag of the process and a
#: counter (unique across workers and restarts; a uuid4 per request cost 2 us of os.urandom).
_PROCESS_TAG = secrets.token_hex(8)
_REQUEST_COUNT = itertools.count()


def new_request_id() -> str:
    return f"{_PROCESS_TAG}{next(_REQUEST_COUNT):016x}"


def check_media_type(content_type: str | None) -> None:
    """A /rank body must say it is JSON: anything else is refused (415) before it is read, so
    a form post or a text body never reaches the parser as if it were JSON."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != JSON:
        raise ServiceError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"the body must be {JSON}, not {media or 'untyped'}",
        )


class ClientGone(Exception):
    """The client hung up before its body was complete: nobody is left to answer."""


async def read_body(request: Request, settings: Settings) -> bytes:
    """The whole body, within the size limit and the body timeout: a client that trickles its
    body would otherwise hold one of the worker's in-flight slots for as long as it likes (408,
    and the connection is closed: what it still sends is not read)."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServiceError(ErrorCode.BODY_TOO_LARGE, f"the body is over {limit} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ServiceError(ErrorCode.BODY_TOO_LARGE, f"the body is over {limit} bytes")
                chunks.append(chunk)
    except ClientDisconnect as err:
        raise ClientGone(f"after {size} bytes of the body") from err
    except TimeoutError as err:
        raise ServiceError(
            ErrorCode.BODY_TIMEOUT,
            f"the body did not arrive within {settings.body_timeout_s:g} s ({size} bytes came)",
            headers={"Connection": "close"},
        ) from err
    return b"".join(chunks)


def decode_body(raw: bytes, settings: Settings) -> RankRequest:
    """A /rank body with its fields' types and bounds checked (else `ServiceError`); what
    `check_body` checks is still to do."""
    check_candidate_count(raw, settings.max_candidates)
    return decode_rank_request(raw)


def decode_and_prefetch(
    state: ServiceState, raw: bytes
) -> tuple[RankRequest, list[str], Prefetch | None]:
    """`decode_body` with the store's read sent as early as it can be: a plain body's
    (`decode_plain`) right after msgspec's decode, before its `RankRequest` is built; any other
    body's once the model has validated it. The body, its candidates' ids, and the read sent
    (None: none, `RedisStore.fetch` reads then)."""
    check_candidate_count(raw, state.settings.max_candidates)
    store, plain = state.store, decode_plain(raw)
    if plain is not None:
        fields = plain.fields
        sent = store.prefetch(fields.user_id, fields.query, plain.item_ids) if store else None
        return request_of(plain), plain.item_ids, sent
    body = decode_model(raw)
    item_ids = list(map(ITEM_ID, body.candidates))
    sent = store.prefetch(body.user_id, body.query, item_ids) if store else None
    return body, item_ids, sent


def check_body(raw: bytes, body: RankRequest, settings: Settings) -> None:
    """The checks across a decoded body: no repeated key, the configured string limits."""
    check_unique_keys(raw, body)
    check_limits(body, settings)


def parse_rank_request(raw: bytes, settings: Settings) -> RankRequest:
    """A /rank body, validated and within the configured limits (else `ServiceError`)."""
    body = decode_body(raw, settings)
    check_body(raw, body, settings)
    return body


def to_ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


async def fetch_features(
    state: ServiceState,
    body: RankRequest,
    item_ids: list[str],
    budget_s: float,
    dim: int,
    prefetched: Prefetch | None = None,
) -> tuple[RequestFeatures, list[str]]:
    """The store's answer within the budget, or defaults and the reason (unless configured
    to fail)."""
    assert state.store is not None
    reason = ""
    try:
        # asyncio.timeout, not wait_for: no extra task (and loop turn) per request
        async with asyncio.timeout(max(budget_s, 0.001)):
            features = await state.store.fetch(body.user_id, body.query, item_ids, prefetched)
        return features, []
    except TimeoutError:
        reason = "store_timeout"
    except IndexUnavailable as err:
        reason = "store_unavailable"
        log.warning("feature store unavailable: %s", err)
    if state.settings.fail_on_store_error:
        raise ServiceError(
            ErrorCode.STORE_UNAVAILABLE,
            f"the feature store did not answer ({reason})",
            headers={"Retry-After": RETRY_AFTER_S},
        )
    return unavailable_features(body.query, len(item_ids), dim), [reason]


#: A candidate's flags by code: 0 none, 1 its pair vector approximated, 2 unknown to the index,
#: 3 unknown and described by the request (shared, read-only lists: the response serializes them).
_FLAGS: tuple[list[str], ...] = (
    [],
    ["approximated_pair"],
    ["unknown_item"],
    ["unknown_item", "request_features"],
)


def _ranked_items(
    item_ids: list[str],
    outputs: dict[str, npt.NDArray[Any]],
    features: RequestFeatures,
    supplied: list[SuppliedFeatures | None] | None,
    top_k: int | None,
    explain: bool,
) -> list[dict[str, Any]]:
    """The response's items in rank order (the best ``top_k``), with each candidate's flags
    (`_FLAGS`): sorted and built in one C pass (`_kernels.ranked_items`), since a dict per item
    was the largest part of the answer. ``supplied``: None where no candidate carries
    features."""
    c = features.candidates
    described = (
        None
        if supplied is None
        else np.fromiter((s is not None for s in supplied), bool, len(supplied))
    )
    items, order = ranked_items(
        item_ids,
        np.ascontiguousarray(outputs["score"], dtype=np.float32),
        len(item_ids) if top_k is None else min(top_k, len(item_ids)),  # any int: a C size
        c.item_known,
        c.pair_known,
        features.query.match.row >= 0,
        described,
        _FLAGS,
    )
    if explain:
        rows = np.frombuffer(order, np.int64)
        columns = (outputs[name][rows].tolist() for name in ("p_rsl", "p_click_given_rsl", "tau"))
        for item, p_rsl, p_click, tau in zip(items, *columns, strict=True):
            item["explain"] = {"p_rsl": p_rsl, "p_click_given_rsl": p_click, "tau": tau}
    return items


def _route(state: ServiceState, body: RankRequest) -> tuple[Route, LoadedModel]:
    assert state.router is not None
    route = state.router.route(body.user_id, body.model)
    model = state.registry.get(route.model)
    if model is None:
        raise ServiceError(
            ErrorCode.UNKNOWN_MODEL,
            f"model {route.model!r} is not loaded; loaded: {state.registry.names}",
            errors=[{"field": "model", "code": "unknown_model", "message": "not loaded"}],
        )
    return route, model


def arrival(request: Request, started: float) -> float:
    """When ``request`` arrived (``time.perf_counter()``): stamped by service.protocol when its
    head began to parse, so the time before a handler runs counts (HTTP parsing, routing, a
    saturated loop's wait). In-process clients have no stamp: they arrive when the handler
    starts (``started``)."""
    return float(min(request.scope.get(ARRIVED, started), started))


async def handle_rank(state: ServiceState, request: Request) -> Response:
    started = time.perf_counter()
    # The deadline counts from the request's arrival: a saturated event loop makes requests
    # wait before any handler runs.
    arrived = arrival(request, started)
    settings = state.settings
    request_id = request.headers.get("x-request-id") or new_request_id()
    route_label = ("unknown", "none")
    admitted = False
    waited: float | None = None  # how long it queued, once past the in-flight limit
    answered: metrics.AnsweredRanking | None = None
    prefetched: Prefetch | None = None
    try:
        if not state.warm:
            raise ServiceError(
                ErrorCode.NOT_READY, "models are loading", headers={"Retry-After": RETRY_AFTER_S}
            )
        if state.in_flight >= settings.max_in_flight:
            # Shed at the door: a request admitted past this would only wait behind the others
            # and pass its deadline; a quick 503 lets the client (or nginx) go elsewhere.
            raise ServiceError(
                ErrorCode.OVERLOADED,
                f"{state.in_flight} rankings in flight (limit {settings.max_in_flight})",
                headers={"Retry-After": "1"},
            )
        waited = started - arrived
        if waited * 1000 > settings.deadline_ms * settings.max_queue_share:
            # Admitting it would spend the loop on an answer that is likely late: shed it now,
            # cheaply, before its body is read, and keep the loop for requests that can make it.
            raise ServiceError(
                ErrorCode.OVERLOADED,
                f"waited {waited * 1000:.0f} ms for the worker (limit "
                f"{settings.deadline_ms * settings.max_queue_share:g} ms)",
                headers={"Retry-After": "1"},
            )
        state.in_flight += 1
        admitted = True
        state.note_open_requests(len(request.scope.get(OPEN_REQUESTS, ())))
        check_media_type(request.headers.get("content-type"))
        raw = await read_body(request, settings)
        try:
            # The store's read goes out as soon as its keys are known (a common body's user,
            # query and candidate ids), and the request is built and checked while Redis works
            # on it: a body the checks refuse drops the reply unread.
            body, item_ids, prefetched = decode_and_prefetch(state, raw)
            check_body(raw, body, settings)
            request_id = body.request_id or request_id
            route, model = _route(state, body)
            route_label = (model.name, route.arm)
            response, answered = await _rank(
                state, body, item_ids, prefetched, model, route, request_id, (arrived, started)
            )
        except ServiceError:
            raise
        except Exception as err:  # a bug or a corrupt record: a 500 problem, the service stays up
            log.exception("request %s failed", request_id)
            what = f": {type(err).__name__}" if settings.expose_details else ""
            raise ServiceError(ErrorCode.INTERNAL, f"internal error{what}") from err
    except ServiceError as err:
        metrics.ERRORS.labels(err.code.value).inc()
        metrics.REQUESTS.labels(*route_label, str(err.status)).inc()
        metrics.REQUEST_LATENCY.labels(*route_label, str(err.status)).observe(
            time.perf_counter() - started
        )
        return problem(err, request_id, request.url.path)
    except ClientGone as gone:
        # Routine on the internet, and the client will not read an answer: one line, no trace.
        log.info("request %s: the client hung up %s", request_id, gone)
        metrics.REQUESTS.labels(*route_label, CLIENT_CLOSED).inc()
        return Response(status_code=int(CLIENT_CLOSED))
    finally:
        if admitted:
            state.in_flight -= 1
        if prefetched is not None:
            prefetched.cancel()  # a no-op once read; else nobody will read it
        if waited is not None and answered is None:  # an answer records its wait when sent
            metrics.QUEUE_WAIT.observe(waited)
    answered.seconds = time.perf_counter() - started
    server_timing = ", ".join(f"{stage};dur={ms}" for stage, ms in answered.stages_ms.items())
    return Response(
        orjson.dumps(response),
        media_type="application/json",
        headers={"Server-Timing": server_timing, **request_id_header(request_id)},
        background=BackgroundTask(metrics.record_answered, answered),
    )


async def _rank(
    state: ServiceState,
    body: RankRequest,
    item_ids: list[str],
    prefetched: Prefetch | None,
    model: LoadedModel,
    route: Route,
    request_id: str,
    arrived_started: tuple[float, float],
) -> tuple[dict[str, Any], metrics.AnsweredRanking]:
    """The ranking of an admitted request and what its metrics are to record once it is sent;
    ``arrived_started``: its arrival and the moment its handler started
    (``time.perf_counter()``)."""
    settings, manifest = state.settings, model.package.manifest
    arrived, started = arrived_started
    deadline = arrived + settings.deadline_ms / 1000
    t_parse = time.perf_counter()

    past_deadline(deadline, settings.deadline_ms)  # e.g. it waited behind others
    budget = min(settings.store_timeout_ms / 1000, deadline - t_parse)
    features, degraded = await fetch_features(
        state, body, item_ids, budget, manifest.text_dim, prefetched
    )
    why = await state.unusable(features.index_version)
    if why is not None:
        if settings.fail_on_store_error:
            raise ServiceError(
                ErrorCode.STORE_UNAVAILABLE,
                f"the live index cannot serve this model: {why}",
                headers={"Retry-After": RETRY_AFTER_S},
            )
        features = unavailable_features(body.query, len(item_ids), manifest.text_dim)
        degraded.append("index_incompatible")
    t_fetch = time.perf_counter()
    past_deadline(deadline, settings.deadline_ms)

    candidates = body.candidates
    supplied: list[SuppliedFeatures | None] | None = (
        [c.get("features") for c in candidates] if carries_features(candidates) else None
    )
    hour = body.context.hour if body.context and body.context.hour is not None else None
    if hour is None:
        hour = time.gmtime().tm_hour
    assembled = model.assembler.assemble(
        body.user_id, body.query, item_ids, features, hour, supplied
    )
    inputs = {name: assembled[name] for name in model.runner.input_names}
    t_assemble = time.perf_counter()
    past_deadline(deadline, settings.deadline_ms)

    outputs = await state.infer(model, inputs)
    scores = outputs["score"]
    t_inference = time.perf_counter()

    if features.query.match.kind == "empty" and manifest.empty_query_share == 0.0:
        degraded.append("empty_query_untrained")
    past_deadline(deadline, settings.deadline_ms)  # a late answer is not sent as a ranking
    explain = body.explain and "p_rsl" in outputs
    items = _ranked_items(item_ids, outputs, features, supplied, body.top_k, explain)

    shadow = settings.shadow_model
    if shadow and shadow != model.name:
        state.spawn(_score_shadow(state, shadow, model.name, assembled, scores))
    done = time.perf_counter()
    timings = {
        "queue": to_ms(started - arrived),
        "parse": to_ms(t_parse - started),
        "fetch": to_ms(t_fetch - t_parse),
        "assemble": to_ms(t_assemble - t_fetch),
        "inference": to_ms(t_inference - t_assemble),
        # From the request's arrival, as the deadline and the bench's echo floors count: the
        # stack's work before the handler (``queue``) is part of the server's time.
        "total": to_ms(done - arrived),
    }
    response = {
        "request_id": request_id,
        "model": {"name": model.name, "version": model.version, "arm": route.arm},
        "items": items,
        "timing_ms": timings,
        "degraded": degraded,
        "resolution": resolution(features),
        "index_version": features.index_version or None,
    }
    answered = metrics.AnsweredRanking(
        model.name,
        route.arm,
        seconds=0.0,  # the caller's to set: its handler's time
        candidates=len(item_ids),
        stages_ms=timings,
        misses=features.misses,
        degraded=degraded,
        cached_items=features.cached_items,
        read_bytes=features.read_bytes,
    )
    return response, answered


#: The response's name of each way the lexical matcher resolves a query.
_RESOLUTION = {"exact": "exact", "nearest": "borrowed", "none": "none", "empty": "empty"}


def resolution(features: RequestFeatures) -> dict[str, Any]:
    """How the request's query was resolved and whether its user was known (the response's
    ``resolution``): a client can tell an answer about a known query from a guess."""
    match = features.query.match
    borrowed = match.kind == "nearest"
    return {
        "query": _RESOLUTION[match.kind],
        "borrowed_from": match.matched_text if borrowed else None,
        "similarity": round(match.similarity, 4) if borrowed else None,
        "user_known": features.user.known,
    }


def past_deadline(deadline: float, deadline_ms: float) -> None:
    """Stop a request whose deadline has passed (504): no more work on an answer the client
    may no longer wait for, and no ranking answered later than promised."""
    if time.perf_counter() > deadline:
        raise ServiceError(
            ErrorCode.DEADLINE_EXCEEDED, f"the ranking ran past its {deadline_ms:g} ms deadline"
        )


def rank_disagreement(served: npt.NDArray[Any], shadow: npt.NDArray[Any]) -> float:
    """1 - Spearman's rank correlation of two score vectors (0 = same order, 2 = reversed)."""
    if len(served) < 2:
        return 0.0
    a = np.argsort(np.argsort(served)).astype(np.float64)
    b = np.argsort(np.argsort(shadow)).astype(np.float64)
    a -= a.mean()
    b -= b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return 1.0 - (float((a * b).sum()) / denominator if denominator else 1.0)


async def _score_shadow(
    state: ServiceState,
    shadow_name: str,
    served_name: str,
    inputs: dict[str, npt.NDArray[Any]],
    served_scores: npt.NDArray[Any],
) -> None:
    shadow = state.registry.get(shadow_name)
    if shadow is None:
        return
    try:
        feed = {name: inputs[name] for name in shadow.runner.input_names}
        outputs = await state.infer(shadow, feed, answering=False)
        metrics.SHADOW_DISAGREEMENT.labels(served_name, shadow_name).observe(
            rank_disagreement(served_scores, outputs["score"])
        )
    except Exception as err:  # the shadow never affects serving
        metrics.SHADOW_ERRORS.labels(shadow_name).inc()
        log.warning("shadow %s failed: %s", shadow_name, err)
