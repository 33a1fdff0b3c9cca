"""The FastAPI application: `create_app(settings)` builds it; the lifespan loads everything.

POST /rank (and /v1/rank): parse -> route -> fetch (one round trip, bounded by the deadline) ->
assemble -> ONNX Runtime -> sort -> respond with per-stage timings. A store that fails or is slow
degrades the answer (defaults, request-supplied features, ``degraded`` reasons) unless
``RANKER_FAIL_ON_STORE_ERROR`` is set. Every error is problem+json with a stable code.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from service import metrics
from service.errors import (
    PROBLEM_TYPE,
    ErrorCode,
    Problem,
    ServiceError,
    from_validation,
    problem,
    request_id_header,
)
from service.index.loader import IndexMismatch, check_compatible
from service.index.snapshot import Snapshot, SnapshotMeta
from service.models import LoadedModel, ModelRegistry, load_model
from service.protocol import ARRIVED
from service.routing import Route, Router
from service.schemas import (
    RankRequest,
    RankResponse,
    SuppliedFeatures,
    check_candidate_count,
    check_limits,
    check_unique_keys,
)
from service.settings import Settings
from service.store import (
    EmbeddedStore,
    FeatureStore,
    IndexUnavailable,
    RedisStore,
    RequestFeatures,
    unavailable_features,
)

log = logging.getLogger(__name__)
RETRY_AFTER_S = "2"
JSON = "application/json"


class ReloadBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    path: str
    manifest_sha256: str | None = Field(
        None,
        pattern="^[0-9a-fA-F]{64}$",
        description="the package's manifest SHA-256 as export printed it: any other is refused",
    )


@dataclass
class ServiceState:
    """Everything the lifespan builds; handlers read it from ``app.state.service``."""

    settings: Settings
    registry: ModelRegistry = field(default_factory=ModelRegistry)
    store: FeatureStore | None = None
    router: Router | None = None
    index_version: str | None = None
    index_meta: SnapshotMeta | None = None
    incompatible: dict[str, str] = field(default_factory=dict)  # version -> why
    warm: bool = False
    in_flight: int = 0  # rankings admitted and not yet answered (one event loop: no lock)
    configured: frozenset[str] = frozenset()  # the model names loaded at start
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    inference_pool: ThreadPoolExecutor | None = None  # None: inference on the event loop

    async def start(self) -> None:
        s = self.settings
        import faiss

        faiss.omp_set_num_threads(s.faiss_threads)
        for path in s.models:
            model = await asyncio.to_thread(load_model, path, s)
            self.serve_model(model)
        if not self.registry.names:
            raise RuntimeError("no models: set RANKER_MODELS to one or more package folders")
        self.configured = frozenset(self.registry.names)
        default = s.default_model or self.registry.names[0]
        for name in [default, *s.arms, *([s.shadow_model] if s.shadow_model else [])]:
            if self.registry.get(name) is None:
                raise RuntimeError(f"{name!r} is configured but not loaded ({self.registry.names})")
        self.router = Router(s.arms, default)
        if s.inference_threads:
            self.inference_pool = ThreadPoolExecutor(s.inference_threads, "inference")
        metrics.initialize(shadow=s.shadow_model)
        self.spawn(metrics.watch_loop_lag())
        self.store = open_store(s)
        try:
            await self.check_index()
            usable = True
        except (IndexUnavailable, IndexMismatch) as err:
            log.warning("index not usable yet: %s", err)  # /readyz says so until it is
            usable = False
        self.warm = True
        # Each worker reports itself at once (a respawned one too), not at its first /readyz.
        metrics.READY.labels(str(os.getpid())).set(1 if usable else 0)
        gc.collect()
        gc.freeze()  # the loaded models and index live forever: keep them out of GC passes
        gc.set_threshold(50_000, 20, 20)

    async def stop(self) -> None:
        for task in list(self.background):
            task.cancel()
        if self.inference_pool is not None:
            self.inference_pool.shutdown(wait=True, cancel_futures=True)
        if self.store is not None:
            await self.store.close()

    async def infer(
        self, model: LoadedModel, inputs: dict[str, npt.NDArray[Any]]
    ) -> dict[str, npt.NDArray[Any]]:
        """Run ``model`` on the inference threads (or inline where there are none)."""
        if self.inference_pool is None:
            return model.runner.run(inputs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.inference_pool, model.runner.run, inputs)

    def serve_model(self, model: LoadedModel) -> None:
        """Serve ``model`` under its name (replacing any) and update the info gauge."""
        previous = self.registry.swap(model)
        if previous is not None:
            self._model_gauge(previous, 0)
        self._model_gauge(model, 1)

    @staticmethod
    def _model_gauge(model: LoadedModel, value: int) -> None:
        metrics.MODEL_INFO.labels(
            model.name, model.version, model.family, model.precision, model.runner.providers[0]
        ).set(value)

    async def check_index(self) -> tuple[str, SnapshotMeta]:
        """Ask the store for its live index and check it against every model."""
        assert self.store is not None
        version, meta = await asyncio.wait_for(
            self.store.check(), self.settings.store_timeout_ms / 1000 * 4
        )
        self.adopt_index(version, meta)
        return version, meta

    def adopt_index(self, version: str, meta: SnapshotMeta) -> None:
        """Make ``version`` the index in use if every model can use it (else IndexMismatch)."""
        try:
            for model in self.registry.all():
                check_compatible(meta, model.package.manifest)
        except IndexMismatch as err:
            self.incompatible[version] = str(err)
            raise
        if version != self.index_version:
            if self.index_version is not None:
                metrics.INDEX_INFO.labels(self.index_version).set(0)
            metrics.INDEX_INFO.labels(version).set(1)
        self.index_version, self.index_meta = version, meta

    async def unusable(self, version: str) -> str | None:
        """Why the index version a fetch answered from cannot serve these models (None: it can).

        The Redis store follows the live pointer by itself; a version loaded without
        `--model` may have been built with another text tower, and its vectors would be noise.
        """
        if not version or version == self.index_version:
            return None
        if version in self.incompatible:
            return self.incompatible[version]
        assert self.store is not None
        current, meta = await self.store.meta()
        if current != version:
            return None  # the store moved on again; the next request decides
        try:
            self.adopt_index(current, meta)
        except IndexMismatch as err:
            log.error("index version %s is not usable: %s", version, err)
            return str(err)
        return None

    async def readiness(self) -> list[str]:
        """Reasons the service is not ready (empty when it is)."""
        reasons = []
        if not self.warm:
            reasons.append("models not loaded and warm")
        try:
            await self.check_index()
        except (IndexUnavailable, TimeoutError) as err:
            # a TimeoutError has no message: say what happened instead of nothing
            reasons.append(f"index unreachable: {str(err) or 'timeout'}")
        except IndexMismatch as err:
            reasons.append(f"index incompatible: {err}")
        metrics.READY.labels(str(os.getpid())).set(0 if reasons else 1)
        return reasons

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


def open_store(settings: Settings) -> FeatureStore:
    if settings.store == "embedded":
        assert settings.snapshot is not None  # the settings validator requires it
        return EmbeddedStore(Snapshot(settings.snapshot), settings.match_threshold)
    return RedisStore.from_url(
        settings.redis_url,
        namespace=settings.namespace,
        cluster=settings.redis_cluster,
        timeout_s=settings.store_timeout_ms / 1000,
        match_threshold=settings.match_threshold,
        item_cache_bytes=int(settings.item_cache_mb * 2**20),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service; its settings come from ``RANKER_*`` when not given."""
    config = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServiceState(config)
        app.state.service = state
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    docs = config.enable_docs
    app = FastAPI(
        title="ranker",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )

    app.openapi = lambda: openapi_schema(app, config)  # type: ignore[method-assign]

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, err: ServiceError) -> Response:
        metrics.ERRORS.labels(err.code.value).inc()
        return problem(err, request.headers.get("x-request-id"), request.url.path)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> Response:
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
            err.status_code, ErrorCode.INTERNAL
        )
        metrics.ERRORS.labels(code.value).inc()
        # Starlette's own headers stay (a 405 names the allowed methods in Allow).
        error = ServiceError(code, str(err.detail), headers=dict(err.headers or {}))
        return problem(error, None, request.url.path)

    @app.post("/rank")
    @app.post("/v1/rank")
    async def rank(request: Request) -> Response:
        return await handle_rank(request.app.state.service, request)

    if config.enable_echo:

        @app.post("/v1/echo")
        async def echo(request: Request) -> Response:
            """Reads and validates a /rank body and answers at once: the floor the benchmark
            measures the HTTP stack and parsing by (enabled by RANKER_ENABLE_ECHO)."""
            started = time.perf_counter()
            state: ServiceState = request.app.state.service
            try:
                check_media_type(request.headers.get("content-type"))
                raw = await read_body(request, state.settings)
                body = parse_rank_request(raw, state.settings)
            except ServiceError as err:
                return problem(err, None, request.url.path)
            except ClientGone:
                return Response(status_code=int(CLIENT_CLOSED))
            timing = {"parse": _ms(time.perf_counter() - started)}
            reply = {"request_id": body.request_id, "candidates": len(body.candidates)}
            return Response(orjson.dumps({**reply, "timing_ms": timing}), media_type=JSON)

        @app.post("/v1/echo/raw")
        async def echo_raw(request: Request) -> Response:
            """Reads a body and decodes it with orjson, no validation: the strict floor, what
            moving the bytes through this HTTP stack costs (enabled by RANKER_ENABLE_ECHO)."""
            started = time.perf_counter()
            state: ServiceState = request.app.state.service
            try:
                decoded = orjson.loads(await read_body(request, state.settings))
            except (ServiceError, orjson.JSONDecodeError):
                return Response(status_code=400)
            except ClientGone:
                return Response(status_code=int(CLIENT_CLOSED))
            timing = {"parse": _ms(time.perf_counter() - started)}
            candidates = decoded.get("candidates", ()) if isinstance(decoded, dict) else ()
            reply = {"candidates": len(candidates), "timing_ms": timing}
            return Response(orjson.dumps(reply), media_type=JSON)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        state: ServiceState = request.app.state.service
        reasons = await state.readiness()
        if reasons:
            return JSONResponse(
                {"status": "not ready", "reasons": reasons},
                503,
                headers={"Retry-After": RETRY_AFTER_S},
            )
        return JSONResponse({"status": "ready", "index_version": state.index_version})

    # HEAD too: load balancers and uptime checks probe with it (outside the OpenAPI document,
    # where a second operation of the same function would repeat its operation id).
    for path, probe in (("/healthz", healthz), ("/readyz", readyz)):
        app.add_api_route(path, probe, methods=["HEAD"], include_in_schema=False)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/models")
    async def models(request: Request) -> dict[str, Any]:
        state: ServiceState = request.app.state.service
        router = state.router
        return {
            "models": [
                m.describe(with_path=state.settings.expose_details) for m in state.registry.all()
            ],
            "default": router.default if router else None,
            "arms": router.arms if router else {},
            "shadow": state.settings.shadow_model,
            "index": {
                "store": state.settings.store,
                "version": state.index_version,
                "text_tower_fingerprint": (
                    state.index_meta.text_tower_fingerprint if state.index_meta else None
                ),
            },
        }

    @app.post("/admin/reload")
    async def reload(request: Request) -> dict[str, Any]:
        state: ServiceState = request.app.state.service
        authorize(request, state.settings)
        try:
            body = ReloadBody.model_validate_json(await request.body())
        except ValidationError as err:
            raise from_validation(err) from err
        return await reload_model(state, reload_target(state, body.path), body.manifest_sha256)

    return app


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


