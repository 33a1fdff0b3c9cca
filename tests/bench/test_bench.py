"""`ranker bench` end to end on the tiny artifacts (a smoke run: the figures are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench.config import BenchConfig, latency_repeats
from bench.load import held_through
from bench.measure import Part, Samples, measure_point
from bench.remote import LoadConfig, load_test, write_load_report
from bench.report import write_report
from bench.run import run_bench, strict_floor_jitter
from bench.server import pin_process
from service.index.snapshot import Snapshot
from service.settings import Settings
from tests.service.conftest import live_server


def test_bench_writes_its_report_and_cleans_up(
    tiny_exports: dict[str, Any],
    tiny_runs: dict[str, Path],
    tiny_snapshot: Snapshot,
    redis_prefix: tuple[str, str],
    tmp_path: Path,
) -> None:
    url, _ = redis_prefix
    config = BenchConfig(
        packages={name: result.package.folder for name, result in tiny_exports.items()},
        snapshot=tiny_snapshot.folder,
        out=tmp_path,
        redis_url=url,
        prectr_run=tiny_runs["prectr"],
        counts=(20,),
        repeats=5,
        rates=(5.0, 10.0, 20.0),
        rate_seconds=1.0,
        objective_ms=1e-3,  # no point can meet it: each curve stops after two misses
        naive_repeats=3,
        workers_study=True,
    )
    result = run_bench(config, progress=lambda _: None)
    write_report(result, tmp_path)

    report = json.loads((tmp_path / "bench.json").read_text())
    assert {row["model"] for row in report["latency"]} == {"prectr", "vanilla"}
    row = report["latency"][0]
    assert row["server"]["n"] == 5 and row["ratio_server_p50"] > 0
    floors = row["floors"]
    assert set(floors) == {
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
    }
    assert row["ratio_server_p50_strict"] > 0
    # The echoes count from the request's arrival, as the service's total: never less than
    # from their handler's start.
    for echo in ("echo", "raw_echo"):
        assert floors[f"{echo}_server"]["p50"] >= floors[f"{echo}_handler"]["p50"] > 0
    assert row["ratio_server_p50_strict_from_handler"] > 0
    both = (floors["redis_mget_redis_py"]["p50"], floors["redis_mget_pipelined"]["p50"])
    assert floors["redis_mget"]["p50"] == min(both)  # the faster client is the floor
    assert report["naive"][0]["speedup_p50"] > 0
    assert report["table5"] == {"skipped": "no --elec-run given"}
    assert report["memory"]["torch_loaded"] is False
    modes = report["throughput"]["modes"]
    assert set(modes) == {"inference thread + item cache", "inline, no item cache"}
    assert modes["inline, no item cache"]["item_cache_hit_rate"] == 0
    assert modes["inference thread + item cache"]["item_cache_hit_rate"] > 0
    assert all(run["curve"][0]["sent"] >= 1 for run in modes.values())
    assert [len(run["curve"]) for run in modes.values()] == [2, 2]
    assert all(run["max_rate_within_objective"] is None for run in modes.values())
    # ONNX Runtime alone measured before each point of the curve as served (the same
    # minutes), the share taken against their median
    served = modes["inference thread + item cache"]["curve"]
    beside = sorted(point["onnx_alone"]["rate"] for point in served)
    alone = report["throughput"]["onnx_alone"]
    assert beside[0] > 0 and alone["points"] == len(served)
    assert (alone["min_rate"], alone["max_rate"]) == (beside[0], beside[-1])
    assert alone["rate"] == round(float(np.median(beside)), 1)
    assert all("onnx_alone" not in point for point in modes["inline, no item cache"]["curve"])
    points = [p for run in modes.values() for p in run["curve"]]
    for point in points:  # where the cores went, per point
        assert set(point["cpu"]["ms_per_request"]) == {"service", "Redis", "load generator"}
        assert 0 <= point["cpu"]["machine_busy"] <= 1
    assert sum(p["cpu"]["ms_per_request"]["service"] for p in points) > 0
    stores = report["stores"]
    assert [row["candidates"] for row in stores["latency"]] == [20]
    row = stores["latency"][0]
    assert row["redis_server"]["n"] == row["embedded_server"]["n"] == 5
    assert row["embedded_fetch_p50"] > 0 and row["redis_fetch_p50"] > 0
    assert set(stores["open_loop"]) == {"redis (item cache)", "embedded"}
    assert stores["embedded_curve"][0]["sent"] >= 1
    workers = report["throughput"]["workers_study"]
    assert set(workers) == {"1 worker", "2 workers", "2 workers, one per core"}
    assert all(study["curve"][0]["sent"] >= 1 for study in workers.values())
    past = report["throughput"]["past_saturation"]["points"]
    assert [p["rate"] for p in past] == [10.0, 20.0]  # from where the curve as served stopped
    for point in past:  # where the time went: the server's span lies inside the client's
        assert point["in_server"]["n"] == point["n"] > 0
        assert 0 <= point["queue"]["p99"] <= point["in_server"]["p99"] <= point["p99"]
    markdown = (tmp_path / "bench.md").read_text()
    assert markdown.startswith("# ranker bench") and "2 workers, one per core" in markdown
    assert "## Stores: Redis or embedded" in markdown
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    client = redis.Redis.from_url(url)
    namespace = report["index_load"]["namespace"]
    assert not list(client.scan_iter(match=f"{namespace}*", count=1000))  # its keys are gone
    client.close()


def test_each_round_gives_every_slot_another_request_and_alternatives_take_turns() -> None:
    seen: list[tuple[str, int]] = []

    def part(name: str) -> Part:
        def measure(k: int) -> dict[str, float]:
            seen.append((name, k))
            return {name: 0.001 * (k + 1)}

        return measure

    slots = [[part("service")], [part("client a"), part("client b")], [part("onnx")]]
    samples = measure_point(slots, size=12, repeats=20)

    rounds = [seen[i : i + 3] for i in range(0, len(seen), 3)]
    assert len(rounds) == 30  # 10 warm-up rounds are run, not kept
    for i, round_ in enumerate(rounds):
        assert [name for name, _ in round_] == ["service", f"client {'ab'[i % 2]}", "onnx"]
        assert len({k for _, k in round_}) == 3  # no request read twice in one round
    assert len(samples.values["client a"]) == len(samples.values["client b"]) == 10
    assert len(samples.values["service"]) == 20
    # each kept round's own measures, together: what per-round sums are made of
    assert [sorted(r) for r in samples.rounds] == [
        sorted(["service", f"client {'ab'[i % 2]}", "onnx"]) for i in range(10, 30)
    ]


def test_the_floors_jitter_is_of_their_sum_round_by_round() -> None:
    """The strict floor's p99 / p50 is taken over its parts summed within each round (the
    machine's tail while the service was measured), not over each part apart; rounds without
    every part are left out."""
    samples = Samples()
    for i in range(100):
        mget = "redis_mget_pipelined" if i % 2 else "redis_mget_redis_py"
        onnx = 0.006 if i >= 98 else 0.002  # two slow rounds of 100: the p99 is one
        samples.rounds.append({"onnx": onnx, mget: 0.001, "raw_echo_server": 0.0005})
    for _ in range(10):  # a round with no raw echo sums nothing
        samples.rounds.append({"onnx": 1.0, "redis_mget_redis_py": 0.001, "echo_server": 0.001})
    assert strict_floor_jitter(samples) == round(0.0075 / 0.0035, 2)
    assert strict_floor_jitter(Samples()) is None


def test_latency_points_up_to_200_candidates_take_every_repeat_and_larger_ones_a_fifth(
    tmp_path: Path,
) -> None:
    config = BenchConfig(packages={}, snapshot=tmp_path, out=tmp_path, repeats=1000)
    assert [latency_repeats(config, n) for n in (50, 200, 500, 1000)] == [1000, 1000, 200, 200]
    config.repeats = 30
    assert [latency_repeats(config, n) for n in (200, 500)] == [30, 20]  # never under 20


def test_a_curve_holds_up_to_its_first_miss_not_to_a_later_pass() -> None:
    def point(rate: float, p99: float, shed: float = 0.0) -> dict[str, float]:
        return {"rate": rate, "p99": p99, "errors": 0, "shed_share": shed}

    curve = [point(10, 9), point(50, 30), point(100, 61), point(150, 45)]
    assert held_through(curve, objective_ms=50) == 50  # 150 passed after 100 missed: not counted
    assert held_through([point(10, 9), point(50, 20, shed=0.01)], 50) == 10  # shedding misses
    assert held_through([point(10, 70)], 50) is None


def test_the_load_generator_survives_a_keep_alive_connection_the_server_closed() -> None:
    """A server that closes each connection after answering (as uvicorn does once its
    keep-alive timeout passes) made the lean client count transport errors: it must open a
    new connection instead, and it never reuses a connection that said `Connection: close`."""
    import asyncio

    from bench.load import HttpClient

    answered: list[bytes] = []

    async def serve_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        answered.append(await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # no Connection: close header: the client finds out by the FIN

    async def run() -> list[tuple[int, bytes]]:
        server = await asyncio.start_server(serve_once, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = HttpClient("127.0.0.1", port)
        results = []
        for k in range(3):
            status, body, _ = await client.send(HttpClient.prepare("/rank", b'{"k": %d}' % k))
            results.append((status, body))
            await asyncio.sleep(0.05)  # the FIN arrives while the connection idles
        client.close()
        server.close()
        await server.wait_closed()
        return results

    assert asyncio.run(run()) == [(200, b"ok")] * 3
    assert answered == [b'{"k": 0}', b'{"k": 1}', b'{"k": 2}']


def test_a_pinned_process_runs_only_on_its_cores() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pin_process(child.pid, {0})
        assert os.sched_getaffinity(child.pid) == {0}
    finally:
        child.kill()
        child.wait()


def test_bench_load_drives_a_running_service_and_writes_its_report(
    tiny_exports: dict[str, Any], tiny_snapshot: Snapshot, tmp_path: Path
) -> None:
    """`ranker bench load` against a live uvicorn: the mix from the snapshot, every ranking
    answered, the curve stopped after two misses, the report written."""
    settings = Settings(
        models=[tiny_exports["prectr"].package.folder],
        store="embedded",
        snapshot=tiny_snapshot.folder,
        device="cpu",
        buckets=(16, 64, 256),
        deadline_ms=5_000,
    )
    with live_server(settings) as base:
        config = LoadConfig(
            url=base,
            snapshot=tiny_snapshot.folder,
            model="prectr",
            rates=(5.0, 10.0, 20.0),
            rate_seconds=1.0,
            objective_ms=1e-3,  # no point can meet it: the curve stops after two misses
        )
        write_load_report(load_test(config, progress=lambda _: None), tmp_path)
    report = json.loads((tmp_path / "load.json").read_text())
    assert [point["rate"] for point in report["curve"]] == [5.0, 10.0]
    for point in report["curve"]:
        assert point["statuses"] == {"200": point["sent"]} and point["in_server"]["n"] > 0
    assert report["max_rate_within_objective"] is None
    assert report["service"]["default"] == "prectr"
    assert "| 10 |" in (tmp_path / "load.md").read_text()
    assert (tmp_path / "load.png").stat().st_size > 0
