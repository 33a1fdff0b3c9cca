"""The FastAPI application: `create_app(settings)` builds it and maps the routes.

The parts live beside it: the worker's state and its lifespan work (`state.py`), the ranking
path (`ranking.py`), the admin surface (`admin.py`) and the OpenAPI document (`openapi.py`).
Every error is problem+json with a stable code (`errors.py`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from service import metrics
from service.admin import ReloadBody, authorize, reload_model, reload_target
from service.errors import (
    RETRY_AFTER_S,
    ErrorCode,
    ServiceError,
    from_validation,
    problem,
)
from service.openapi import openapi_schema
from service.ranking import (
    CLIENT_CLOSED,
    JSON,
    ClientGone,
    arrival,
    check_media_type,
    handle_rank,
    parse_rank_request,
    read_body,
    to_ms,
)
from service.settings import Settings
from service.state import ServiceState


def echo_timing(request: Request, started: float) -> dict[str, float]:
    """An echo's timings: ``total`` from the request's arrival, as /rank's total counts (a floor
    moves the bytes through the same stack: the head and body parsed, the route found), and
    ``parse`` from the handler's start."""
    ended = time.perf_counter()
    return {"parse": to_ms(ended - started), "total": to_ms(ended - arrival(request, started))}


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
            measures the HTTP stack and parsing by (enabled by RANKER_ENABLE_ECHO). Timings as
            /rank's: ``total`` from the request's arrival, ``parse`` from the handler's start."""
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
            timing = echo_timing(request, started)
            reply = {"request_id": body.request_id, "candidates": len(body.candidates)}
            return Response(orjson.dumps({**reply, "timing_ms": timing}), media_type=JSON)

        @app.post("/v1/echo/raw")
        async def echo_raw(request: Request) -> Response:
            """Reads a body and decodes it with orjson, no validation: the strict floor, what
            moving the bytes through this HTTP stack costs (enabled by RANKER_ENABLE_ECHO);
            timings as /v1/echo's."""
            started = time.perf_counter()
            state: ServiceState = request.app.state.service
            try:
                decoded = orjson.loads(await read_body(request, state.settings))
            except (ServiceError, orjson.JSONDecodeError):
                return Response(status_code=400)
            except ClientGone:
                return Response(status_code=int(CLIENT_CLOSED))
            timing = echo_timing(request, started)
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
