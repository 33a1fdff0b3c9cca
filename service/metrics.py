"""Prometheus metrics of the service (DESIGN 8). Durations are in seconds (Prometheus' base
unit) with millisecond-scale buckets.

Several worker processes: set ``PROMETHEUS_MULTIPROC_DIR`` (``ranker serve --workers N`` does)
and `render` aggregates every process's files; gauges then report per live process ("liveall")
or the maximum, as each says. The folder's files are `service.metrics_folder`'s: emptied when
the server starts, and `render` drops the live gauges of workers that died without a goodbye.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# prometheus_client switches to multiprocess mode when the variable merely exists; an empty
# value would put its files in the working directory. Empty means unset.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

from prometheus_client import (  # after the environment is settled
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from service.errors import ErrorCode
from service.metrics_folder import drop_dead_workers

if TYPE_CHECKING:
    from service.store import MissKind

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
)
CANDIDATE_BUCKETS = (1, 10, 25, 50, 100, 200, 300, 500, 750, 1000, 2000)
STAGES = ("queue", "parse", "fetch", "assemble", "inference", "total")

REQUEST_LATENCY = Histogram(
    "ranker_request_duration_seconds",
    "POST /rank latency, by model, arm and HTTP status",
    ["model", "arm", "status"],
    buckets=LATENCY_BUCKETS,
)
STAGE_LATENCY = Histogram(
    "ranker_stage_duration_seconds",
    "Latency of each stage of a ranking request",
    ["stage", "model"],
    buckets=LATENCY_BUCKETS,
)
CANDIDATES = Histogram(
    "ranker_candidates_per_request", "Candidates per ranking request", buckets=CANDIDATE_BUCKETS
)
REQUESTS = Counter("ranker_requests_total", "Ranking requests", ["model", "arm", "status"])
ERRORS = Counter("ranker_errors_total", "Error responses by code", ["code"])
MISSES = Counter("ranker_index_misses_total", "Index lookups that found nothing", ["kind"])
DEGRADED = Counter("ranker_degraded_total", "Degraded responses by reason", ["reason"])
SHADOW_DISAGREEMENT = Histogram(
    "ranker_shadow_rank_disagreement",
    "1 - Spearman rank correlation between the shadow model's and the served model's ranking",
    ["model", "shadow"],
    buckets=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0),
)
SHADOW_ERRORS = Counter("ranker_shadow_errors_total", "Shadow scorings that failed", ["shadow"])
MODEL_INFO = Gauge(
    "ranker_model_info",
    "Loaded models (1 = serving)",
    ["name", "version", "family", "precision", "provider"],
    multiprocess_mode="liveall",
)
INDEX_INFO = Gauge(
    "ranker_index_info", "The index version in use (1)", ["version"], multiprocess_mode="liveall"
)
READY = Gauge(
    "ranker_ready",
    "1 when models are warm and the index is usable",
    ["pid"],
    multiprocess_mode="liveall",
)
RELOADS = Counter("ranker_model_reloads_total", "Model reloads by result", ["result"])
ITEM_CACHE = Counter(
    "ranker_item_cache_lookups_total", "Candidates looked up in the item record cache", ["result"]
)
STORE_READ_BYTES = Counter("ranker_store_read_bytes_total", "Bytes of Redis replies to fetches")
QUEUE_WAIT = Histogram(
    "ranker_queue_wait_seconds",
    "Time a ranking request waited between its arrival and its handler (the event loop's queue)",
    buckets=LATENCY_BUCKETS,
)
INFERENCE_THREAD = Histogram(
    "ranker_inference_thread_seconds",
    "Inferences handed to the inference threads, by phase: wait (from the hand-off until a "
    "thread starts it) and run (the graph's run there, the GIL's hand-backs included)",
    ["model", "phase"],
    buckets=LATENCY_BUCKETS,
)
LOOP_LAG = Histogram(
    "ranker_event_loop_lag_seconds",
    "How late the event loop ran a timer (how long any ready callback waits for the loop)",
    buckets=LATENCY_BUCKETS,
)

#: Every metric the service exports (names as Prometheus sees them, for the dashboard test).
EXPORTED = {
    "ranker_request_duration_seconds_bucket",
    "ranker_request_duration_seconds_count",
    "ranker_request_duration_seconds_sum",
    "ranker_stage_duration_seconds_bucket",
    "ranker_stage_duration_seconds_count",
    "ranker_stage_duration_seconds_sum",
    "ranker_candidates_per_request_bucket",
    "ranker_candidates_per_request_count",
    "ranker_candidates_per_request_sum",
    "ranker_requests_total",
    "ranker_errors_total",
    "ranker_index_misses_total",
    "ranker_degraded_total",
    "ranker_shadow_rank_disagreement_bucket",
    "ranker_shadow_rank_disagreement_count",
    "ranker_shadow_rank_disagreement_sum",
    "ranker_shadow_errors_total",
    "ranker_model_info",
    "ranker_index_info",
    "ranker_ready",
    "ranker_model_reloads_total",
    "ranker_item_cache_lookups_total",
    "ranker_store_read_bytes_total",
    "ranker_queue_wait_seconds_bucket",
    "ranker_queue_wait_seconds_count",
    "ranker_queue_wait_seconds_sum",
    "ranker_inference_thread_seconds_bucket",
    "ranker_inference_thread_seconds_count",
    "ranker_inference_thread_seconds_sum",
    "ranker_event_loop_lag_seconds_bucket",
    "ranker_event_loop_lag_seconds_count",
    "ranker_event_loop_lag_seconds_sum",
}


DEGRADED_REASONS = (
    "store_unavailable",
    "store_timeout",
    "index_incompatible",
    "empty_query_untrained",
)
MISS_KINDS = ("query", "user", "item", "pair")


_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once per process: ``labels`` checks and locks on
    every call (~4 us, and a ranking makes about ten). Bounded as the metrics are: every label
    here comes from the configuration or a fixed set, never from a client's text."""
    key = (id(metric), labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found


@dataclass(slots=True)
class AnsweredRanking:
    """What one answered ranking tells the metrics, recorded by `record_answered` once its
    answer is sent: a dozen observations cost ~30 us of Python (a histogram finds its bucket
    in a loop over the bounds) that the client need not wait for."""

    model: str
    arm: str
    seconds: float  # the handler's time, as REQUEST_LATENCY has always counted it
    candidates: int
    stages_ms: dict[str, float]
    misses: dict[MissKind, int]
    degraded: list[str]
    cached_items: int  # item records the item cache answered (a Redis read only)
    read_bytes: int  # bytes of the Redis reply (0: the embedded store, or nothing read)


async def record_answered(ranking: AnsweredRanking) -> None:
    """Record ``ranking`` (async so that Starlette runs it on the event loop after the answer
    is written, as a response's background task, not on a thread)."""
    model = ranking.model
    QUEUE_WAIT.observe(ranking.stages_ms["queue"] / 1000)
    child(REQUESTS, model, ranking.arm, "200").inc()
    child(REQUEST_LATENCY, model, ranking.arm, "200").observe(ranking.seconds)
    CANDIDATES.observe(ranking.candidates)
    for stage, ms in ranking.stages_ms.items():
        child(STAGE_LATENCY, stage, model).observe(ms / 1000)
    for kind, count in ranking.misses.items():
        if count:
            child(MISSES, kind).inc(count)
    for reason in ranking.degraded:
        child(DEGRADED, reason).inc()
    if ranking.read_bytes:  # a Redis read (the embedded store reads no bytes)
        child(ITEM_CACHE, "hit").inc(ranking.cached_items)
        child(ITEM_CACHE, "miss").inc(ranking.candidates - ranking.cached_items)
        STORE_READ_BYTES.inc(ranking.read_bytes)


def initialize(shadow: str | None) -> None:
    """Create every known label set at 0, so rates and alerts see a series from the start."""
    for code in ErrorCode:
        ERRORS.labels(code.value)
    for kind in MISS_KINDS:
        MISSES.labels(kind)
    for reason in DEGRADED_REASONS:
        DEGRADED.labels(reason)
    for result in ("swapped", "refused"):
        RELOADS.labels(result)
    for result in ("hit", "miss"):
        ITEM_CACHE.labels(result)
    if shadow:
        SHADOW_ERRORS.labels(shadow)


async def watch_loop_lag(period_s: float = 0.1) -> None:
    """Observe, every ``period_s``, how late the event loop wakes a timer: the wait any ready
    callback (a new request's head, a fetched reply) has before the loop runs it. Runs until
    cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period_s
        await asyncio.sleep(period_s)
        LOOP_LAG.observe(max(0.0, loop.time() - due))


def render() -> tuple[bytes, str]:
    """The exposition text (aggregated over worker processes in multiprocess mode)."""
    if folder := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        drop_dead_workers(Path(folder))
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
