"""Service configuration: every setting is a ``RANKER_*`` environment variable (or .env entry).

Lists are comma-separated: ``RANKER_MODELS=artifacts/prectr/1,artifacts/vanilla/1``,
``RANKER_ARMS=prectr:90,vanilla:10``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.index.keys import DEFAULT_NAMESPACE
from service.inference import DEFAULT_BUCKETS


def _parts(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _split(value: object) -> object:
    return _parts(value) if isinstance(value, str) else value


class Settings(BaseSettings):
    """What the service loads, where its index lives, and its limits."""

    model_config = SettingsConfigDict(env_prefix="RANKER_", env_file=".env", extra="ignore")

    # models
    models: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="model package folders to load"
    )
    default_model: str | None = Field(None, description="served when no arm or model is named")
    arms: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict, description="A/B arms: model name -> traffic share (by user MD5)"
    )
    shadow_model: str | None = Field(None, description="scored off the response path")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "fp16"] = "auto"
    buckets: Annotated[tuple[int, ...], NoDecode] = DEFAULT_BUCKETS
    inference_threads: int = Field(
        1,
        ge=0,
        description="threads per worker that run the models: ONNX Runtime releases the GIL, so "
        "the next requests are parsed and fetched while one is inferred (a ranking alone in "
        "flight, with none overlapping another for a second, is inferred inline: nothing is "
        "likely to overlap it); 0 = always on the event loop",
    )
    intra_op_threads: int = Field(1, ge=1)
    inter_op_threads: int = Field(1, ge=1)
    faiss_threads: int = Field(1, ge=1)

    # feature store
    store: Literal["embedded", "redis"] = "embedded"
    snapshot: Path | None = Field(None, description="snapshot folder for the embedded store")
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    namespace: str = DEFAULT_NAMESPACE
    store_timeout_ms: float = Field(50.0, gt=0)
    item_cache_mb: float = Field(
        64.0,
        ge=0,
        description="in-process cache of the live version's item records (Redis store), "
        "bounded by this size (records unused for a turn of the cache leave first); 0 = none",
    )
    fail_on_store_error: bool = False
    match_threshold: float | None = None

    # limits and deadlines
    deadline_ms: float = Field(200.0, gt=0)
    max_in_flight: int = Field(
        32, ge=1, description="rankings a worker holds at once; past it, 503 overloaded"
    )
    max_queue_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="share of the deadline a request may wait between its arrival and its "
        "handler (the event loop's queue, when the loop is the saturated resource); past it, "
        "503 overloaded",
    )
    max_candidates: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    body_timeout_s: float = Field(
        10.0,
        gt=0,
        description="seconds a request's body may take to arrive once its head has (408 after)",
    )
    max_string_length: int = Field(512, ge=8)

    # admin and diagnostics
    admin_token: str | None = Field(None, description="bearer token of /admin; unset = disabled")
    package_root: Path | None = Field(
        None,
        description="the only folder /admin/reload loads packages from (default: the folder "
        "holding the configured packages' <name>/<version> folders)",
    )
    package_key: SecretStr | None = Field(
        None,
        description="HMAC key every package must be signed with (`ranker export onnx` signs "
        "with RANKER_PACKAGE_KEY); unset: checksums only",
    )
    enable_echo: bool = Field(False, description="POST /v1/echo: parse only (benchmark floor)")
    enable_docs: bool = Field(
        False, description="/docs, /redoc and /openapi.json (off: they map the attack surface)"
    )
    expose_details: bool = Field(
        False,
        description="package paths in /models and error class names in 500 bodies (off: "
        "they tell an attacker the layout; the logs always have them)",
    )

    @field_validator("models", "buckets", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("arms", mode="before")
    @classmethod
    def _arms(cls, value: object) -> object:
        if isinstance(value, str):
            arms: dict[str, float] = {}
            for part in _parts(value):
                name, _, share = part.partition(":")
                arms[name.strip()] = float(share or 1)
            return arms
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.store == "embedded" and self.snapshot is None:
            raise ValueError("RANKER_SNAPSHOT is required with RANKER_STORE=embedded")
        if list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError("RANKER_BUCKETS must be increasing")
        if any(share < 0 for share in self.arms.values()) or (
            self.arms and sum(self.arms.values()) <= 0
        ):
            raise ValueError("RANKER_ARMS shares must be >= 0 and not all 0")
        return self
