"""`ranker bench`'s run: every part measured in one go, into a `BenchResult`."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from bench.config import BenchConfig, BenchResult, jsonable, latency_repeats
from bench.cpu import local_redis_pid
from bench.load import fetch_counters, held_through, open_loop, rising_curve
from bench.measure import (
    Part,
    Samples,
    Stats,
    echo_part,
    floor_part,
    machine,
    measure_point,
    named_part,
    service_part,
    stats,
    timed,
    timed_call,
    timed_over,
)
from bench.requests import Body, fetch_keys, model_inputs, open_loop_mix, request_pool
from bench.server import ServiceProcess, free_port, pin_process, resident_mib, serving, torch_mapped
from service.assemble import Assembler
from service.index.connection import PipelinedConnection
from service.index.keys import KeySchema
from service.index.loader import load_snapshot, record_count
from service.index.snapshot import Snapshot
from service.inference import OnnxRunner, RunnerSettings
from service.package import ModelPackage
from service.store import RedisStore


def run_bench(config: BenchConfig, progress: Callable[[str], None] = print) -> BenchResult:
    started = time.perf_counter()
    config.out.mkdir(parents=True, exist_ok=True)
    result = BenchResult(machine(), jsonable(config.__dict__))
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
        redis_pid = local_redis_pid(config.redis_url)
        run = _Run(
            config, result, snapshot, keys, loaded.version, client, progress, pools, redis_pid
        )
        mix = open_loop_mix(snapshot, config.seed, next(iter(config.packages)))
        # Latency against the floors without the item cache: the service then reads the keys
        # the MGET floor reads, so the ratio measures overhead on the same work.
        with serving(config, namespace, workers=1, port=free_port()) as service:
            _latency(run, service)
            _memory(run, service)
        # The open loop as served (an inference thread, the item cache), with ONNX Runtime
        # alone measured before each of its points, then as before this change (inference on
        # the event loop, no cache), on the same mix.
        alone = onnx_alone_measure(run, mix)
        with serving(config, namespace, 1, free_port(), item_cache_mb=64) as service:
            after = _throughput_curve(run, service, mix, "inference thread + item cache", alone)
        with serving(config, namespace, 1, free_port(), inference_threads=0) as service:
            before = _throughput_curve(run, service, mix, "inline, no item cache")
        _throughput(run, after, before)
        _stores(run, mix, after)
        if config.workers_study:
            _workers_study(run, mix, after)
        # Past saturation, with the service's own deadline and in-flight limit.
        with serving(config, namespace, 1, free_port(), 1, 64, production_limits=True) as service:
            # From where the curve as served stopped: past its saturation, whatever the machine.
            _overload(run, service, mix, after["curve"][-1]["rate"])
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
    redis_pid: int | None  # None: Redis runs on another host, its CPU is not this machine's


def _watched(run: _Run, service: ServiceProcess) -> dict[str, list[int]]:
    """The processes whose CPU an open-loop point accounts: the service's workers, Redis."""
    watched = {"service": service.worker_pids()}
    if run.redis_pid is not None:
        watched["Redis"] = [run.redis_pid]
    return watched


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
                repeats = latency_repeats(config, count)
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
                    f"x{row['ratio_server_p50_strict']}, from the handler "
                    f"x{row['ratio_server_p50_strict_from_handler']}); client p50 "
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
    # The strict floor: no validation in it, so parsing's cost shows in the ratio. Its echo
    # counts from the request's arrival, as the service's total does; beside it, both from
    # their handlers' starts (the stack's work before a handler left out of both sides).
    strict_floor = v["onnx"]["p50"] + v["redis_mget"]["p50"] + v["raw_echo_server"]["p50"]
    strict_from_handler = v["onnx"]["p50"] + v["redis_mget"]["p50"] + v["raw_echo_handler"]["p50"]
    handler = v["server_handler"]
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
                "echo_handler",
                "raw_echo_handler",
            )
        },
        "floor_sum_server_p50": round(floor_server, 3),
        "floor_sum_client_p50": round(floor_client, 3),
        "ratio_server_p50": round(server["p50"] / floor_server, 2),
        "strict_floor_sum_p50": round(strict_floor, 3),
        "ratio_server_p50_strict": round(server["p50"] / strict_floor, 2),
        "ratio_server_p50_strict_from_handler": round(handler["p50"] / strict_from_handler, 2),
        "ratio_client_p50": round(client["p50"] / floor_client, 2),
        "stage_floor_sum_p50": round(stage_floor, 3),
        "ratio_server_p50_stage_floors": round(server["p50"] / stage_floor, 2),
        "p99_over_p50_server": round(server["p99"] / server["p50"], 2),
        "p99_over_p50_strict_floor": strict_floor_jitter(samples),
    }