def authorize(request: Request, settings: Settings) -> None:
    token = settings.admin_token
    given = request.headers.get("authorization", "")
    if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise ServiceError(
            ErrorCode.UNAUTHORIZED,
            "admin calls need 'Authorization: Bearer <RANKER_ADMIN_TOKEN>'"
            + ("" if token else " (no admin token is configured: admin is disabled)"),
            headers={"WWW-Authenticate": "Bearer"},
        )


def package_root(settings: Settings) -> Path:
    """Where reloads may come from: the setting, else the folder all configured packages share
    above their ``<name>/<version>`` folders."""
    if settings.package_root is not None:
        return settings.package_root.resolve()
    parents = [str(path.resolve().parent.parent) for path in settings.models]
    return Path(os.path.commonpath(parents)) if parents else Path.cwd().resolve()


def reload_target(state: ServiceState, requested: str) -> Path:
    """The package folder a reload asks for, if it lies under the package root (symlinks and
    ``..`` resolved first); a relative path is taken from the root."""
    root = package_root(state.settings)
    target = (root / requested).resolve()  # an absolute ``requested`` replaces the root
    if not target.is_relative_to(root):
        raise ServiceError(ErrorCode.RELOAD_REFUSED, "the package is outside the package root")
    return target


async def reload_model(state: ServiceState, path: Path, pin: str | None = None) -> dict[str, Any]:
    """Load, verify (``pin``: the manifest's SHA-256), warm, check against the index, then swap;
    any failure keeps the old one.

    Only the models configured at start can be replaced: a reload is an update, not a way to
    serve something new."""
    try:
        model = await asyncio.to_thread(load_model, path, state.settings, pin)
        if model.name not in state.configured:
            raise ValueError(f"model {model.name!r} is not one this service was started with")
        if state.index_meta is not None:
            check_compatible(state.index_meta, model.package.manifest)
    except Exception as err:  # every failure is a refusal: the old model keeps serving
        metrics.RELOADS.labels("refused").inc()
        log.warning("reload of %s refused: %s", path, err)
        raise ServiceError(ErrorCode.RELOAD_REFUSED, f"{path.name}: {err}") from err
    previous = state.registry.get(model.name)
    state.serve_model(model)
    metrics.RELOADS.labels("swapped").inc()
    log.info(
        "model %s: %s -> %s", model.name, previous.version if previous else None, model.version
    )
    return {
        "model": model.describe(with_path=state.settings.expose_details),
        "replaced": previous.version if previous is not None else None,
    }


