"""`ranker data ...` and `ranker train ...`.

- `ranker data generate|import-csv|import-amazon|encode|summary`: data sets. Every subcommand that
  writes a world prints its summary at the end and saves it as ``summary.json`` beside the tables.
- `ranker train --config C --data D --out O`: one training run (training.train).
- `ranker train eval RUN --data D`: re-evaluate a finished run on a world's test split.
- `ranker train report --data D --out O`: every model and ablation over seeds (training.report).
- `ranker train elec --config C --data D --out O`: ELEC's M-LLM and joint distillation; the run's
  model is the vanilla network (training.distill).
- `ranker train elec-report --data D --out O`: ELEC's Tables 2-3 and 5 analogs over seeds.
- `ranker train report-set`: the report set where text matters, from its sources, timed
  (training.report_set).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from training.data.summary import format_summary, summarize
from training.data.tables import World
from training.encode import DEFAULT_CACHE

DEFAULT_AMAZON = Path("../shared/data/amazon_scientific")


def _thresholds(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"thresholds must be numbers like 2,3,4: {text}") from err


def _data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ranker data", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)

    gen = sub.add_parser("generate", help="generate a synthetic world")
    gen.add_argument(
        "--world",
        choices=["synthetic", "longtail"],
        default="synthetic",
        help="synthetic: the warm world; longtail: Zipf item exposure, cold items and queries, "
        "part of quality written in the item text (docs/DATA.md)",
    )
    gen.add_argument(
        "--size",
        choices=["tiny", "default", "large"],
        default="default",
        help="tiny: seconds, for tests; default: >= 1M impressions; large: 12M",
    )
    gen.add_argument("--seed", type=int, default=0, help="random seed; same seed, same world")
    gen.add_argument("--out", type=Path, required=True, help="folder to write the world into")

    csv = sub.add_parser("import-csv", help="real graded relevance + simulated users and clicks")
    csv.add_argument("path", type=Path, help="CSV of query, item title, item text, grade")
    csv.add_argument("--out", type=Path, required=True, help="folder to write the world into")
    csv.add_argument("--query-col", default="query", help="column with the query text")
    csv.add_argument("--title-col", default="product_title", help="column with the item title")
    csv.add_argument(
        "--text-col",
        default="product_description",
        help="column with the item text; 'none' when the file has none",
    )
    csv.add_argument("--grade-col", default="median_relevance", help="column with the grade")
    csv.add_argument(
        "--id-col",
        default=None,
        help="column with the catalogue's item id (kept end to end: /rank takes these ids); "
        "without it items are keyed by title and text and named i0, i1, ...",
    )
    csv.add_argument("--category-col", default=None, help="column with the item's category")
    csv.add_argument("--brand-col", default=None, help="column with the item's brand")
    levels = csv.add_mutually_exclusive_group()
    levels.add_argument(
        "--thresholds",
        type=_thresholds,
        default=None,
        help="three increasing cut points binning grades into levels 0..3, e.g. 2,3,4 for "
        "grades 1..4; a grade equal to a cut point goes to the level above (see --closed); "
        "omit when grades are already 0..3",
    )
    levels.add_argument(
        "--bins",
        default=None,
        help="four explicit intervals for levels 0..3, e.g. '[1,1.5],(1.5,2],(2,2.5],(2.5,3]'",
    )
    csv.add_argument(
        "--closed",
        choices=["left", "right"],
        default="left",
        help="with --thresholds: 'left' puts a grade equal to a cut point in the level above "
        "it, 'right' in the level below",
    )
    csv.add_argument(
        "--encoding",
        choices=["auto", "utf-8", "latin-1"],
        default="auto",
        help="file encoding; auto tries utf-8 then latin-1",
    )
    csv.add_argument("--delimiter", default=",", help="field delimiter")
    csv.add_argument("--users", type=int, default=2_000, help="simulated users")
    csv.add_argument("--impressions", type=int, default=300_000, help="simulated impressions")
    csv.add_argument("--seed", type=int, default=0, help="random seed of the simulation")

    amazon = sub.add_parser("import-amazon", help="Amazon Industrial & Scientific histories")
    amazon.add_argument(
        "--folder", type=Path, default=DEFAULT_AMAZON, help="folder with the Scientific.* files"
    )
    amazon.add_argument("--out", type=Path, required=True, help="folder to write the world into")
    amazon.add_argument("--seed", type=int, default=0, help="seed for the sampled negatives")

    enc = sub.add_parser("encode", help="MiniLM vectors of a world's queries, items and pairs")
    enc.add_argument("folder", type=Path, help="a world folder")
    enc.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="encoding cache folder (re-runs encode only new texts)",
    )
    enc.add_argument(
        "--model-path",
        type=Path,
        default=None,
        help="a local sentence-transformers model folder (default: packaged MiniLM)",
    )
    enc.add_argument("--batch-size", type=int, default=128, help="texts per forward pass")
    enc.add_argument("--max-length", type=int, default=128, help="tokens kept per text")
    enc.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")

    show = sub.add_parser("summary", help="print a world's summary")
    show.add_argument("folder", type=Path, help="a world folder")
    return parser


def _finish(world: World, out: Path, started: float) -> None:
    world.save(out)
    summary = summarize(world)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(format_summary(summary))
    print(f"wrote {out} in {time.perf_counter() - started:.1f}s")


def run_data(argv: Sequence[str]) -> int:
    args = _data_parser().parse_args(argv)
    started = time.perf_counter()
    if args.action == "generate":
        from training.data.synthetic import generate_world

        _finish(generate_world(args.size, args.seed, args.world), args.out, started)
    elif args.action == "import-csv":
        from training.data.graded_csv import Binning, CsvColumns, load_relevance_csv
        from training.data.real import world_from_relevance

        columns = CsvColumns(
            query=args.query_col,
            title=args.title_col,
            text=None if args.text_col.lower() == "none" else args.text_col,
            grade=args.grade_col,
            item_id=args.id_col,
            category=args.category_col,
            brand=args.brand_col,
        )
        if args.bins:
            binning = Binning.parse(args.bins)
        elif args.thresholds:
            binning = Binning.from_thresholds(args.thresholds, args.closed)
        else:
            binning = Binning()
        labels, report = load_relevance_csv(
            args.path,
            columns,
            encoding=args.encoding,
            binning=binning,
            delimiter=args.delimiter,
        )
        print("\n".join(report.lines()))
        world = world_from_relevance(
            labels,
            seed=args.seed,
            n_users=args.users,
            n_impressions=args.impressions,
            source=str(args.path.name),
        )
        world.meta["import"] = report.to_dict()
        _finish(world, args.out, started)
    elif args.action == "import-amazon":
        from training.data.real import load_amazon_scientific

        _finish(load_amazon_scientific(args.folder, seed=args.seed), args.out, started)
    elif args.action == "encode":
        from training.encode import EncodingCache, MiniLMEncoder, encode_world

        encoder = MiniLMEncoder(
            args.model_path,
            batch_size=args.batch_size,
            max_length=args.max_length,
            threads=args.threads,
        )
        cache = EncodingCache(args.cache, encoder.fingerprint, encoder.dim)
        meta = encode_world(args.folder, encoder, cache)
        for name, counts in meta["counts"].items():
            print(
                f"{name:<8} {counts['requested']:>9,} texts, {counts['distinct']:>9,} distinct,"
                f" {counts['encoded']:>9,} newly encoded"
            )
        print(
            f"encoder {meta['fingerprint'][:16]} dim {meta['dim']}; cache {cache.folder} holds "
            f"{len(cache):,} vectors; {time.perf_counter() - started:.1f}s"
        )
    else:
        print(format_summary(summarize(World.load(args.folder, mmap=True))))
    return 0


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ranker train", description="train one experiment")
    parser.add_argument("--config", type=Path, required=True, help="experiment TOML")
    parser.add_argument("--data", type=Path, required=True, help="an encoded world folder")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write")
    parser.add_argument("--seed", type=int, default=None, help="override train.seed")
    return parser


def _eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ranker train eval", description="re-evaluate a run")
    parser.add_argument("run", type=Path, help="a run folder (model.pt + meta.json)")
    parser.add_argument("--data", type=Path, required=True, help="an encoded world folder")
    return parser


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (default: every core); two reports side by side on 2 cores "
        "run faster with 1 each",
    )


def _report_parser() -> argparse.ArgumentParser:
    from training.report import TABLE1, TABLE2

    parser = argparse.ArgumentParser(
        prog="ranker train report", description="Tables 1 and 2 over seeds (md, json, png)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="an encoded world folder; with {seed} in it, one world per seed",
    )
    parser.add_argument("--out", type=Path, required=True, help="report folder (runs reused)")
    parser.add_argument(
        "--configs",
        default=",".join(dict.fromkeys(TABLE1 + TABLE2)),
        help="comma-separated config names from training/configs",
    )
    parser.add_argument(
        "--seeds",
        default="0,1,2,3,4",
        help="comma-separated seeds (each sets initialization, batch order and text tower)",
    )
    parser.add_argument("--label", default="", help="title of the report, e.g. the data set")
    parser.add_argument(
        "--scope", default="", help="a sentence on what the report leaves out (printed with it)"
    )
    parser.add_argument(
        "--adopt",
        type=Path,
        metavar="REPORT_JSON",
        help="take the runs a report.json recorded (same data, seeds and code) instead of "
        "training them again, e.g. to add configs to a committed report",
    )
    parser.add_argument(
        "--resummarize",
        metavar="NOTE",
        help="rewrite --out's report from the per-seed values its report.json holds (no "
        "training); NOTE says what protocol those runs followed",
    )
    _add_threads(parser)
    return parser


def _elec_report_parser() -> argparse.ArgumentParser:
    from training.report import CONFIG_DIR, ELEC_VARIANTS

    parser = argparse.ArgumentParser(
        prog="ranker train elec-report", description="ELEC Tables 2-3 and 5 analogs (md, json, png)"
    )
    parser.add_argument("--data", type=Path, required=True, help="an encoded world folder")
    parser.add_argument("--out", type=Path, required=True, help="report folder (runs reused)")
    parser.add_argument(
        "--config",
        type=Path,
        default=CONFIG_DIR / "elec.toml",
        help="the ELEC experiment",
    )
    parser.add_argument(
        "--seeds",
        default="0,1,2,3,4",
        help="comma-separated seeds; with {seed} in --data, one world per seed",
    )
    parser.add_argument(
        "--variants",
        default=",".join(ELEC_VARIANTS),
        help="comma-separated ELEC runs beside DCNv2 alone: the full distillation (elec), its "
        "ablations (elec_no_clid, elec_no_mse), the gain network's diagnosis rows (gain_zero, "
        "gain_shuffled, gain_layernorm, gain_disjoint, gain_full_text), elec_norm (the "
        "distillation with the normalized injection) and elec_fixed, the "
        "distillation with what the diagnosis found (normalized injection, M-LLM to its best "
        "validation epoch)",
    )
    parser.add_argument("--label", default="", help="title of the report, e.g. the data set")
    parser.add_argument(
        "--no-timing", action="store_true", help="skip the Table 5 analog (ms per request)"
    )
    parser.add_argument(
        "--adopt",
        type=Path,
        metavar="REPORT_JSON",
        help="take the runs an ELEC report.json recorded (same data, seeds and code) instead of "
        "training them again, e.g. to add a seed to a committed report",
    )
    _add_threads(parser)
    return parser


def _report_set_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ranker train report-set",
        description="the report set where text matters (long-tail worlds, Amazon: data, ELEC "
        "and Table 1 reports), parts side by side, timed (reports/text-set/timing.md)",
    )
    parser.add_argument("--data", type=Path, default=Path("data"), help="where worlds go")
    parser.add_argument(
        "--reports", type=Path, default=Path("artifacts/reports"), help="where reports go"
    )
    parser.add_argument(
        "--amazon",
        type=Path,
        default=DEFAULT_AMAZON,
        help="the Amazon Industrial & Scientific folder",
    )
    parser.add_argument("--jobs", type=int, default=2, help="parts run at a time")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    _add_threads(parser)
    return parser


def run_train(argv: Sequence[str]) -> int:
    if argv and argv[0] == "report-set":
        from training.report_set import render_timing, run_report_set

        args = _report_set_parser().parse_args(argv[1:])
        record = run_report_set(
            args.data,
            args.reports,
            args.amazon,
            jobs=args.jobs,
            threads=args.threads or 1,
            seeds=[int(s) for s in args.seeds.split(",")],
        )
        print(render_timing(record))
        return 0 if all(part["status"] == "done" for part in record["parts"]) else 1
    if argv and argv[0] == "report":
        from training.report import run_report

        args = _report_parser().parse_args(argv[1:])
        if args.resummarize:
            from training.report import render_elec_markdown, render_markdown, resummarize

            report = resummarize(args.out, args.resummarize)
            is_elec = "vs_dcnv2" in report
            print(render_elec_markdown(report) if is_elec else render_markdown(report))
            return 0
        if args.adopt:
            from training.report import adopt_runs

            adopted = adopt_runs(args.adopt, args.out)
            print(f"adopted {len(adopted)} runs from {args.adopt}")
        report = run_report(
            args.data,
            args.out,
            configs=args.configs.split(","),
            seeds=[int(s) for s in args.seeds.split(",")],
            label=args.label,
            scope=args.scope,
            overrides={"train.threads": args.threads} if args.threads else None,
        )
        from training.report import render_markdown

        print(render_markdown(report))
        print(f"wrote {args.out}/report.md, report.json, report.png")
        return 0
    if argv and argv[0] == "elec-report":
        from training.report import render_elec_markdown, run_elec_report

        args = _elec_report_parser().parse_args(argv[1:])
        if args.adopt:
            from training.report import adopt_elec_runs

            adopted = adopt_elec_runs(args.adopt, args.out)
            print(f"adopted {len(adopted)} runs from {args.adopt}")
        report = run_elec_report(
            args.data,
            args.out,
            config=args.config,
            seeds=[int(s) for s in args.seeds.split(",")],
            variants=args.variants.split(","),
            label=args.label,
            timing_sizes=() if args.no_timing else (1, 100, 500),
            overrides={"train.threads": args.threads} if args.threads else None,
        )
        print(render_elec_markdown(report))
        print(f"wrote {args.out}/report.md, report.json, report.png")
        return 0
    if argv and argv[0] == "elec":
        from training.distill import run_elec
        from training.train import load_config

        args = _train_parser().parse_args(argv[1:])
        overrides = {"train.seed": args.seed} if args.seed is not None else None
        elec = run_elec(load_config(args.config, overrides), args.data, args.out)
        print(json.dumps(elec.metrics, indent=2))
        print(f"wrote {args.out} (model.pt is the vanilla network)")
        return 0
    if argv and argv[0] == "eval":
        from training.train import evaluate_saved_run

        args = _eval_parser().parse_args(argv[1:])
        print(json.dumps(evaluate_saved_run(args.run, args.data), indent=2))
        return 0
    from training.train import load_config, run_training

    args = _train_parser().parse_args(argv)
    overrides = {"train.seed": args.seed} if args.seed is not None else None
    result = run_training(load_config(args.config, overrides), args.data, args.out)
    print(json.dumps(result.metrics, indent=2))
    print(f"wrote {result.out_dir} in {result.seconds / 60:.1f} min")
    return 0


def main(command: str, argv: Sequence[str]) -> int:
    """Entry point the `ranker` dispatcher calls with the command name and its arguments."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if command == "data":
        return run_data(argv)
    if command == "train":
        return run_train(argv)
    raise SystemExit(f"training.cli has no command {command!r}")
