"""The bench's report: bench.json, bench.md and bench.png."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.config import BenchResult, jsonable


def write_report(result: BenchResult, out: Path) -> None:
    """bench.json, bench.md and bench.png (latency by candidates with floors; throughput)."""
    (out / "bench.json").write_text(json.dumps(jsonable(result.__dict__), indent=2) + "\n")
    (out / "bench.md").write_text(render_markdown(result))
    _plot(result, out / "bench.png")


def row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def cpu_cells(
    point: Mapping[str, Any], names: Sequence[str] = ("service", "Redis", "load generator")
) -> list[str]:
    """An open-loop point's CPU per request of ``names`` (joined by /) and machine busy share
    ("-" for reports written before the bench measured them)."""
    cpu = point.get("cpu")
    if cpu is None:
        return ["-", "-"]
    spent = cpu["ms_per_request"]
    return [
        " / ".join(f"{spent[n]:.2f}" if n in spent else "-" for n in names),
        f"{cpu['machine_busy']:.0%}",
    ]


#: The columns of `point_cells`.
POINT_HEADERS = (
    "rate (req/s)",
    "sent",
    "errors",
    "shed",
    "p50 ms",
    "p99 ms",
    "client lag p99",
    "in server p99",
    "inference thread busy / wait ms",
)


def point_cells(point: Mapping[str, Any]) -> list[object]:
    """An open-loop point's rate, requests sent, errors, share shed, p50 and p99, the load
    generator's send lag and the in-server time (p99s, ms), and its inference threads' use."""
    return [
        f"{point['rate']:g}",
        point["sent"],
        point["errors"],
        f"{point['shed_share']:.1%}",
        f"{point['p50']:.1f}",
        f"{point['p99']:.1f}",
        f"{point['client_lag']['p99']:.1f}",
        f"{point['in_server']['p99']:.1f}",
        inference_thread_cell(point.get("inference_thread")),
    ]


def inference_thread_cell(use: Mapping[str, Any] | None) -> str:
    """Busy share / mean wait of the inference threads ("-": none used, or a report written
    before the bench measured it)."""
    return "-" if use is None else f"{use['busy']:.0%} / {use['wait_ms_mean']:.1f}"


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
        "Server = the response's own total, from the request's arrival; client = the round "
        "trip. Floors, measured round by "
        "round between the service's requests, each on another request of the same mix: ONNX = "
        "the runner on the same inputs, MGET = one Redis MGET of the same keys by the faster of "
        "redis-py and the pipelined connection, fetch = the service's store fetch (MGET + "
        "decoding), echo = /v1/echo (HTTP + parsing and validation), raw echo = /v1/echo/raw "
        "(the body read and orjson-decoded, no validation); both echoes from the request's "
        "arrival, as the service's total. Ratio = server p50 / (ONNX + MGET + echo); strict "
        "ratio = server p50 / (ONNX + MGET + raw echo); strict, from the handler = the same with "
        "the service and the raw echo both timed from their handler's start (the stack's work "
        "before a handler out of both); stage ratio = server p50 / (ONNX + fetch + echo); "
        "floors' p99 / p50 = the strict floor summed round by round (ONNX + that round's MGET + "
        "raw echo): the machine's own tail while the service's was measured.",
        "",
        row(
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
                "strict, from the handler",
                "stage ratio",
                "p99 / p50",
                "floors' p99 / p50",
            ]
        ),
        row(["---", *["---:"] * 16]),
    ]
    for r in result.latency:
        f = r["floors"]
        lines.append(
            row(
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
                    r.get("ratio_server_p50_strict_from_handler", "-"),
                    r["ratio_server_p50_stage_floors"],
                    r["p99_over_p50_server"],
                    r.get("p99_over_p50_strict_floor") or "-",
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
            row(["candidates", "naive p50", "naive p99", "service server p50", "service faster"]),
            row(["---:"] * 5),
        ]
        lines += [
            row(
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
            "Where the time went (p99): this client's own lag in sending (the load generator "
            "shares the cores: where it is a large part of the p99, the client, not only the "
            "service, is what saturates), and at the server arrival to answer (in server). "
            "Where the cores went: CPU milliseconds per request of the service's worker, Redis "
            "and this load generator, and the share of the machine's cores busy over the point "
            "(anything else running counts there too).",
            "",
            row(
                [
                    "mode",
                    *POINT_HEADERS,
                    "CPU ms a request: service / Redis / client",
                    "machine busy",
                ]
            ),
            row(["---", *["---:"] * 11]),
        ]
        for mode, run in t["modes"].items():
            lines += [row([mode, *point_cells(p), *cpu_cells(p)]) for p in run["curve"]]
        alone = t["onnx_alone"]
        lines += [
            "",
            f"Highest rate up to which every point had p99 under {t['objective_p99_ms']:g} ms and "
            "nothing shed: "
            + ", ".join(
                f"{mode} **{run['max_rate_within_objective']} req/s**"
                for mode, run in t["modes"].items()
            )
            + f" ({t['speedup_over_inline']}x). ONNX Runtime alone, back to back on the same "
            f"mix with the same threads, measured before each point of the curve as served: "
            f"median {alone['rate']} req/s ({alone['mean_ms']} ms a request; "
            f"{alone['min_rate']}-{alone['max_rate']} over {alone['points']} points); the "
            f"service reaches {t['share_of_onnx_alone']} of it.",
            "",
        ]
        lines += [
            f"- {mode}: item cache hit rate {run['item_cache_hit_rate']}, Redis reply "
            f"{run['redis_kib_per_request']} KiB per ranking"
            for mode, run in t["modes"].items()
        ]
        lines.append("")
        workers = t.get("workers_study")
        if workers:
            rates = _study_rates(workers)
            lines += [
                "Workers on this machine (the curve as served, then 2 workers, then 2 workers "
                "each pinned to its own core; Redis and this client share the same cores): "
                "p99 ms by offered rate, `-` where the curve had stopped.",
                "",
                row(["workers", *(f"{r:g}" for r in rates), "held to"]),
                row(["---", *["---:"] * (len(rates) + 1)]),
            ]
            for label, study in workers.items():
                p99 = {p["rate"]: p["p99"] for p in study["curve"]}
                cells = [f"{p99[r]:.1f}" if r in p99 else "-" for r in rates]
                best = study["max_rate_within_objective"]
                lines.append(row([label, *cells, f"{best} req/s" if best else "none"]))
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
                row(
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
                row(["---:"] * 8),
            ]
            lines += [
                row(
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
            row(["candidates", "gain network, MiniLM online", "vanilla network as served"]),
            row(["---:"] * 3),
        ]
        lines += [
            row([n, f"{rows['gain_with_lm_online'][n]:.1f}", f"{rows['vanilla_served'][n]:.3f}"])
            for n in rows["gain_with_lm_online"]
        ]
        lines.append("")
    lines += _stores_section(result.stores)
    mem = result.memory
    if mem:
        models = ", ".join(mem["models_loaded"])
        lines += [
            "## Memory",
            "",
            f"- serving process (one worker, models {models}, Redis store): "
            f"**{mem['service_rss_mib']} MiB** resident; torch loaded: {mem['torch_loaded']}",
            f"- Redis bytes per record (MEMORY USAGE, mean of 200): item "
            f"{mem['redis_bytes_per_item']}, user {mem['redis_bytes_per_user']}, query "
            f"(with its pairs) {mem['redis_bytes_per_query']}",
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


def _stores_section(stores: dict[str, Any]) -> list[str]:
    if not stores:
        return []
    lines = [
        f"## Stores: Redis or embedded, {stores['model']}, one worker",
        "",
        "The service on the Redis store as served (item cache on) and on the embedded store (the "
        "snapshot memory-mapped in the worker, no Redis), both running, measured round by round "
        "on the same requests at concurrency 1 (ms).",
        "",
        row(
            [
                "candidates",
                "Redis server p50",
                "Redis server p99",
                "Redis fetch p50",
                "embedded server p50",
                "embedded server p99",
                "embedded fetch p50",
                "embedded / Redis p50",
            ]
        ),
        row(["---:"] * 8),
    ]
    for r in stores["latency"]:
        redis, embedded = r["redis_server"], r["embedded_server"]
        lines.append(
            row(
                [
                    r["candidates"],
                    _ms2(redis["p50"]),
                    _ms2(redis["p99"]),
                    _ms2(r["redis_fetch_p50"]),
                    _ms2(embedded["p50"]),
                    _ms2(embedded["p99"]),
                    _ms2(r["embedded_fetch_p50"]),
                    f"{embedded['p50'] / redis['p50']:.2f}",
                ]
            )
        )
    rates = stores["open_loop"]
    lines += [
        "",
        "Open loop (the throughput mix), highest rate up to which every point had p99 within the "
        "objective and nothing shed: "
        + ", ".join(f"{store} **{rate} req/s**" for store, rate in rates.items())
        + ".",
        "",
    ]
    return lines


def _study_rates(workers: dict[str, Any]) -> list[float]:
    """Every rate any curve of the workers study reached, in order."""
    return sorted({p["rate"] for study in workers.values() for p in study["curve"]})


def _plot(result: BenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = result.throughput.get("workers_study")
    fig, axes = plt.subplots(1, 3 if workers else 2, figsize=(19 if workers else 13, 4.8))
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
    embedded = result.stores.get("embedded_curve")
    if embedded:
        rates = [p["rate"] for p in embedded]
        ax.plot(rates, [p["p99"] for p in embedded], "o:", label="embedded store p99")
    if result.throughput:
        ax.axhline(result.throughput["objective_p99_ms"], color="red", ls="--", label="objective")
    ax.set(xlabel="offered rate (req/s, Poisson)", ylabel="ms", title="Open-loop latency")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if workers:
        ax = axes[2]
        for label, study in workers.items():
            curve = study["curve"]
            ax.plot([p["rate"] for p in curve], [p["p99"] for p in curve], "o-", label=label)
        ax.axhline(result.throughput["objective_p99_ms"], color="red", ls="--", label="objective")
        ax.set_yscale("log")
        ax.set(xlabel="offered rate (req/s, Poisson)", ylabel="p99 ms", title="Workers")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