#: The status a request whose client hung up is counted under (nginx's "client closed request").
CLIENT_CLOSED = "499"


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


def parse_rank_request(raw: bytes, settings: Settings) -> RankRequest:
    """A /rank body, validated and within the configured limits (else `ServiceError`)."""
    check_candidate_count(raw, settings.max_candidates)
    try:
        body = RankRequest.model_validate_json(raw)
    except ValidationError as err:
        raise from_validation(err) from err
    check_unique_keys(raw, body)
    check_limits(body, settings)
    return body


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


async def fetch_features(
    state: ServiceState, body: RankRequest, item_ids: list[str], budget_s: float, dim: int
) -> tuple[RequestFeatures, list[str]]:
    """The store's answer within the budget, or defaults and the reason (unless configured
    to fail)."""
    assert state.store is not None
    reason = ""
    try:
        # asyncio.timeout, not wait_for: no extra task (and loop turn) per request
        async with asyncio.timeout(max(budget_s, 0.001)):
            features = await state.store.fetch(body.user_id, body.query, item_ids)
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


_FLAG_SETS: tuple[list[str], ...] = ([], ["unknown_item"], ["unknown_item", "request_features"])
_APPROXIMATED = ["approximated_pair"]


def _flags(features: RequestFeatures, supplied: list[SuppliedFeatures | None]) -> list[list[str]]:
    """Each candidate's flags (shared, read-only lists: the response only serializes them)."""
    c = features.candidates
    resolved = features.query.match.row >= 0
    known = c.item_known.tolist()
    paired = c.pair_known.tolist()
    return [
        (_APPROXIMATED if resolved and not pair else _FLAG_SETS[0])
        if item
        else _FLAG_SETS[1 + (given is not None)]
        for item, pair, given in zip(known, paired, supplied, strict=True)
    ]


