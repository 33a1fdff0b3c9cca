"""What a worker holds while it serves: models, the store, the router, the live index version
and its checks, the inference threads, background tasks (`ServiceState`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

from service import metrics
from service.index.loader import IndexMismatch, check_compatible
from service.index.snapshot import Snapshot, SnapshotMeta
from service.models import LoadedModel, ModelRegistry, load_model
from service.routing import Router
from service.settings import Settings
from service.store import (
    EmbeddedStore,
    FeatureStore,
    IndexUnavailable,
    RedisStore,
)

log = logging.getLogger(__name__)

#: How long after two rankings were last in flight at once a lone ranking is still handed to
#: the inference thread (`ServiceState.infer`): under load a request alone now is seldom alone
#: for its inference's 1-4 ms, and one inferred on the loop holds up every arrival meanwhile.
OVERLAP_MEMORY_S = 1.0


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
    pool_runs: int = 0  # inferences handed to the pool and not yet back (loop thread only)
    # perf_counter when rankings last overlapped: at an inference (another in flight, or one on
    # the pool) or at an admission (the server holding other requests: `note_open_requests`)
    last_overlap: float = float("-inf")

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
        self, model: LoadedModel, inputs: dict[str, npt.NDArray[Any]], *, answering: bool = True
    ) -> dict[str, npt.NDArray[Any]]:
        """Run ``model`` on the inference threads, or inline where there are none or where
        nothing is likely to overlap it: the request ``answering`` is the only ranking in
        flight, no inference is on the pool, and none has overlapped another ranking for
        `OVERLAP_MEMORY_S`. The hand-off to a thread and back costs two wake-ups (~0.1-0.3 ms
        here) and buys nothing when no other request comes to be parsed or fetched meanwhile
        (one client at a time); under load a request that arrives during an inline inference
        waits for it, and the loop spent a quarter of its time on such inferences at 250 req/s.
        Work off the response path (a shadow score: ``answering=False``) always goes to the
        pool, so it never holds the loop while a response is being written. On the pool only
        ONNX Runtime's run happens on the thread; the inputs are checked and padded here."""
        now = time.perf_counter()
        if self.in_flight > 1 or self.pool_runs:
            self.last_overlap = now
        alone = answering and now - self.last_overlap > OVERLAP_MEMORY_S
        if self.inference_pool is None or alone:
            return model.runner.run(inputs)
        # Checked and padded here, run there: under load the inference thread is the worker's
        # bottleneck, and each numpy copy on it gave the GIL up and waited for the loop to
        # hand it back (docs/ARCHITECTURE.md, Decisions: "The inference thread runs the graph").
        prepared = model.runner.prepare(inputs)
        handed = time.perf_counter()

        def execute() -> tuple[dict[str, npt.NDArray[Any]], float, float]:
            began = time.perf_counter()
            return model.runner.execute(prepared), began, time.perf_counter()

        loop = asyncio.get_running_loop()
        self.pool_runs += 1
        try:
            outputs, began, ended = await loop.run_in_executor(self.inference_pool, execute)
        finally:
            self.pool_runs -= 1
        # Whether the thread is the bottleneck: its run time per second is its busy share.
        metrics.child(metrics.INFERENCE_THREAD, model.name, "wait").observe(began - handed)
        metrics.child(metrics.INFERENCE_THREAD, model.name, "run").observe(ended - began)
        return outputs

    def note_open_requests(self, count: int) -> None:
        """Remember an overlap when the server holds more than one request (``count``, the
        admitted one included): `infer` hands lone rankings off for `OVERLAP_MEMORY_S` after.
        A handler that runs to its inference without waiting (the embedded store's fetch) is
        never in flight beside another, so the in-flight count alone never saw the requests
        parsed behind it, and every inference ran on the loop at any load."""
        if count > 1:
            self.last_overlap = time.perf_counter()

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
