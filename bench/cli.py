"""`ranker bench`: latency, throughput and memory of the service against measured floors;
`ranker bench load`: the open loop against a service already running (bench/remote.py)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.config import DEFAULT_RATES, BenchConfig
from bench.remote import LoadConfig, load_test, render_load_markdown, write_load_report
from bench.report import render_markdown, write_report
from bench.run import run_bench


def _bench_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ranker bench", description="latency, throughput and memory against floors"
    )
    parser.add_argument("--prectr", type=Path, default=Path("artifacts/prectr/default"))
    parser.add_argument("--vanilla", type=Path, default=Path("artifacts/vanilla/default"))
    parser.add_argument("--snapshot", type=Path, default=Path("artifacts/snapshots/default"))
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument(
        "--prectr-run", type=Path, default=None, help="PRECTR run folder: the naive torch path"
    )
    parser.add_argument(
        "--elec-run", type=Path, default=None, help="ELEC run folder: the Table 5 analog"
    )
    parser.add_argument("--data", type=Path, default=None, help="the runs' world (default: meta)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"), help="report folder")
    parser.add_argument(
        "--repeats",
        type=int,
        default=BenchConfig.repeats,
        help="requests per latency point up to 200 candidates (a fifth above)",
    )
    _open_loop_arguments(parser)
    parser.add_argument(
        "--workers-study",
        action="store_true",
        help="also run the open loop with 2 workers, free and pinned one per core (+3-4 min)",
    )
    return parser


def _open_loop_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rates",
        default=",".join(f"{r:g}" for r in DEFAULT_RATES),
        help="open-loop rates (req/s), comma-separated",
    )
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="seconds per rate")
    parser.add_argument("--objective-ms", type=float, default=50.0, help="p99 latency objective")


def _open_loop_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The open-loop arguments as config fields (both configs name them alike)."""
    return {
        "rates": tuple(float(r) for r in args.rates.split(",")),
        "rate_seconds": args.rate_seconds,
        "objective_ms": args.objective_ms,
    }


def _load_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ranker bench load",
        description="the open-loop curve of a service already running (from another host, it "
        "measures the service alone)",
    )
    parser.add_argument("--url", required=True, help="the service (or its load balancer)")
    parser.add_argument(
        "--snapshot",
        type=Path,
        default=Path("artifacts/snapshots/default"),
        help="the snapshot the service's index was loaded from (the requests' ids)",
    )
    parser.add_argument("--model", default=None, help="model to ask for (default: the service's)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench-load"))
    _open_loop_arguments(parser)
    return parser


def load(argv: Sequence[str]) -> int:
    args = _load_parser().parse_args(argv)
    config = LoadConfig(
        url=args.url.rstrip("/"),
        snapshot=args.snapshot,
        model=args.model,
        **_open_loop_settings(args),
    )
    result = load_test(config)
    write_load_report(result, args.out)
    print(render_load_markdown(result))
    print(f"wrote {args.out}/load.json, load.md, load.png")
    return 0


def bench(argv: Sequence[str]) -> int:
    args = _bench_parser().parse_args(argv)
    config = BenchConfig(
        packages={"prectr": args.prectr, "vanilla": args.vanilla},
        snapshot=args.snapshot,
        out=args.out,
        redis_url=args.redis,
        prectr_run=args.prectr_run,
        elec_run=args.elec_run,
        world=args.data,
        repeats=args.repeats,
        workers_study=args.workers_study,
        **_open_loop_settings(args),
    )
    result = run_bench(config)
    write_report(result, args.out)
    print(render_markdown(result))
    print(f"wrote {args.out}/bench.json, bench.md, bench.png in {result.seconds:.0f}s")
    return 0


def main(command: str, argv: Sequence[str]) -> int:
    """Entry point the `ranker` dispatcher calls."""
    # The bench prints its own progress; the libraries' per-call notes would drown it.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] == "load":
        return load(argv[1:])
    return bench(argv)
