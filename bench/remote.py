"""`ranker bench load`: the open loop against a service already running, anywhere.

`ranker bench` starts its own service beside Redis and the load generator on one machine, so
near the limit its open-loop figure is partly the machine's (the load generator's own send lag
reaches 4-27 ms at p99 on 2 shared cores). Run from another host against a deployed service
(a replica, or the nginx in front of several), the same curve measures the service alone: the
same mix of 100-700 candidates drawn from the snapshot the service's index was loaded from,
Poisson arrivals timed from their scheduled send, the same stopping rule and objective. It
writes load.json, load.md and load.png.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.config import DEFAULT_RATES, jsonable
from bench.load import held_through, rising_curve
from bench.measure import machine
from bench.report import POINT_HEADERS, cpu_cells, point_cells, row
from bench.requests import open_loop_mix
from service.index.snapshot import Snapshot


@dataclass(frozen=True)
class LoadConfig:
    url: str  # the service's base URL (a replica, or a load balancer in front of several)
    snapshot: Path  # the snapshot its index was loaded from: the requests' users, queries, items
    model: str | None = None  # None: the service's default model (or its A/B arms)
    rates: tuple[float, ...] = DEFAULT_RATES
    rate_seconds: float = 10.0
    objective_ms: float = 50.0
    seed: int = 0


@dataclass
class LoadResult:
    machine: dict[str, Any]  # the load generator's
    config: dict[str, Any]
    service: dict[str, Any] = field(default_factory=dict)  # its /models answer
    curve: list[dict[str, Any]] = field(default_factory=list)
    max_rate_within_objective: float | None = None


def load_test(config: LoadConfig, progress: Callable[[str], None] = print) -> LoadResult:
    """The open-loop curve of the service at ``config.url``; refuses one that is not ready."""
    result = LoadResult(machine(), jsonable(config.__dict__))
    bodies = open_loop_mix(Snapshot(config.snapshot), config.seed, config.model)
    with httpx.Client(base_url=config.url, timeout=30) as http:
        ready = http.get("/readyz")
        if ready.status_code != 200:
            raise RuntimeError(f"{config.url} is not ready: {ready.status_code} {ready.text}")
        result.service = http.get("/models").json()
        for body in bodies * 2:  # every request shape seen before the clock runs
            answer = http.post("/rank", json=body)
            if answer.status_code != 200:
                raise RuntimeError(f"{config.url} refused the mix: {answer.text[:300]}")
    progress(f"{config.url} ready, serving index {result.service['index']['version']}")
    result.curve = rising_curve(
        config.url,
        bodies,
        config.rates,
        config.rate_seconds,
        config.objective_ms,
        config.seed,
        None,  # the service's processes are not this machine's
        progress,
        "remote",
    )
    result.max_rate_within_objective = held_through(result.curve, config.objective_ms)
    return result


def write_load_report(result: LoadResult, out: Path) -> None:
    """load.json, load.md and load.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(jsonable(result.__dict__), indent=2) + "\n")
    (out / "load.md").write_text(render_load_markdown(result))
    _plot(result, out / "load.png")


def render_load_markdown(result: LoadResult) -> str:
    m, c = result.machine, result.config
    index = result.service.get("index", {})
    lines = [
        "# ranker bench load",
        "",
        f"{m['date']}; load generator: {m['cpu']}, {m['cores']} cores. Service {c['url']}: "
        f"index {index.get('version')} ({index.get('store')} store), model "
        f"{c['model'] or 'the default'}. Open-loop Poisson arrivals, uniform 100-700 "
        f"candidates, {c['rate_seconds']:g} s a point; latency from the scheduled send time.",
        "",
        "Client lag = how late this load generator wrote a request (its own saturation); in "
        "server = arrival to answer, from the answers' timings. CPU: this load generator's "
        "alone, and the busy share of its machine's cores.",
        "",
        row([*POINT_HEADERS, "CPU ms a request: client", "load machine busy"]),
        row(["---:"] * 11),
    ]
    lines += [row([*point_cells(p), *cpu_cells(p, ("load generator",))]) for p in result.curve]
    held = result.max_rate_within_objective
    lines += [
        "",
        f"Highest rate up to which every point had p99 under {c['objective_ms']:g} ms and "
        f"nothing shed: **{held if held is not None else 'none'} req/s**.",
        "",
    ]
    return "\n".join(lines)


def _plot(result: LoadResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rates = [p["rate"] for p in result.curve]
    for name, style in (("p50", "o-"), ("p99", "o:")):
        ax.plot(rates, [p[name] for p in result.curve], style, label=name)
    ax.plot(rates, [p["in_server"]["p99"] for p in result.curve], "s--", label="in server p99")
    ax.axhline(result.config["objective_ms"], color="red", ls="--", label="objective")
    ax.set_yscale("log")
    ax.set(xlabel="offered rate (req/s, Poisson)", ylabel="ms", title=result.config["url"])
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
