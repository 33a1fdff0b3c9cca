"""The admin surface: the bearer token, and model reloads confined to the package root,
verified, warmed and checked against the index before they swap in."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from pathlib import Path
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from service import metrics
from service.errors import (
    ErrorCode,
    ServiceError,
)
from service.index.loader import check_compatible
from service.models import load_model
from service.settings import Settings
from service.state import ServiceState

log = logging.getLogger(__name__)


class ReloadBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    path: str
    manifest_sha256: str | None = Field(
        None,
        pattern="^[0-9a-fA-F]{64}$",
        description="the package's manifest SHA-256 as export printed it: any other is refused",
    )


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
