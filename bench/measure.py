"""Timing primitives: percentiles, repeated timings, the machine, and measurement rounds
that interleave the service with its floors."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson

from bench.requests import JSON_HEADERS, Body

Stats = dict[str, float]


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


@dataclass
class Samples:
    """Seconds per measured thing, filled request by request (see `measure_point`); the
    service's stages are kept in milliseconds, as its responses report them."""

    values: dict[str, list[float]] = field(default_factory=dict)
    stages: dict[str, list[float]] = field(default_factory=dict)
    #: What each kept round measured, by name (seconds): sums across parts of one round.
    rounds: list[dict[str, float]] = field(default_factory=list)

    def add(self, name: str, seconds: float) -> None:
        self.values.setdefault(name, []).append(seconds)


#: One part of a measuring round: it measures itself on the k-th request of the mix and returns
#: what it measured by name (seconds; the service's stages as "stage:<name>" in milliseconds).
Part = Callable[[int], dict[str, float]]


def timed_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - started, out


def service_part(http: httpx.Client, bodies: list[Body]) -> Part:
    """POST /rank: the round trip, the response's own total (from the request's arrival) and
    its stages, and the handler's part of the total (from its start: the total less the
    queue), which the floors from their handlers' starts are compared with."""
    encoded = [orjson.dumps(b) for b in bodies]  # the client's JSON work is not the service's

    def measure(k: int) -> dict[str, float]:
        elapsed, response = timed_call(http.post, "/rank", content=encoded[k], headers=JSON_HEADERS)
        response.raise_for_status()
        timing = response.json()["timing_ms"]
        stages = {f"stage:{stage}": ms for stage, ms in timing.items()}
        server = timing["total"] / 1000
        handler = server - timing["queue"] / 1000
        return {"client": elapsed, "server": server, "server_handler": handler, **stages}

    return measure


def named_part(part: Part, prefix: str) -> Part:
    """``part`` with every name it measures prefixed (two services measured in one point)."""

    def measure(k: int) -> dict[str, float]:
        return {
            f"stage:{prefix}{name.removeprefix('stage:')}"
            if name.startswith("stage:")
            else f"{prefix}{name}": value
            for name, value in part(k).items()
        }

    return measure


def echo_part(http: httpx.Client, bodies: list[Body], raw: bool = False) -> Part:
    """POST /v1/echo (HTTP, parsing and validation) or, ``raw``, /v1/echo/raw (the bytes and one
    orjson decode, no validation: the strict floor); round trip, server side from the request's
    arrival (as the service's total counts) and from the handler's start (as its handler's part
    of the total)."""
    encoded = [orjson.dumps(b) for b in bodies]
    path, name = ("/v1/echo/raw", "raw_echo") if raw else ("/v1/echo", "echo")

    def measure(k: int) -> dict[str, float]:
        elapsed, response = timed_call(http.post, path, content=encoded[k], headers=JSON_HEADERS)
        response.raise_for_status()
        timing = response.json()["timing_ms"]
        return {
            f"{name}_client": elapsed,
            f"{name}_server": timing["total"] / 1000,
            f"{name}_handler": timing["parse"] / 1000,
        }

    return measure


def floor_part(name: str, fn: Callable[[Any], Any], cases: Sequence[Any]) -> Part:
    """One floor: ``fn`` on the k-th case, timed."""
    return lambda k: {name: timed_call(fn, cases[k])[0]}


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
        kept: dict[str, float] = {}
        for name, value in measured.items():
            if name.startswith("stage:"):
                samples.stages.setdefault(name.removeprefix("stage:"), []).append(value)
            else:
                samples.add(name, value)
                kept[name] = value
        samples.rounds.append(kept)
    return samples