def _ranked_items(
    item_ids: list[str],
    outputs: dict[str, npt.NDArray[Any]],
    order: list[int],
    flags: list[list[str]],
    explain: bool,
) -> list[dict[str, Any]]:
    """The response's items in rank order (each output column turned into Python values once,
    not a numpy scalar per item)."""
    scores = outputs["score"].tolist()
    items = [
        {"item_id": item_ids[i], "score": scores[i], "rank": rank, "flags": flags[i]}
        if flags[i]
        else {"item_id": item_ids[i], "score": scores[i], "rank": rank}
        for rank, i in enumerate(order, start=1)
    ]
    if explain:
        p_rsl, p_click = outputs["p_rsl"].tolist(), outputs["p_click_given_rsl"].tolist()
        tau = outputs["tau"].tolist()
        for item, i in zip(items, order, strict=True):
            item["explain"] = {"p_rsl": p_rsl[i], "p_click_given_rsl": p_click[i], "tau": tau[i]}
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


async def handle_rank(state: ServiceState, request: Request) -> Response:
    started = time.perf_counter()
    # The deadline counts from the request's arrival (stamped by service.protocol when its
    # head began to parse): a saturated event loop makes requests wait before any handler runs.
    # In-process clients have no stamp: they arrive when the handler starts.
    arrived = min(request.scope.get(ARRIVED, started), started)
    settings = state.settings
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    route_label = ("unknown", "none")
    admitted = False
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
        metrics.QUEUE_WAIT.observe(waited)
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
        check_media_type(request.headers.get("content-type"))
        body = parse_rank_request(await read_body(request, settings), settings)
        request_id = body.request_id or request_id
        route, model = _route(state, body)
        route_label = (model.name, route.arm)
        try:
            response, timings = await _rank(
                state, body, model, route, request_id, (arrived, started)
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
    metrics.REQUESTS.labels(*route_label, "200").inc()
    metrics.REQUEST_LATENCY.labels(*route_label, "200").observe(time.perf_counter() - started)
    server_timing = ", ".join(f"{stage};dur={ms}" for stage, ms in timings.items())
    return Response(
        orjson.dumps(response),
        media_type="application/json",
        headers={"Server-Timing": server_timing, **request_id_header(request_id)},
    )


async def _rank(
    state: ServiceState,
    body: RankRequest,
    model: LoadedModel,
    route: Route,
    request_id: str,
    arrived_started: tuple[float, float],
) -> tuple[dict[str, Any], dict[str, float]]:
    """The ranking of an admitted request; ``arrived_started``: its arrival and the moment its
    handler started (``time.perf_counter()``)."""
    settings, manifest = state.settings, model.package.manifest
    arrived, started = arrived_started
    deadline = arrived + settings.deadline_ms / 1000
    item_ids = [c["item_id"] for c in body.candidates]
    metrics.CANDIDATES.observe(len(item_ids))
    t_parse = time.perf_counter()

    past_deadline(deadline, settings.deadline_ms)  # e.g. it waited behind others
    budget = min(settings.store_timeout_ms / 1000, deadline - t_parse)
    features, degraded = await fetch_features(state, body, item_ids, budget, manifest.text_dim)
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
    for kind, count in features.misses.items():
        if count:
            metrics.MISSES.labels(kind).inc(count)
    if features.read_bytes:  # a Redis read (the embedded store reads no bytes)
        metrics.ITEM_CACHE.labels("hit").inc(features.cached_items)
        metrics.ITEM_CACHE.labels("miss").inc(len(item_ids) - features.cached_items)
        metrics.STORE_READ_BYTES.inc(features.read_bytes)
    t_fetch = time.perf_counter()
    past_deadline(deadline, settings.deadline_ms)

    supplied = [c.get("features") for c in body.candidates]
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
    for reason in degraded:
        metrics.DEGRADED.labels(reason).inc()
    order = np.argsort(-scores, kind="stable")[: body.top_k].tolist()
    explain = body.explain and "p_rsl" in outputs
    items = _ranked_items(item_ids, outputs, order, _flags(features, supplied), explain)

    shadow = settings.shadow_model
    if shadow and shadow != model.name:
        state.spawn(_score_shadow(state, shadow, model.name, assembled, scores))
    done = time.perf_counter()
    timings = {
        "queue": _ms(started - arrived),
        "parse": _ms(t_parse - started),
        "fetch": _ms(t_fetch - t_parse),
        "assemble": _ms(t_assemble - t_fetch),
        "inference": _ms(t_inference - t_assemble),
        "total": _ms(done - started),  # the handler's time: the floors are measured alike
    }
    for stage, ms in timings.items():
        metrics.STAGE_LATENCY.labels(stage, model.name).observe(ms / 1000)
    response = {
        "request_id": request_id,
        "model": {"name": model.name, "version": model.version, "arm": route.arm},
        "items": items,
        "timing_ms": timings,
        "degraded": degraded,
        "index_version": features.index_version or None,
    }
    return response, timings


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
        outputs = await state.infer(shadow, feed)
        metrics.SHADOW_DISAGREEMENT.labels(served_name, shadow_name).observe(
            rank_disagreement(served_scores, outputs["score"])
        )
    except Exception as err:  # the shadow never affects serving
        metrics.SHADOW_ERRORS.labels(shadow_name).inc()
        log.warning("shadow %s failed: %s", shadow_name, err)
