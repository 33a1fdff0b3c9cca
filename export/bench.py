"""`ranker bench`: the service's speed against floors measured in the same run.

Everything is measured here, now, on this machine, and reported next to what bounds it:

1. Latency by candidate count (50, 200, 500, 1000) for both models at concurrency 1: client-side
   and server-side p50 and p99 of `POST /rank` on a live `ranker serve` over Redis, next to the
   floors: the ONNX run alone (the same runner, in this process), the Redis fetch alone (one
   MGET of the same keys) and an echo endpoint on the same stack (HTTP + parsing). The ratio is
   the service's server-side p50 over the sum of the floors' p50s.
2. Throughput: open-loop Poisson arrivals at increasing rates with 100-700 candidates per
   request; latency counts from the scheduled send time (no coordinated omission); the highest
   rate whose p99 stays under the objective.
3. The naive path (export/naive.py): the torch model in the request path, one GET per key.
4. ELEC's Table 5 analog: the gain network with the language model online against the vanilla
   network as served, for the same candidates.
5. Memory: the serving process's resident memory with both models, whether torch is mapped into
   it, and Redis bytes per item, user and pair record.

Medians and p99s over many repeats; no result is compared with a number from another run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import orjson
import redis

from service.assemble import Assembler
from service.index.connection import PipelinedConnection
from service.index.keys import KeySchema
from service.index.lexical import QueryMatcher
from service.index.loader import load_snapshot, record_count
from service.index.snapshot import Snapshot
from service.inference import OnnxRunner, RunnerSettings
from service.package import ModelPackage
from service.store import RedisStore

log = logging.getLogger(__name__)

Body = dict[str, Any]
_JSON = {"content-type": "application/json"}
Stats = dict[str, float]
REPO = Path(__file__).resolve().parents[1]


@dataclass
class BenchConfig:
    packages: dict[str, Path]  # model name -> package folder
    snapshot: Path
    out: Path
    redis_url: str = "redis://127.0.0.1:6379/0"
    prectr_run: Path | None = None
    elec_run: Path | None = None
    world: Path | None = None
    counts: tuple[int, ...] = (50, 200, 500, 1000)
    repeats: int = 200
    rates: tuple[float, ...] = (10, 20, 40, 60, 80, 100)
    rate_seconds: float = 10.0
    objective_ms: float = 50.0
    naive_repeats: int = 30
    seed: int = 0


@dataclass
class BenchResult:
    machine: dict[str, Any]
    config: dict[str, Any]
    latency: list[dict[str, Any]] = field(default_factory=list)
    throughput: dict[str, Any] = field(default_factory=dict)
    naive: list[dict[str, Any]] = field(default_factory=list)
    table5: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    index_load: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def stats(samples_s: Sequence[float]) -> Stats:
    """p50, p99, mean in milliseconds and the sample count."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1000
    return {
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p99": round(float(np.percentile(ms, 99)), 3),
        "mean": round(float(ms.mean()), 3),
        "n": len(ms),
    }


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def timed_over(
    fn: Callable[[Any], Any], cases: Sequence[Any], repeats: int, warmup: int = 5
) -> list[float]:
    """`timed` cycling through ``cases`` (the same request mix the service saw)."""
    position = iter(range(repeats + warmup))
    return timed(lambda: fn(cases[next(position) % len(cases)]), repeats, warmup)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = 0.0
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total_kib = int(meminfo.read_text().split()[1])
        memory_gib = round(total_kib / 2**20, 1)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers_available": ort.get_available_providers(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# --- requests --------------------------------------------------------------------------------


def request_pool(snapshot: Snapshot, count: int, size: int, seed: int) -> list[Body]:
    """``size`` distinct requests of ``count`` candidates: a known query's labelled items first,
    then other catalogue items (their pairs unseen: the approximator's case), varied users."""
    rng = np.random.default_rng(seed + count)
    pair_query = np.asarray(snapshot.pair_query)
    pair_item = np.asarray(snapshot.pair_item)
    n_items, n_users = len(snapshot.item_key), len(snapshot.user_key)
    bodies = []
    for _ in range(size):
        query_row = int(pair_query[rng.integers(len(pair_query))])
        labelled = pair_item[pair_query == query_row]
        others = rng.choice(n_items, size=min(count + len(labelled), n_items), replace=False)
        rows = list(dict.fromkeys([*labelled.tolist(), *others.tolist()]))[:count]
        bodies.append(
            {
                "user_id": snapshot.user_key[int(rng.integers(n_users))],
                "query": snapshot.query_text[query_row],
                "candidates": [{"item_id": snapshot.item_key[int(r)]} for r in rows],
                "context": {"hour": int(rng.integers(24))},
            }
        )
    return bodies


# --- the service process --------------------------------------------------------------------