def strict_floor_jitter(samples: Samples) -> float | None:
    """p99 / p50 of the strict floor summed round by round (ONNX + the round's MGET + raw
    echo, all measured in that round): how steady the machine's own parts were while the
    service's p99 / p50 was measured, so a run tells the service's tail from the machine's
    (None: no round measured all three)."""
    sums = []
    for r in samples.rounds:
        mget = r.get("redis_mget_pipelined", r.get("redis_mget_redis_py"))
        if mget is not None and "onnx" in r and "raw_echo_server" in r:
            sums.append(r["onnx"] + mget + r["raw_echo_server"])
    if not sums:
        return None
    p50, p99 = np.percentile(sums, [50, 99])
    return round(float(p99 / p50), 2)


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
        "redis_bytes_per_query": usage(
            lambda r: keys.query(version, snapshot.query_text[r]), len(snapshot.query_text)
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


def _throughput_curve(
    run: _Run,
    service: ServiceProcess,
    bodies: list[Body],
    mode: str,
    onnx_alone: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Open-loop points at rising rates (`rising_curve`; ``onnx_alone`` measured before each),
    with the service's item cache hit rate and Redis bytes per ranking over them."""
    config = run.config
    with httpx.Client(base_url=service.base, timeout=30) as http:
        for body in bodies * 2:  # every request shape seen before the clock runs
            http.post("/rank", json=body)
        warm = fetch_counters(http)
    curve = rising_curve(
        service.base,
        bodies,
        config.rates,
        config.rate_seconds,
        config.objective_ms,
        config.seed,
        _watched(run, service),
        run.progress,
        mode,
        onnx_alone,
    )
    with httpx.Client(base_url=service.base, timeout=30) as http:
        done = fetch_counters(http)
    counted = {k: done[k] - warm[k] for k in done}
    lookups = counted["hit"] + counted["miss"]
    return {
        "curve": curve,
        "max_rate_within_objective": held_through(curve, config.objective_ms),
        "item_cache_hit_rate": round(counted["hit"] / lookups, 3) if lookups else None,
        "redis_kib_per_request": (
            round(counted["bytes"] / counted["requests"] / 1024, 1) if counted["requests"] else None
        ),
    }


def onnx_alone_measure(run: _Run, bodies: list[Body]) -> Callable[[], dict[str, float]]:
    """A measure of what ONNX Runtime alone sustains on the mix with the service's threads (one
    inference thread, one intra-op thread): each call, requests per second of back-to-back runs
    on the same inputs, two passes over the mix (~0.3 s), so it can be taken beside each point
    of a curve."""
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

    def measure() -> dict[str, float]:
        seconds = [timed_call(runner.run, feed)[0] for _ in range(2) for feed in feeds]
        mean_ms = float(np.mean(seconds)) * 1000
        return {"mean_ms": round(mean_ms, 3), "rate": round(1000 / mean_ms, 1)}

    return measure


def onnx_alone_over(curve: list[dict[str, Any]]) -> dict[str, float]:
    """ONNX Runtime alone over a curve's minutes: the median (and range) of the measures taken
    before its points."""
    rates = [point["onnx_alone"]["rate"] for point in curve]
    return {
        "rate": round(float(np.median(rates)), 1),
        "mean_ms": round(float(np.median([p["onnx_alone"]["mean_ms"] for p in curve])), 3),
        "min_rate": min(rates),
        "max_rate": max(rates),
        "points": len(rates),
    }


def _throughput(run: _Run, after: dict[str, Any], before: dict[str, Any]) -> None:
    config, result = run.config, run.result
    # Measured beside the curve as served, not once after both: the machine's speed drifts by
    # a fifth within a run, and a single measure in a fast or slow minute moved the share
    # between 0.47 and 1.0 across three runs of the same code (2026-12-06, 19:13-19:34 UTC).
    alone = onnx_alone_over(after["curve"])
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
        f"without the cache; ONNX Runtime alone sustains {alone['rate']} req/s on the mix "
        f"(median beside the served curve's points, {alone['min_rate']}-{alone['max_rate']})"
    )


def _stores(run: _Run, bodies: list[Body], redis_curve: dict[str, Any]) -> None:
    """The single-machine choice: the service on the embedded store (the snapshot memory-mapped
    in the worker) against the Redis store as served (item cache on), both running, measured
    round by round on the same requests at concurrency 1, then the embedded store's open loop
    beside the Redis one (``redis_curve``)."""
    config, ns, pools = run.config, run.keys.namespace, run.pools
    model = next(iter(config.packages))
    rows = []
    with (
        serving(config, ns, 1, free_port(), item_cache_mb=64) as on_redis,
        serving(config, ns, 1, free_port(), embedded=True) as on_snapshot,
        httpx.Client(base_url=on_redis.base, timeout=30) as redis_http,
        httpx.Client(base_url=on_snapshot.base, timeout=30) as embedded_http,
    ):
        for count in config.counts:
            bodies_n = [{**b, "model": model} for b in pools[count]]
            slots: list[list[Part]] = [
                [named_part(service_part(redis_http, bodies_n), "redis_")],
                [named_part(service_part(embedded_http, bodies_n), "embedded_")],
            ]
            samples = measure_point(slots, len(bodies_n), latency_repeats(config, count))
            stats_of = {name: stats(values) for name, values in samples.values.items()}
            stage = {k: round(float(np.median(x)), 3) for k, x in samples.stages.items()}
            row: dict[str, Any] = {
                "candidates": count,
                **{
                    f"{store}_{what}": stats_of[f"{store}_{what}"]
                    for store in ("redis", "embedded")
                    for what in ("server", "client")
                },
                "redis_fetch_p50": stage["redis_fetch"],
                "embedded_fetch_p50": stage["embedded_fetch"],
            }
            rows.append(row)
            run.progress(
                f"stores {count:>5} candidates: server p50 Redis "
                f"{row['redis_server']['p50']:.2f} ms (fetch {row['redis_fetch_p50']:.2f}), "
                f"embedded {row['embedded_server']['p50']:.2f} ms "
                f"(fetch {row['embedded_fetch_p50']:.2f})"
            )
        embedded_curve = _throughput_curve(run, on_snapshot, bodies, "embedded store")
    run.result.stores = {
        "model": model,
        "latency": rows,
        "open_loop": {
            "redis (item cache)": redis_curve["max_rate_within_objective"],
            "embedded": embedded_curve["max_rate_within_objective"],
        },
        "embedded_curve": embedded_curve["curve"],
    }


def _workers_study(run: _Run, bodies: list[Body], one: dict[str, Any]) -> None:
    """The open loop as served with 2 workers, free and pinned one per core, beside the 1-worker
    curve (``one``): what a second worker buys on this machine, whose cores it shares with
    Redis and the load generator."""
    config, ns = run.config, run.keys.namespace
    curves = {"1 worker": one}
    for label, pin in (("2 workers", False), ("2 workers, one per core", True)):
        with serving(config, ns, 2, free_port(), item_cache_mb=64) as service:
            if pin:
                for core, pid in enumerate(service.worker_pids()):
                    pin_process(pid, {core % (os.cpu_count() or 1)})
            curves[label] = _throughput_curve(run, service, bodies, label)
    run.result.throughput["workers_study"] = {
        label: {"max_rate_within_objective": c["max_rate_within_objective"], "curve": c["curve"]}
        for label, c in curves.items()
    }


def _overload(run: _Run, service: ServiceProcess, bodies: list[Body], top: float) -> None:
    """Open-loop points at and past the rate ``top``, against the service's defaults
    (200 ms deadline, 32 rankings in flight): what is answered stays within the deadline, the
    rest is shed at once (503) or stopped at the deadline (504)."""
    config, progress = run.config, run.progress
    with httpx.Client(base_url=service.base, timeout=30) as http:
        for body in bodies * 2:
            http.post("/rank", json=body)
    points = []
    for rate in (top, 2 * top):
        point = open_loop(
            service.base, bodies, rate, config.rate_seconds, config.seed, _watched(run, service)
        )
        points.append(point)
        progress(
            f"past saturation {rate:>5} req/s: answered p99 {point['p99']:.1f} ms (client lag "
            f"{point['client_lag']['p99']:.1f}, in server {point['in_server']['p99']:.1f}), "
            f"shed {point['shed_share']:.1%}"
        )
    run.result.throughput["past_saturation"] = {"deadline_ms": 200, "points": points}
