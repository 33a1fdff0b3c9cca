"""`ranker export onnx|parity|snapshot`: from a finished run to what the service loads."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from service.inference import DEFAULT_BUCKETS, RunnerSettings


def _buckets(text: str) -> tuple[int, ...]:
    return tuple(int(b) for b in text.split(","))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ranker export", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)

    onnx = sub.add_parser("onnx", help="export a prectr or vanilla run as a model package")
    onnx.add_argument("run", type=Path, help="a run folder (model.pt + meta.json)")
    onnx.add_argument("--out", type=Path, default=Path("artifacts"), help="packages root")
    onnx.add_argument("--name", default=None, help="package name (default: the family)")
    onnx.add_argument("--version", default=None, help="package version (default: UTC time)")
    onnx.add_argument("--data", type=Path, default=None, help="the run's world (default: meta)")
    onnx.add_argument("--no-fp16", action="store_true", help="skip the fp16 GPU variant")
    onnx.add_argument(
        "--buckets",
        type=_buckets,
        default=DEFAULT_BUCKETS,
        help="candidate buckets parity covers, comma-separated",
    )

    parity = sub.add_parser("parity", help="re-check a package against the run it came from")
    parity.add_argument("package", type=Path, help="a package folder (manifest.json)")
    parity.add_argument("--run", type=Path, default=None, help="run folder (default: manifest)")
    parity.add_argument("--data", type=Path, default=None, help="the run's world (default: meta)")
    parity.add_argument("--rounds", type=int, default=2, help="passes over every bucket size")
    parity.add_argument("--buckets", type=_buckets, default=DEFAULT_BUCKETS)

    snap = sub.add_parser("snapshot", help="write the index snapshot of a run's world")
    snap.add_argument("--run", type=Path, required=True, help="a run folder: its text tower")
    snap.add_argument("--data", type=Path, default=None, help="the world (default: the run's)")
    snap.add_argument("--out", type=Path, required=True, help="snapshot folder to create")
    snap.add_argument(
        "--match-threshold",
        type=float,
        default=None,
        help="lexical similarity an unseen query needs to borrow a known query's vector",
    )
    return parser


def main(command: str, argv: Sequence[str]) -> int:
    """Entry point the `ranker` dispatcher calls."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("onnxscript", "onnx_ir", "faiss.loader"):  # per-pass notes, not progress
        logging.getLogger(chatty).setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    if args.action == "onnx":
        from export.package import export_run

        signing = bool(os.environ.get("RANKER_PACKAGE_KEY"))
        result = export_run(
            args.run,
            args.out,
            name=args.name,
            version=args.version,
            world_dir=args.data,
            fp16=not args.no_fp16,
            runner_settings=RunnerSettings(device="cpu", buckets=args.buckets),
            key=os.environ["RANKER_PACKAGE_KEY"].encode() if signing else None,
        )
        for parity in result.parity.values():
            print(parity.describe())
        for part, check in (result.package.manifest.approximator or {}).items():
            print(
                f"pair approximator ({part}, {int(check['pairs']):,} pairs): expected relevance "
                f"level {check['level_bias']:+.3f} off the real pair's on average (mean abs "
                f"{check['level_mean_abs_error']:.3f}); against the labels "
                f"{check['label_mae_approximated']:.3f} vs {check['label_mae_real']:.3f} with "
                f"the real pair; cosine {check['cosine']:.3f}, centred "
                f"{check['centred_cosine']:.3f}"
            )
        print(f"wrote {result.package.folder} in {result.seconds:.1f}s")
        print(
            f"manifest SHA-256 {result.package.manifest_sha256} (pin it in /admin/reload); "
            + (
                "signed with RANKER_PACKAGE_KEY"
                if signing
                else "unsigned: RANKER_PACKAGE_KEY unset"
            )
        )
    elif args.action == "parity":
        from export.package import recheck_package

        results = recheck_package(
            args.package,
            run_dir=args.run,
            world_dir=args.data,
            runner_settings=RunnerSettings(device="cpu", buckets=args.buckets),
            rounds=args.rounds,
        )
        for parity in results:
            print(parity.describe())
        if not all(p.passed for p in results):
            return 1
    else:
        from export.snapshot import DEFAULT_MATCH_THRESHOLD, write_snapshot
        from training.train import load_saved_run

        run = load_saved_run(args.run)
        world = args.data or Path(run.meta["world"]["path"])
        threshold = args.match_threshold
        snapshot = write_snapshot(
            world,
            run.config.text_tower,
            args.out,
            match_threshold=DEFAULT_MATCH_THRESHOLD if threshold is None else threshold,
        )
        counts = ", ".join(f"{k} {v:,}" for k, v in snapshot.meta.counts.items())
        print(f"wrote {args.out} ({counts}) in {time.perf_counter() - started:.1f}s")
    return 0