class ServiceProcess:
    """`ranker serve` as a child process over the Redis index (what production runs)."""

    def __init__(self, env: dict[str, str], workers: int, port: int) -> None:
        self.port, self.base = port, f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
        command += ["--workers", str(workers), "--log-level", "warning"]
        self.process = subprocess.Popen(command, env={**os.environ, **env}, cwd=REPO)

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the service exited during startup")
            try:
                if httpx.get(f"{self.base}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the service did not become ready")

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(p) for p in children.read_text().split()] if children.is_file() else []
        return pids or [self.process.pid]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def torch_mapped(pid: int) -> bool:
    """Whether any torch library is mapped into the process (imported, even indirectly)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtorch" in maps or "/torch/" in maps


@contextmanager
def serving(
    config: BenchConfig,
    namespace: str,
    workers: int,
    port: int,
    inference_threads: int = 1,
    item_cache_mb: float = 0,
    production_limits: bool = False,
) -> Iterator[ServiceProcess]:
    """`ranker serve` on the bench's namespace. Generous deadline and store timeout unless
    ``production_limits`` (the service's defaults: the past-saturation points)."""
    env = {
        "RANKER_ITEM_CACHE_MB": str(item_cache_mb),
        # absolute: the service runs in the source folder, the paths are the caller's
        "RANKER_MODELS": ",".join(str(p.resolve()) for p in config.packages.values()),
        "RANKER_INFERENCE_THREADS": str(inference_threads),
        "RANKER_DEFAULT_MODEL": next(iter(config.packages)),
        "RANKER_STORE": "redis",
        "RANKER_REDIS_URL": config.redis_url,
        "RANKER_NAMESPACE": namespace,
        "RANKER_DEVICE": "auto",
        "RANKER_ENABLE_ECHO": "true",
        "RANKER_MAX_CANDIDATES": "2000",
        "RANKER_STORE_TIMEOUT_MS": "2000",
        "RANKER_DEADLINE_MS": "5000",
    }
    if production_limits:
        for name in ("RANKER_STORE_TIMEOUT_MS", "RANKER_DEADLINE_MS", "RANKER_MAX_CANDIDATES"):
            env.pop(name)
    # Multiprocess metrics, as the image runs them (a fresh folder: stale files would add up).
    metrics_dir = config.out / f"metrics-{uuid.uuid4().hex[:8]}"
    metrics_dir.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    service = ServiceProcess(env, workers, port)
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Samples:
    """Seconds per measured thing, filled request by request (see `measure_point`); the
    service's stages are kept in milliseconds, as its responses report them."""

    values: dict[str, list[float]] = field(default_factory=dict)
    stages: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.values.setdefault(name, []).append(seconds)


#: One part of a measuring round: it measures itself on the k-th request of the mix and returns
#: what it measured by name (seconds; the service's stages as "stage:<name>" in milliseconds).
Part = Callable[[int], dict[str, float]]


def _timed_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - started, out


def service_part(http: httpx.Client, bodies: list[Body]) -> Part:
    """POST /rank: the round trip, the response's own total and its stages."""
    encoded = [orjson.dumps(b) for b in bodies]  # the client's JSON work is not the service's

    def measure(k: int) -> dict[str, float]:
        elapsed, response = _timed_call(http.post, "/rank", content=encoded[k], headers=_JSON)
        response.raise_for_status()
        timing = response.json()["timing_ms"]
        stages = {f"stage:{stage}": ms for stage, ms in timing.items()}
        return {"client": elapsed, "server": timing["total"] / 1000, **stages}

    return measure


def echo_part(http: httpx.Client, bodies: list[Body], raw: bool = False) -> Part:
    """POST /v1/echo (HTTP, parsing and validation) or, ``raw``, /v1/echo/raw (the bytes and one
    orjson decode, no validation: the strict floor); round trip and server side."""
    encoded = [orjson.dumps(b) for b in bodies]
    path, name = ("/v1/echo/raw", "raw_echo") if raw else ("/v1/echo", "echo")

    def measure(k: int) -> dict[str, float]:
        elapsed, response = _timed_call(http.post, path, content=encoded[k], headers=_JSON)
        response.raise_for_status()
        server = response.json()["timing_ms"]["parse"] / 1000
        return {f"{name}_client": elapsed, f"{name}_server": server}

    return measure


def floor_part(name: str, fn: Callable[[Any], Any], cases: Sequence[Any]) -> Part:
    """One floor: ``fn`` on the k-th case, timed."""
    return lambda k: {name: _timed_call(fn, cases[k])[0]}


def measure_point(slots: Sequence[Sequence[Part]], size: int, repeats: int) -> Samples:
    """Rounds of every slot in order, each slot running one of its parts per round (in turn).

    Measuring a floor in a tight loop of its own would flatter it: between two requests the
    machine idles (the client reads the reply), and waking Redis and the CPU costs the service
    more than a loop that never sleeps. Interleaved, every floor runs in the same conditions.
    Two rules keep them the same:

    - within a round each slot takes a different request of the mix (``size`` of them), so no
      part reads keys, records or inputs another has just brought into Redis's or this
      machine's caches: every request's data was last read as many slots ago, whoever reads it;
    - the slots are ordered so that no part that reads Redis follows another at once (a Redis
      just woken by one read serves the next one faster); alternatives in one slot, such as two
      clients doing the same MGET, take turns by round instead of following each other.
    """
    samples = Samples()
    step = max(size // len(slots), 1)
    for i in range(repeats + 10):
        measured: dict[str, float] = {}
        for s, slot in enumerate(slots):
            measured.update(slot[i % len(slot)]((i + s * step) % size))
        if i < 10:
            continue  # warm the connections, the caches and this request shape
        for name, value in measured.items():
            if name.startswith("stage:"):
                samples.stages.setdefault(name.removeprefix("stage:"), []).append(value)
            else:
                samples.add(name, value)
    return samples


def model_inputs(
    bodies: list[Body], fetch: Callable[[Body], Any], assembler: Assembler
) -> list[dict[str, npt.NDArray[Any]]]:
    """The arrays the service would feed the graph for each body (fetched and assembled once)."""
    return [
        assembler.assemble(
            b["user_id"], b["query"], [c["item_id"] for c in b["candidates"]], fetch(b), 12
        )
        for b in bodies
    ]


def fetch_keys(body: Body, keys: KeySchema, version: str, matcher: QueryMatcher) -> list[str]:
    """The keys the Redis store reads for a body (the same list, in one MGET)."""
    items = [c["item_id"] for c in body["candidates"]]
    wanted = [keys.live, keys.meta(version), keys.user(version, body["user_id"])]
    wanted += [keys.item(version, i) for i in items]
    match = matcher.match(body["query"])
    if match.row >= 0:
        wanted.append(keys.query(version, match.matched_text))
        wanted += [keys.pair(version, match.matched_text, i) for i in items]
    return wanted


def open_loop(
    base: str, bodies: list[Body], rate: float, seconds: float, seed: int
) -> dict[str, Any]:
    """Poisson arrivals at ``rate`` per second for ``seconds``; latency from the scheduled time.

    Beside the client's latency, where it went: ``client_lag`` (how late this client's own loop
    got to send: the load generator shares the machine), and for answered rankings the server's
    ``queue`` (arrival to handler) and ``in_server`` (arrival to answer) from their timings."""
    rng = np.random.default_rng(seed)
    n = max(int(rate * seconds), 1)
    starts = np.cumsum(rng.exponential(1.0 / rate, n))
    encoded = [orjson.dumps(b) for b in bodies]  # the client's JSON work is not the service's
    latencies: list[float] = []
    lags: list[float] = []
    queued: list[float] = []
    in_server: list[float] = []
    statuses: Counter[str] = Counter()

    async def run() -> None:
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
        nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=nodelay)
        async with httpx.AsyncClient(base_url=base, transport=transport, timeout=30) as client:
            # Open the connections a burst will need before the clock runs: a Poisson stream's
            # first overlaps would otherwise pay TCP handshakes that a long-lived client has not.
            await asyncio.gather(
                *(
                    client.post("/rank", content=encoded[k % len(encoded)], headers=_JSON)
                    for k in range(16)
                )
            )
            loop = asyncio.get_running_loop()
            t0 = loop.time() + 0.2

            async def one(i: int) -> None:
                scheduled = t0 + float(starts[i])
                await asyncio.sleep(max(0.0, scheduled - loop.time()))
                lags.append(max(0.0, loop.time() - scheduled))
                try:
                    response = await client.post(
                        "/rank", content=encoded[i % len(encoded)], headers=_JSON
                    )
                except httpx.HTTPError:
                    statuses["transport"] += 1
                    return
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    latencies.append(loop.time() - scheduled)
                    stages = response.json()["timing_ms"]
                    queued.append(stages.get("queue", 0.0) / 1000)
                    in_server.append((stages.get("queue", 0.0) + stages["total"]) / 1000)

            await asyncio.gather(*(one(i) for i in range(n)))

    asyncio.run(run())
    shed = statuses["503"] + statuses["504"]
    nan = [float("nan")]
    return {
        "rate": rate,
        "sent": n,
        "errors": n - sum(statuses[s] for s in ("200", "503", "504")),  # shed or late: counted
        "statuses": dict(statuses),
        "shed_share": round(shed / n, 4),
        **stats(latencies or nan),
        "client_lag": stats(lags or nan),
        "queue": stats(queued or nan),
        "in_server": stats(in_server or nan),
    }


# --- the run ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_bench(config: BenchConfig, progress: Callable[[str], None] = print) -> BenchResult:
    started = time.perf_counter()
    config.out.mkdir(parents=True, exist_ok=True)
    result = BenchResult(machine(), _jsonable(config.__dict__))
    snapshot = Snapshot(config.snapshot)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    keys = KeySchema(namespace)
    client = redis.Redis.from_url(config.redis_url)
    try:
        loaded = load_snapshot(snapshot, client, keys, grace_s=0)
        result.index_load = {
            "namespace": namespace,
            "keys": loaded.keys,
            "seconds": round(loaded.seconds, 3),
            "keys_per_second": round(loaded.keys_per_second),
        }
        progress(f"index loaded: {loaded.keys:,} keys at {loaded.keys_per_second:,.0f} keys/s")
        pools = {n: request_pool(snapshot, n, 24, config.seed) for n in config.counts}
        # One worker: on 2 cores the other core belongs to Redis and this client, and a second
        # worker only adds contention (measured: p99 67 ms at 20 req/s with 2, 31 ms with 1).
        run = _Run(config, result, snapshot, keys, loaded.version, client, progress, pools)
        mix = throughput_mix(run)
        # Latency against the floors without the item cache: the service then reads the keys
        # the MGET floor reads, so the ratio measures overhead on the same work.
        with serving(config, namespace, workers=1, port=_free_port()) as service:
            _latency(run, service)
            _memory(run, service)
        # The open loop as served (an inference thread, the item cache), then as before this
        # change (inference on the event loop, no cache), on the same mix.
        with serving(config, namespace, 1, _free_port(), item_cache_mb=64) as service:
            after = _throughput_curve(run, service, mix, "inference thread + item cache")
        with serving(config, namespace, 1, _free_port(), inference_threads=0) as service:
            before = _throughput_curve(run, service, mix, "inline, no item cache")
        _throughput(run, mix, after, before)
        # Past saturation, with the service's own deadline and in-flight limit.
        with serving(config, namespace, 1, _free_port(), 1, 64, production_limits=True) as service:
            _overload(run, service, mix)
        _naive(run)
        _table5(run)
    finally:
        for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            client.delete(key)
        client.delete(keys.live, keys.sequence, keys.versions)
        client.close()
    result.seconds = round(time.perf_counter() - started, 1)
    return result


@dataclass(frozen=True)
class _Run:
    """What every part of one bench run shares."""

    config: BenchConfig
    result: BenchResult
    snapshot: Snapshot
    keys: KeySchema
    version: str
    client: redis.Redis
    progress: Callable[[str], None]
    pools: dict[int, list[Body]]


def _latency(run: _Run, service: ServiceProcess) -> None:
    config, result, snapshot, keys = run.config, run.result, run.snapshot, run.keys
    version, client, progress, pools = run.version, run.client, run.progress, run.pools
    matcher = snapshot.query_matcher()
    loop = asyncio.new_event_loop()  # one loop for the store, as in the service
    store = RedisStore.from_url(config.redis_url, namespace=keys.namespace)
    connection = PipelinedConnection.from_url(config.redis_url, timeout_s=5)

    def store_fetch(body: Body) -> Any:
        items = [c["item_id"] for c in body["candidates"]]
        return loop.run_until_complete(store.fetch(body["user_id"], body["query"], items))

    def pipelined_mget(keys: list[str]) -> Any:
        return loop.run_until_complete(connection.mget(keys))

    with httpx.Client(base_url=service.base, timeout=30) as http:
        for name, folder in config.packages.items():
            package = ModelPackage(folder)
            runner = OnnxRunner(package.graph_path("fp32"), RunnerSettings(device="cpu"))
            runner.warm(rounds=1)
            assembler = Assembler(package.spec)
            for count in config.counts:
                bodies = [{**b, "model": name} for b in pools[count]]
                repeats = config.repeats if count <= 200 else max(config.repeats // 2, 20)
                inputs = model_inputs(bodies, store_fetch, assembler)
                feeds = [{k: x[k] for k in runner.input_names} for x in inputs]
                key_lists = [fetch_keys(b, keys, version, matcher) for b in bodies]
                # Slots ordered so no Redis read follows another at once (see measure_point).
                slots: list[list[Part]] = [
                    [service_part(http, bodies)],
                    [
                        floor_part("redis_mget_redis_py", client.mget, key_lists),
                        floor_part("redis_mget_pipelined", pipelined_mget, key_lists),
                    ],
                    [echo_part(http, bodies), echo_part(http, bodies, raw=True)],
                    [floor_part("store_fetch", store_fetch, bodies)],
                    [floor_part("onnx", runner.run, feeds)],
                ]
                samples = measure_point(slots, len(bodies), repeats)
                row = latency_row(name, count, samples)
                result.latency.append(row)
                progress(
                    f"{name:>8} {count:>5} candidates: server p50 {row['server']['p50']:.2f} ms "
                    f"p99 {row['server']['p99']:.2f}, floors {row['floor_sum_server_p50']:.2f} ms "
                    f"(x{row['ratio_server_p50']}, stage floors "
                    f"x{row['ratio_server_p50_stage_floors']}; strict floor "
                    f"x{row['ratio_server_p50_strict']}); client p50 "
                    f"{row['client']['p50']:.2f} ms"
                )
    loop.run_until_complete(store.close())
    loop.run_until_complete(connection.aclose())
    loop.close()


def latency_row(model: str, count: int, samples: Samples) -> dict[str, Any]:
    v = {name: stats(values) for name, values in samples.values.items()}
    # The Redis floor is the faster of two clients doing the same MGET: redis-py's and the
    # pipelined connection the service reads with (whichever wins on this machine).
    v["redis_mget"] = min(v["redis_mget_redis_py"], v["redis_mget_pipelined"], key=_p50)
    server, client = v["server"], v["client"]
    floor_server = v["onnx"]["p50"] + v["redis_mget"]["p50"] + v["echo_server"]["p50"]
    floor_client = v["onnx"]["p50"] + v["redis_mget"]["p50"] + v["echo_client"]["p50"]
    stage_floor = v["onnx"]["p50"] + v["store_fetch"]["p50"] + v["echo_server"]["p50"]
    # The strict floor: no validation in it, so parsing's cost shows in the ratio.
    strict_floor = v["onnx"]["p50"] + v["redis_mget"]["p50"] + v["raw_echo_server"]["p50"]
    return {
        "model": model,
        "candidates": count,
        "server": server,
        "client": client,
        "stages_p50": {k: round(float(np.median(x)), 3) for k, x in samples.stages.items()},
        "floors": {
            name: v[name]
            for name in (
                "onnx",
                "redis_mget",
                "redis_mget_redis_py",
                "redis_mget_pipelined",
                "store_fetch",
                "echo_server",
                "echo_client",
                "raw_echo_server",
                "raw_echo_client",
            )
        },
        "floor_sum_server_p50": round(floor_server, 3),
        "floor_sum_client_p50": round(floor_client, 3),
        "ratio_server_p50": round(server["p50"] / floor_server, 2),
        "strict_floor_sum_p50": round(strict_floor, 3),
        "ratio_server_p50_strict": round(server["p50"] / strict_floor, 2),
        "ratio_client_p50": round(client["p50"] / floor_client, 2),
        "stage_floor_sum_p50": round(stage_floor, 3),
        "ratio_server_p50_stage_floors": round(server["p50"] / stage_floor, 2),
        "p99_over_p50_server": round(server["p99"] / server["p50"], 2),
    }


def _p50(row: Stats) -> float:
    return row["p50"]


def _memory(run: _Run, service: ServiceProcess) -> None:
    result, snapshot, keys, version, client = (
        run.result,
        run.snapshot,
        run.keys,
        run.version,
        run.client,
    )
    pid = service.worker_pids()[0]
    rng = np.random.default_rng(0)

    def usage(make_key: Callable[[int], str], n: int) -> float:
        rows = rng.choice(n, size=min(200, n), replace=False)
        used = [client.memory_usage(make_key(int(r))) or 0 for r in rows]
        return round(float(np.mean(used)), 1)

    pairs_query, pairs_item = np.asarray(snapshot.pair_query), np.asarray(snapshot.pair_item)
    result.memory = {
        "service_rss_mib": resident_mib(pid),
        "torch_loaded": torch_mapped(pid),
        "models_loaded": list(result.config["packages"]),
        "redis_bytes_per_item": usage(
            lambda r: keys.item(version, snapshot.item_key[r]), len(snapshot.item_key)
        ),
        "redis_bytes_per_user": usage(
            lambda r: keys.user(version, snapshot.user_key[r]), len(snapshot.user_key)
        ),
        "redis_bytes_per_pair": usage(
            lambda r: keys.pair(
                version,
                snapshot.query_text[int(pairs_query[r])],
                snapshot.item_key[int(pairs_item[r])],
            ),
            len(pairs_query),
        ),
        "index_records": record_count(snapshot),
    }


def _naive(run: _Run) -> None:
    config, result, snapshot, keys = run.config, run.result, run.snapshot, run.keys
    version, client, progress, pools = run.version, run.client, run.progress, run.pools
    if config.prectr_run is None:
        result.naive = [{"skipped": "no --prectr-run given"}]
        return
    import torch

    from export.naive import NaiveRanker
    from export.onnx import input_specs, served_module
    from export.package import load_approximator
    from training.train import load_saved_run

    torch.set_num_threads(1)  # as the service's runner: one intra-op thread
    saved = load_saved_run(config.prectr_run)
    world = config.world or Path(saved.meta["world"]["path"])
    module = served_module("prectr", saved.model, load_approximator(saved, world))
    matcher = snapshot.query_matcher()
    names = [t.name for t in input_specs("prectr", saved.spec)]
    naive = NaiveRanker(
        module, names, Assembler(saved.spec), client, keys, version, matcher, snapshot.meta.text_dim
    )
    for count in config.counts:
        bodies = pools[count]

        def one(b: Body) -> None:
            naive.rank(b["user_id"], b["query"], [c["item_id"] for c in b["candidates"]], 12)

        naive_stats = stats(timed_over(one, bodies, config.naive_repeats, warmup=0))  # by design
        service = next(
            r for r in result.latency if r["model"] == "prectr" and r["candidates"] == count
        )
        row = {
            "candidates": count,
            "naive": naive_stats,
            "service_server": service["server"],
            "speedup_p50": round(naive_stats["p50"] / service["server"]["p50"], 1),
        }
        result.naive.append(row)
        progress(
            f"naive {count:>5} candidates: p50 {naive_stats['p50']:.1f} ms, "
            f"the service {row['speedup_p50']}x faster"
        )


def _table5(run: _Run) -> None:
    config, result, progress = run.config, run.result, run.progress
    if config.elec_run is None:
        result.table5 = {"skipped": "no --elec-run given"}
        return
    import torch

    from training.data.tables import World
    from training.encode import MiniLMEncoder
    from training.features import ImpressionFeatures
    from training.models import build_config
    from training.models.elec import MLLM, GainNetwork
    from training.sample_text import sample_texts
    from training.tower import train_text_tower
    from training.train import load_saved_run

    saved = load_saved_run(config.elec_run)
    world_dir = config.world or Path(saved.meta["world"]["path"])
    params = build_config("vanilla", saved.spec, saved.config.model.params)
    mllm, gain = MLLM(params), GainNetwork(saved.spec, params)
    mllm.load_state_dict(torch.load(config.elec_run / "mllm.pt", weights_only=True))
    gain.load_state_dict(torch.load(config.elec_run / "gain.pt", weights_only=True))
    mllm.eval()
    gain.eval()
    world = World.load(world_dir, mmap=True)
    features = ImpressionFeatures(
        world, train_text_tower(world, world_dir, saved.config.text_tower), saved.spec
    )
    encoder = MiniLMEncoder(None, threads=1)
    vanilla = OnnxRunner(
        ModelPackage(config.packages["vanilla"]).graph_path("fp32"), RunnerSettings(device="cpu")
    )
    rows: dict[str, dict[str, float]] = {"gain_with_lm_online": {}, "vanilla_served": {}}
    rng = np.random.default_rng(config.seed)
    for n in (1, 100):
        head = int(rng.integers(0, world.impressions.n_rows - n))
        impression_rows = np.arange(head, head + n)
        batch = features.batch(impression_rows)
        texts = sample_texts(world, impression_rows)

        def gain_path(texts: list[str] = texts, batch: Any = batch) -> None:
            with torch.no_grad():
                lm = torch.from_numpy(encoder.encode(texts))
                gain(batch, mllm(lm)["high_level"])

        feed = {"categorical": batch["categorical"].numpy(), "dense": batch["dense"].numpy()}
        rows["gain_with_lm_online"][str(n)] = stats(timed(gain_path, 3, warmup=1))["p50"]
        rows["vanilla_served"][str(n)] = stats(timed_over(vanilla.run, [feed], 100))["p50"]
    result.table5 = {"ms_p50": rows, "encoder_threads": 1}  # one core, as a serving worker
    progress(
        "Table 5: 100 candidates, gain with MiniLM online "
        f"{rows['gain_with_lm_online']['100']:.0f} "
        f"ms vs vanilla served {rows['vanilla_served']['100']:.2f} ms"
    )


def throughput_mix(run: _Run) -> list[Body]:
    """48 requests of 100-700 candidates (uniform) for the first model: the open loop's mix."""
    config, snapshot = run.config, run.snapshot
    rng = np.random.default_rng(config.seed)
    counts = rng.integers(100, 701, size=48)
    bodies = [request_pool(snapshot, int(c), 1, config.seed + i)[0] for i, c in enumerate(counts)]
    for body in bodies:
        body["model"] = next(iter(config.packages))
    return bodies


def _throughput_curve(
    run: _Run, service: ServiceProcess, bodies: list[Body], mode: str
) -> dict[str, Any]:
    """Open-loop points at rising rates until far past saturation; the highest rate whose p99
    stays within the objective with nothing shed or failed."""
    config, progress = run.config, run.progress
    with httpx.Client(base_url=service.base, timeout=30) as http:
        for body in bodies * 2:  # every request shape seen before the clock runs
            http.post("/rank", json=body)
        warm = fetch_counters(http)
    curve = []
    for rate in config.rates:
        point = open_loop(service.base, bodies, rate, config.rate_seconds, config.seed)
        curve.append(point)
        progress(
            f"open loop ({mode}) {rate:>5} req/s: p50 {point['p50']:.1f} ms p99 "
            f"{point['p99']:.1f} ms, shed {point['shed_share']:.1%}"
        )
        if point["p99"] > 4 * config.objective_ms or point["shed_share"] > 0.5:
            break  # far past saturation: higher rates only queue or shed
    sustained = [
        p["rate"]
        for p in curve
        if p["p99"] <= config.objective_ms and not p["errors"] and not p["shed_share"]
    ]
    with httpx.Client(base_url=service.base, timeout=30) as http:
        done = fetch_counters(http)
    counted = {k: done[k] - warm[k] for k in done}
    lookups = counted["hit"] + counted["miss"]
    return {
        "curve": curve,
        "max_rate_within_objective": max(sustained) if sustained else None,
        "item_cache_hit_rate": round(counted["hit"] / lookups, 3) if lookups else None,
        "redis_kib_per_request": (
            round(counted["bytes"] / counted["requests"] / 1024, 1) if counted["requests"] else None
        ),
    }


def fetch_counters(http: httpx.Client) -> dict[str, float]:
    """The service's item cache hits and misses, Redis reply bytes and answered rankings."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = {"hit": 0.0, "miss": 0.0, "bytes": 0.0, "requests": 0.0}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "ranker_item_cache_lookups_total":
                totals[sample.labels["result"]] += sample.value
            elif sample.name == "ranker_store_read_bytes_total":
                totals["bytes"] += sample.value
            elif sample.name == "ranker_requests_total" and sample.labels["status"] == "200":
                totals["requests"] += sample.value
    return totals


def onnx_alone_rate(run: _Run, bodies: list[Body]) -> dict[str, float]:
    """What ONNX Runtime alone sustains on the mix with the service's threads (one inference
    thread, one intra-op thread): requests per second of back-to-back runs on the same inputs."""
    config, keys = run.config, run.keys
    package = ModelPackage(config.packages[next(iter(config.packages))])
    runner = OnnxRunner(package.graph_path("fp32"), RunnerSettings(device="cpu"))
    runner.warm(rounds=1)
    loop = asyncio.new_event_loop()
    store = RedisStore.from_url(config.redis_url, namespace=keys.namespace)

    def fetch(body: Body) -> Any:
        items = [c["item_id"] for c in body["candidates"]]
        return loop.run_until_complete(store.fetch(body["user_id"], body["query"], items))

    try:
        inputs = model_inputs(bodies, fetch, Assembler(package.spec))
    finally:
        loop.run_until_complete(store.close())
        loop.close()
    feeds = [{k: x[k] for k in runner.input_names} for x in inputs]
    for feed in feeds:
        runner.run(feed)
    seconds = [_timed_call(runner.run, feed)[0] for _ in range(3) for feed in feeds]
    mean_ms = float(np.mean(seconds)) * 1000
    return {"mean_ms": round(mean_ms, 3), "rate": round(1000 / mean_ms, 1)}


def _throughput(
    run: _Run, bodies: list[Body], after: dict[str, Any], before: dict[str, Any]
) -> None:
    config, result = run.config, run.result
    alone = onnx_alone_rate(run, bodies)
    best, inline = after["max_rate_within_objective"], before["max_rate_within_objective"]
    result.throughput = {
        "model": next(iter(config.packages)),
        "workers": 1,
        "candidates": "uniform 100-700",
        "objective_p99_ms": config.objective_ms,
        "modes": {"inference thread + item cache": after, "inline, no item cache": before},
        "onnx_alone": alone,
        "speedup_over_inline": round(best / inline, 2) if best and inline else None,
        "share_of_onnx_alone": round(best / alone["rate"], 2) if best else None,
    }
    run.progress(
        f"within {config.objective_ms:g} ms p99: {best} req/s as served, {inline} inline "
        f"without the cache; ONNX Runtime alone sustains {alone['rate']} req/s on the mix"
    )


def _overload(run: _Run, service: ServiceProcess, bodies: list[Body]) -> None:
    """Open-loop points at and past the highest offered rate, against the service's defaults
    (200 ms deadline, 32 rankings in flight): what is answered stays within the deadline, the
    rest is shed at once (503) or stopped at the deadline (504)."""
    config, progress = run.config, run.progress
    top = max(config.rates)
    with httpx.Client(base_url=service.base, timeout=30) as http:
        for body in bodies * 2:
            http.post("/rank", json=body)
    points = []
    for rate in (top, 2 * top):
        point = open_loop(service.base, bodies, rate, config.rate_seconds, config.seed)
        points.append(point)
        progress(
            f"past saturation {rate:>5} req/s: answered p99 {point['p99']:.1f} ms (client lag "
            f"{point['client_lag']['p99']:.1f}, in server {point['in_server']['p99']:.1f}), "
            f"shed {point['shed_share']:.1%}"
        )
    run.result.throughput["past_saturation"] = {"deadline_ms": 200, "points": points}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(result: BenchResult, out: Path) -> None:
    """bench.json, bench.md and bench.png (latency by candidates with floors; throughput)."""
    (out / "bench.json").write_text(json.dumps(_jsonable(result.__dict__), indent=2) + "\n")
    (out / "bench.md").write_text(render_markdown(result))
    _plot(result, out / "bench.png")


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _ms2(value: float) -> str:
    return f"{value:.2f}"


def render_markdown(result: BenchResult) -> str:
    m = result.machine
    lines = [
        "# ranker bench",
        "",
        f"{m['date']}; {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python "
        f"{m['python']}, onnxruntime {m['onnxruntime']}; the service, Redis and this client "
        f"share the machine. The run took {result.seconds:.0f} s.",
        "",
        "## Latency at concurrency 1 (ms)",
        "",
        "Server = the response's own total; client = the round trip. Floors, measured round by "
        "round between the service's requests, each on another request of the same mix: ONNX = "
        "the runner on the same inputs, MGET = one Redis MGET of the same keys by the faster of "
        "redis-py and the pipelined connection, fetch = the service's store fetch (MGET + "
        "decoding), echo = /v1/echo (HTTP + parsing and validation), raw echo = /v1/echo/raw "
        "(the body read and orjson-decoded, no validation). Ratio = server p50 / (ONNX + MGET + "
        "echo); strict ratio = server p50 / (ONNX + MGET + raw echo); stage ratio = server p50 "
        "/ (ONNX + fetch + echo).",
        "",
        _row(
            [
                "model",
                "candidates",
                "server p50",
                "server p99",
                "client p50",
                "client p99",
                "ONNX",
                "MGET",
                "fetch",
                "echo (server / client)",
                "raw echo",
                "ratio",
                "strict ratio",
                "stage ratio",
                "p99 / p50",
            ]
        ),
        _row(["---", *["---:"] * 14]),
    ]
    for r in result.latency:
        f = r["floors"]
        lines.append(
            _row(
                [
                    r["model"],
                    r["candidates"],
                    _ms2(r["server"]["p50"]),
                    _ms2(r["server"]["p99"]),
                    _ms2(r["client"]["p50"]),
                    _ms2(r["client"]["p99"]),
                    _ms2(f["onnx"]["p50"]),
                    _ms2(f["redis_mget"]["p50"]),
                    _ms2(f["store_fetch"]["p50"]),
                    f"{_ms2(f['echo_server']['p50'])} / {_ms2(f['echo_client']['p50'])}",
                    _ms2(f["raw_echo_server"]["p50"]),
                    r["ratio_server_p50"],
                    r["ratio_server_p50_strict"],
                    r["ratio_server_p50_stage_floors"],
                    r["p99_over_p50_server"],
                ]
            )
        )
    lines += ["", "Stage p50s in the service (ms):", ""]
    for r in result.latency:
        stages = ", ".join(f"{k} {v}" for k, v in r["stages_p50"].items())
        lines.append(f"- {r['model']} {r['candidates']}: {stages}")
    lines.append("")
    if result.naive and "skipped" not in result.naive[0]:
        lines += [
            "## The naive path",
            "",
            "The torch model in the request path, one Redis GET per key, no buckets, no warm-up.",
            "",
            _row(["candidates", "naive p50", "naive p99", "service server p50", "service faster"]),
            _row(["---:"] * 5),
        ]
        lines += [
            _row(
                [
                    r["candidates"],
                    f"{r['naive']['p50']:.1f}",
                    f"{r['naive']['p99']:.1f}",
                    _ms2(r["service_server"]["p50"]),
                    f"{r['speedup_p50']}x",
                ]
            )
            for r in result.naive
        ]
        lines.append("")
    t = result.throughput
    if t:
        lines += [
            f"## Throughput: open-loop Poisson arrivals, {t['candidates']} candidates, "
            f"{t['model']}, {t['workers']} worker",
            "",
            "Latency of the answered rankings from the scheduled send time; shed = 503 "
            "`overloaded` or 504 `deadline_exceeded`. Before = inference on the event loop "
            "(RANKER_INFERENCE_THREADS=0) and no item cache (RANKER_ITEM_CACHE_MB=0).",
            "",
            _row(["mode", "rate (req/s)", "sent", "errors", "shed", "p50 ms", "p99 ms"]),
            _row(["---", *["---:"] * 6]),
        ]
        for mode, run in t["modes"].items():
            lines += [
                _row(
                    [
                        mode,
                        f"{p['rate']:g}",
                        p["sent"],
                        p["errors"],
                        f"{p['shed_share']:.1%}",
                        f"{p['p50']:.1f}",
                        f"{p['p99']:.1f}",
                    ]
                )
                for p in run["curve"]
            ]
        alone = t["onnx_alone"]
        lines += [
            "",
            f"Highest rate with p99 under {t['objective_p99_ms']:g} ms and nothing shed: "
            + ", ".join(
                f"{mode} **{run['max_rate_within_objective']} req/s**"
                for mode, run in t["modes"].items()
            )
            + f" ({t['speedup_over_inline']}x). ONNX Runtime alone, back to back on the same "
            f"mix with the same threads: {alone['rate']} req/s ({alone['mean_ms']} ms a "
            f"request); the service reaches {t['share_of_onnx_alone']} of it.",
            "",
        ]
        lines += [
            f"- {mode}: item cache hit rate {run['item_cache_hit_rate']}, Redis reply "
            f"{run['redis_kib_per_request']} KiB per ranking"
            for mode, run in t["modes"].items()
        ]
        lines.append("")
        past = t.get("past_saturation")
        if past:
            lines += [
                f"Past saturation, with the service's defaults ({past['deadline_ms']} ms "
                "deadline, 32 rankings in flight): latency of the answered rankings from the "
                "scheduled send time; the rest shed. Where the time went (p99): this client's "
                "own lag in sending (the load generator shares the cores), and at the server the "
                "wait from arrival to handler (queue) and arrival to answer (in server).",
                "",
                _row(
                    [
                        "rate (req/s)",
                        "sent",
                        "answered p50 ms",
                        "answered p99 ms",
                        "client lag p99",
                        "queue p99",
                        "in server p99",
                        "shed",
                    ]
                ),
                _row(["---:"] * 8),
            ]
            lines += [
                _row(
                    [
                        f"{p['rate']:g}",
                        p["sent"],
                        f"{p['p50']:.1f}",
                        f"{p['p99']:.1f}",
                        f"{p['client_lag']['p99']:.1f}",
                        f"{p['queue']['p99']:.1f}",
                        f"{p['in_server']['p99']:.1f}",
                        f"{p['shed_share']:.1%} {p['statuses']}",
                    ]
                )
                for p in past["points"]
            ]
            lines.append("")
    if result.table5 and "skipped" not in result.table5:
        rows = result.table5["ms_p50"]
        lines += [
            "## ELEC Table 5 analog (ms per request, p50)",
            "",
            _row(["candidates", "gain network, MiniLM online", "vanilla network as served"]),
            _row(["---:"] * 3),
        ]
        lines += [
            _row([n, f"{rows['gain_with_lm_online'][n]:.1f}", f"{rows['vanilla_served'][n]:.3f}"])
            for n in rows["gain_with_lm_online"]
        ]
        lines.append("")
    mem = result.memory
    if mem:
        models = ", ".join(mem["models_loaded"])
        lines += [
            "## Memory",
            "",
            f"- serving process (one worker, models {models}, Redis store): "
            f"**{mem['service_rss_mib']} MiB** resident; torch loaded: {mem['torch_loaded']}",
            f"- Redis bytes per record (MEMORY USAGE, mean of 200): item "
            f"{mem['redis_bytes_per_item']}, user {mem['redis_bytes_per_user']}, pair "
            f"{mem['redis_bytes_per_pair']}",
            f"- index load: {result.index_load['keys']:,} keys at "
            f"{result.index_load['keys_per_second']:,} keys/s",
            "",
        ]
    cuda = "CUDAExecutionProvider" in m["providers_available"]
    lines.append(
        "GPU: this onnxruntime build offers CUDA; every session reports the providers it really "
        "got, and on this machine that was the CPU."
        if cuda
        else "GPU: none on this machine."
    )
    return "\n".join(lines) + "\n"


def _plot(result: BenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ax = axes[0]
    for model in dict.fromkeys(r["model"] for r in result.latency):
        rows = [r for r in result.latency if r["model"] == model]
        counts = [r["candidates"] for r in rows]
        ax.plot(counts, [r["server"]["p50"] for r in rows], "o-", label=f"{model} server p50")
        ax.plot(counts, [r["server"]["p99"] for r in rows], "o:", label=f"{model} server p99")
        ax.plot(counts, [r["floor_sum_server_p50"] for r in rows], "s--", label=f"{model} floors")
    ax.set(xlabel="candidates", ylabel="ms", title="Latency at concurrency 1 vs floors")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    for mode, run in result.throughput.get("modes", {}).items():
        curve = run["curve"]
        rates = [p["rate"] for p in curve]
        ax.plot(rates, [p["p50"] for p in curve], "o-", label=f"{mode} p50")
        ax.plot(rates, [p["p99"] for p in curve], "o:", label=f"{mode} p99")
        ax.set_yscale("log")
    if result.throughput:
        ax.axhline(result.throughput["objective_p99_ms"], color="red", ls="--", label="objective")
    ax.set(xlabel="offered rate (req/s, Poisson)", ylabel="ms", title="Open-loop latency")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
