"""Evaluation reports: PRECTR's Table 1 (every model) and Table 2 (ablations), over seeds.

`run_report` trains every (config, seed) it is given (reusing finished runs), gathers the test
metrics and writes ``report.json``, ``report.md`` and ``report.png``. A seed fixes everything
random of a run: initialization and batch order (``train.seed``), the text tower
(``text_tower.seed``) and, when the data path names ``{seed}``, the generated world. Every
metric is computed on the model's own score, the function the service ranks by (no position:
training/models/position.py).

Each model is compared with Wide&Deep, and each ablation with full PRECTR, by the paired
difference over seeds with its 95% t-interval (training.statistics); a verdict is printed only
where the interval excludes 0.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluate import rela_impr
from training.segments import QUERY_SEGMENTS, SEGMENT_LABELS, SEGMENTS, drop_small_segments
from training.statistics import NO_DIFFERENCE, paired_difference
from training.train import load_config, run_training

log = logging.getLogger(__name__)

TABLE1: tuple[str, ...] = (
    "lr",
    "dnn",
    "wide_deep",
    "deepfm",
    "dcnv2",
    "din",
    "sukd",
    "wide_deep_pair",
    "prectr",
)
TABLE2: tuple[str, ...] = (
    "wide_deep",
    "prectr_no_two_stage",
    "prectr_no_regularization",
    "prectr_no_incentive",
    "prectr",
    "prectr_pwiser",
    "prectr_unknown_items",
)
#: Rows of Table 2 that add to PRECTR rather than take from it: compared as "better than PRECTR".
VARIANTS: tuple[str, ...] = ("prectr_pwiser", "prectr_unknown_items")
#: Metrics of each run, as `training.train.score_metrics` names them.
METRICS: tuple[str, ...] = (
    "auc",
    "gauc",
    "logloss",
    "request_auc",
    "ndcg_at_10",
    "relevance_score_at_10",
)
#: Per segment (training.segments): click AUC everywhere, NDCG@10 of the query segments.
SEGMENT_METRICS: tuple[str, ...] = (
    *(f"auc@{s}" for s in SEGMENTS),
    *(f"ndcg_at_10@{s}" for s in QUERY_SEGMENTS),
)
#: Against the base of the same seed (Eq. 12, on AUC and on GAUC).
DERIVED: tuple[str, ...] = ("rela_impr_auc", "rela_impr_gauc")
COMPARED: tuple[str, ...] = ("auc", "gauc", "request_auc", "ndcg_at_10", "relevance_score_at_10")
LOWER_IS_BETTER = frozenset({"logloss"})
LABELS = {
    "auc": "AUC",
    "gauc": "GAUC",
    "logloss": "LogLoss",
    "request_auc": "request AUC",
    "ndcg_at_10": "NDCG@10",
    "relevance_score_at_10": "Rel. Score@10",
    "rela_impr_auc": "RelaImpr AUC %",
    "rela_impr_gauc": "RelaImpr GAUC %",
}
BASE = "wide_deep"
CONTROL = "wide_deep_pair"
SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
CONFIG_DIR = Path(__file__).parent / "configs"


def seed_overrides(seed: int) -> dict[str, Any]:
    """What one seed of a report sets: the model's initialization and batch order, and the text
    tower's."""
    return {"train.seed": seed, "text_tower.seed": seed}


def data_of_seed(data_dir: Path, seed: int) -> Path:
    """The world of a seed: ``data_dir`` itself, or with ``{seed}`` filled in (one generated
    world per seed, e.g. ``data/default-{seed}``)."""
    return Path(str(data_dir).format(seed=seed)) if "{seed}" in str(data_dir) else data_dir


def run_report(
    data_dir: Path,
    out_dir: Path,
    *,
    configs: Sequence[str] = tuple(dict.fromkeys(TABLE1 + TABLE2)),
    seeds: Sequence[int] = SEEDS,
    config_dir: Path = CONFIG_DIR,
    label: str = "",
    overrides: dict[str, Any] | None = None,
    scope: str = "",
) -> dict[str, Any]:
    """Train what is missing, then write the report files; returns the report record (``scope``:
    a sentence on what the report leaves out, printed under its protocol). The files are
    rewritten after every seed, so an interrupted report keeps the tables of the seeds it
    finished."""
    seconds = 0.0
    runs: dict[str, list[dict[str, float]]] = {}
    total, done = len(configs) * len(seeds), 0
    report: dict[str, Any] = {}
    for k, seed in enumerate(seeds):  # seed-major: an interruption keeps whole seeds
        for name in configs:
            run_dir = out_dir / "runs" / f"{name}-seed{seed}"
            metrics_path = run_dir / "metrics.json"
            if not metrics_path.is_file():
                cfg = load_config(
                    config_dir / f"{name}.toml", {**(overrides or {}), **seed_overrides(seed)}
                )
                log.info("training %s seed %d (%d of %d runs done)", name, seed, done, total)
                run_training(cfg, data_of_seed(data_dir, seed), run_dir)
            done += 1
            runs.setdefault(name, []).append(
                drop_small_segments(json.loads(metrics_path.read_text()))
            )
            seconds += json.loads((run_dir / "meta.json").read_text()).get("seconds", 0.0)
        report = summarize_runs(runs, seeds[: k + 1])
        report.update(relevance_score_coverage(runs))
        report.update(segment_row_counts(runs))
        # The runs' own training time, summed: the cost of the report from scratch, also when
        # this call reused finished runs.
        report.update({"data": str(data_dir), "label": label, "minutes": round(seconds / 60, 1)})
        if scope:
            report["scope"] = scope
        write_report(report, out_dir)
    return report


def adopt_runs(report_json: Path, out_dir: Path) -> list[str]:
    """Take the finished runs a report recorded (per seed: its metrics, chosen epoch and time)
    as runs of ``out_dir``, so a report can grow by more configs without training again what it
    holds. Only for the same data, seeds and training code: the caller vouches for that.
    Returns the run names adopted (a run already in ``out_dir`` is kept)."""
    old = json.loads(report_json.read_text())
    adopted = []
    for name, row in old["table"].items():
        epochs = old.get("epochs", {}).get(name, [])
        for k, seed in enumerate(old["seeds"]):
            run_dir = out_dir / "runs" / f"{name}-seed{seed}"
            if (run_dir / "metrics.json").is_file():
                continue
            chosen = epochs[k] if k < len(epochs) else {}
            metrics = {m: row[m]["values"][k] for m in METRICS if m in row}
            metrics.update(
                best_epoch=chosen.get("best_epoch"),
                epochs_run=chosen.get("epochs_run"),
                train_seconds=chosen.get("seconds"),
            )
            meta = {"seconds": chosen.get("seconds") or 0.0, "adopted_from": str(report_json)}
            _write_adopted_run(run_dir, metrics, meta)
            adopted.append(run_dir.name)
    return adopted


def _write_adopted_run(run_dir: Path, metrics: dict[str, Any], meta: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def resummarize(out_dir: Path, note: str) -> dict[str, Any]:
    """Rewrite a report folder's files from the per-seed values its ``report.json`` stores, with
    this module's statistics (a report written by older code: its runs are not re-trained, and
    ``note`` says what protocol they followed)."""
    old = json.loads((out_dir / "report.json").read_text())
    if "vs_dcnv2" in old or "gap_closed" in old:  # an ELEC report
        report = {**old, **summarize_elec(old["table"]), "note": note}
        (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (out_dir / "report.md").write_text(render_elec_markdown(report))
        plot_elec_report(report, out_dir / "report.png")
        return report
    n = len(old["seeds"])
    runs = {
        name: [
            {m: row[m]["values"][k] for m in METRICS if m in row and len(row[m]["values"]) == n}
            for k in range(n)
        ]
        for name, row in old["table"].items()
    }
    report = summarize_runs(runs, old["seeds"])
    report.pop("epochs")  # not recorded by the older runs
    report.update({k: old[k] for k in ("data", "label", "minutes") if k in old})
    report["note"] = note
    write_report(report, out_dir)
    return report


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_markdown(report))
    plot_report(report, out_dir / "report.png")


def stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value) and the values themselves."""
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "values": [float(v) for v in values],
    }


def compare(
    values: Sequence[float], base: Sequence[float], metric: str, better: str = "better"
) -> dict[str, Any]:
    """The paired difference ``values - base`` with its interval and verdict."""
    difference = paired_difference(values, base)
    return {
        **difference.as_dict(),
        "verdict": difference.verdict(metric not in LOWER_IS_BETTER, better),
    }


def relevance_score_coverage(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """How many test queries Relevance Score@10 can see (more than 10 distinct items shown),
    from the first run that counted them (a fact of the world, the same in every run)."""
    for per_seed in runs.values():
        for metrics in per_seed:
            if "relevance_score_queries" in metrics:
                return {
                    "relevance_score_coverage": {
                        "queries_moving": int(metrics["relevance_score_queries_moving"]),
                        "queries": int(metrics["relevance_score_queries"]),
                    }
                }
    return {}


def segment_row_counts(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """The test rows of each segment, from the first run that counted them (the first seed's
    world)."""
    for per_seed in runs.values():
        for metrics in per_seed:
            counts = {
                k.removeprefix("rows@"): int(v) for k, v in metrics.items() if k.startswith("rows@")
            }
            if counts:
                return {"segment_rows": counts}
    return {}


def summarize_runs(runs: dict[str, list[dict[str, float]]], seeds: Sequence[int]) -> dict[str, Any]:
    """Per model and metric: mean, std and values over seeds; RelaImpr per seed against that
    seed's Wide&Deep; paired differences against Wide&Deep, against the fusion control, against
    the strongest other Table 1 model per metric and, for ablations, against PRECTR; each run's
    chosen epoch and time."""
    base = runs.get(BASE, [])
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for name, per_seed in runs.items():
        values: dict[str, list[float]] = {m: [] for m in (*METRICS, *SEGMENT_METRICS, *DERIVED)}
        for k, metrics in enumerate(per_seed):
            for m in (*METRICS, *SEGMENT_METRICS):
                if m in metrics:
                    values[m].append(metrics[m])
            if k < len(base):
                values["rela_impr_auc"].append(rela_impr(metrics["auc"], base[k]["auc"]))
                values["rela_impr_gauc"].append(rela_impr(metrics["gauc"], base[k]["gauc"]))
        table[name] = {m: stats(v) for m, v in values.items() if v}

    def paired(name: str, other: str, metric: str, better: str = "better") -> dict[str, Any]:
        return compare(
            table[name][metric]["values"], table[other][metric]["values"], metric, better
        )

    n_seeds = len(seeds)
    shared = [
        m
        for m in (*COMPARED, "logloss", *SEGMENT_METRICS)
        if all(m in row and len(row[m]["values"]) == n_seeds for row in table.values())
    ]
    vs_base = {
        name: {m: paired(name, BASE, m) for m in shared}
        for name in table
        if name != BASE and BASE in table
    }
    vs_prectr = {
        name: {
            m: paired(name, "prectr", m)
            if name in VARIANTS
            else paired("prectr", name, m, better="paid off")
            for m in shared
        }
        for name in table
        if name.startswith("prectr_") and "prectr" in table
    }
    # PRECTR against the control that has its inputs and labels but not its fusion.
    fusion = (
        {m: paired("prectr", CONTROL, m) for m in shared}
        if "prectr" in table and CONTROL in table
        else {}
    )
    # PRECTR against, per metric, the Table 1 row with the best mean (picked on the test figures
    # themselves, which favours the baseline: a verdict for PRECTR here is a conservative one).
    baselines = [n for n in TABLE1 if n in table and n != "prectr"]
    vs_best: dict[str, dict[str, Any]] = {}
    for m in shared if "prectr" in table and baselines else ():
        sign = -1.0 if m in LOWER_IS_BETTER else 1.0
        best = max(baselines, key=lambda n: sign * table[n][m]["mean"])
        vs_best[m] = {"against": best, **paired("prectr", best, m)}
    epochs = {
        name: [
            {
                "seed": seed,
                "best_epoch": metrics.get("best_epoch"),
                "epochs_run": metrics.get("epochs_run"),
                "seconds": metrics.get("train_seconds"),
            }
            for seed, metrics in zip(seeds, per_seed, strict=False)
        ]
        for name, per_seed in runs.items()
    }
    return {
        "seeds": list(seeds),
        "interval": "paired t-interval over seeds, 95%",
        "table": table,
        "vs_base": vs_base,
        "vs_prectr": vs_prectr,
        "fusion": fusion,
        "vs_best": vs_best,
        "epochs": epochs,
    }


def _cell(stats: dict[str, float] | None, digits: int = 4) -> str:
    if stats is None:
        return "-"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def _difference_cell(comparison: dict[str, Any] | None, digits: int = 4) -> str:
    if comparison is None:
        return "-"
    low, high = comparison["low"], comparison["high"]
    interval = (
        f" [{low:+.{digits}f}, {high:+.{digits}f}]"
        if np.isfinite(low) and np.isfinite(high)
        else ""
    )
    verdict = comparison["verdict"]
    shown = f"**{verdict}**" if verdict != NO_DIFFERENCE else verdict
    return f"{comparison['mean']:+.{digits}f}{interval} {shown}"


def render_markdown(report: dict[str, Any]) -> str:
    table = report["table"]
    title = f"# Offline evaluation{' — ' + report['label'] if report.get('label') else ''}"
    protocol = (
        f"**Runs of an earlier protocol:** {report['note']}"
        if report.get("note")
        else "A seed sets the model's initialization, the batch order and the text tower (the "
        "world too where the data path names `{seed}`). Every metric is computed on the "
        "model's own score: the position-free function the service ranks by."
    )
    lines = [
        title,
        "",
        f"Data: `{report['data']}`; seeds {report['seeds']}. {protocol}",
        "",
        "Mean ± std over seeds. Request AUC: click AUC within each request with a click and a "
        "non-click; NDCG@10: per request against the graded relevance labels; Relevance "
        "Score@10: Eq. 13 with MiniLM vectors"
        + _coverage_note(report.get("relevance_score_coverage"))
        + ". Training every run took "
        f"{report.get('minutes', '?')} minutes (the sum of the runs' own times).",
        "",
        f"Comparisons: {report.get('interval', 'paired t-interval over seeds, 95%')}; "
        "a verdict only where the interval excludes 0, else *no difference shown*.",
        "",
        *([f"**Scope:** {report['scope']}", ""] if report.get("scope") else []),
    ]
    shown_metrics = [m for m in METRICS if any(m in row for row in table.values())]
    header = "| model | " + " | ".join(LABELS[m] for m in shown_metrics) + " |"
    rule = "| --- |" + " --- |" * len(shown_metrics)
    others = tuple(n for n in table if n not in TABLE1 + TABLE2)
    for caption, names in (
        ("Table 1: every model", TABLE1),
        ("Table 2: ablations", TABLE2),
        ("Other runs", others),
    ):
        present = [n for n in names if n in table]
        if not present:
            continue
        lines += [f"## {caption}", "", header, rule]
        for name in present:
            row = table[name]
            cells = [_cell(row.get(m)) for m in shown_metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _comparison_table(
        "Against Wide&Deep (paired difference over seeds, 95% interval)",
        report.get("vs_base", {}),
        table,
    )
    fusion = report.get("fusion") or {}
    if fusion:
        lines += [
            "## PRECTR against the fusion control (Wide&Deep with the same inputs and labels)",
            "",
            *(f"- {LABELS[m]}: {_difference_cell(c)}" for m, c in fusion.items() if m in COMPARED),
            "",
        ]
    best = report.get("vs_best") or {}
    if best:
        lines += [
            "## PRECTR against its strongest baseline, per metric",
            "",
            "The Table 1 model with the best mean on that metric (picked on these same test "
            "figures, which favours the baseline).",
            "",
            *(
                f"- {LABELS[m]}, against {c['against']}: {_difference_cell(c)}"
                for m, c in best.items()
                if m in COMPARED
            ),
            "",
        ]
    lines += _segment_tables(report)
    lines += _ablation_verdicts(report.get("vs_prectr", {}))
    lines += _epoch_table(report.get("epochs", {}))
    return "\n".join(lines)


def _segment_tables(report: dict[str, Any]) -> list[str]:
    """Every model by segment (mean ± std), each against Wide&Deep, and PRECTR against the
    fusion control, per segment metric."""
    table = report["table"]
    metrics = [m for m in SEGMENT_METRICS if all(m in row for row in table.values())]
    if not metrics:
        return []
    names = [n for n in dict.fromkeys((*TABLE1, *TABLE2, *table)) if n in table]
    header = "| model | " + " | ".join(metric_label(m) for m in metrics) + " |"
    rule = "| --- |" + " --- |" * len(metrics)
    lines = [
        "## By segment",
        "",
        "Items by their training impressions, queries by whether a training impression carried "
        "them (search requests only); AUC of the segment's test rows, NDCG@10 of its requests."
        + _segment_count_note(report.get("segment_rows") or {}),
        "",
        header,
        rule,
        *(f"| {n} | " + " | ".join(_cell(table[n].get(m)) for m in metrics) + " |" for n in names),
        "",
    ]
    vs_base = report.get("vs_base") or {}
    if vs_base:
        lines += ["### Against Wide&Deep, by segment", "", header, rule]
        for name in (n for n in names if n in vs_base):
            cells = [_difference_cell(vs_base[name].get(m)) for m in metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    fusion = report.get("fusion") or {}
    if any(m in fusion for m in metrics):
        lines += [
            "### PRECTR against the fusion control, by segment",
            "",
            *(
                f"- {metric_label(m)}: {_difference_cell(fusion[m])}"
                for m in metrics
                if m in fusion
            ),
            "",
        ]
    return lines


def _segment_count_note(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    return (
        " Test rows per segment (first seed's world): "
        + ", ".join(f"{SEGMENT_LABELS[name]} {n:,}" for name, n in counts.items())
        + "."
    )


def _coverage_note(coverage: dict[str, int] | None) -> str:
    if not coverage:
        return ""
    return (
        f" (a model can change the top 10 only of queries with more than 10 distinct items "
        f"shown: {coverage['queries_moving']:,} of the {coverage['queries']:,} test queries "
        "here; NDCG@10 covers every request)"
    )


def _comparison_table(
    caption: str, comparisons: dict[str, dict[str, Any]], table: dict[str, Any]
) -> list[str]:
    if not comparisons:
        return []
    metrics = [m for m in COMPARED if any(m in c for c in comparisons.values())]
    lines = [
        f"## {caption}",
        "",
        "| model | " + " | ".join(LABELS[m] for m in metrics) + " | RelaImpr AUC % | "
        "RelaImpr GAUC % |",
        "| --- |" + " --- |" * (len(metrics) + 2),
    ]
    order = [n for n in dict.fromkeys((*TABLE1, *TABLE2, *comparisons)) if n in comparisons]
    for name in order:
        cells = [_difference_cell(comparisons[name].get(m)) for m in metrics]
        relas = [_cell(table[name].get(m), 2) for m in DERIVED]
        lines.append(f"| {name} | " + " | ".join([*cells, *relas]) + " |")
    return [*lines, ""]


def _ablation_verdicts(comparisons: dict[str, dict[str, Any]]) -> list[str]:
    """Whether each component paid off (full PRECTR minus the ablation, paired), and whether
    each variant did better than PRECTR: only what the intervals show."""
    if not comparisons:
        return []
    lines = [
        "## Did each component pay off?",
        "",
        "Full PRECTR minus the ablation (a variant: the variant minus PRECTR), paired over seeds.",
        "",
    ]
    for name, by_metric in comparisons.items():
        if name in VARIANTS:
            what = f"{name} (against PRECTR)"
        else:
            what = name.removeprefix("prectr_no_").replace("_", " ")
        cells = "; ".join(
            f"{LABELS[m]} {_difference_cell(c)}" for m, c in by_metric.items() if m in COMPARED
        )
        shown = {c["verdict"] for m, c in by_metric.items() if m in COMPARED} - {NO_DIFFERENCE}
        summary = ", ".join(sorted(shown)) if shown else NO_DIFFERENCE
        lines.append(f"- **{what}**: {summary} ({cells}).")
    return [*lines, ""]


def _epoch_table(epochs: dict[str, list[dict[str, Any]]]) -> list[str]:
    if not epochs:
        return []
    lines = [
        "## Early stopping: the chosen epoch of every run",
        "",
        "Validation AUC of the model's own score decides (up to the config's epoch limit, "
        "patience 2); the chosen epoch's weights are evaluated.",
        "",
        "| model | chosen epoch / epochs run, per seed | seconds per run (mean) |",
        "| --- | --- | --- |",
    ]
    for name, per_seed in epochs.items():
        chosen = ", ".join(f"{r['best_epoch']}/{r['epochs_run']}" for r in per_seed)
        seconds = [r["seconds"] for r in per_seed if r.get("seconds") is not None]
        mean = f"{np.mean(seconds):.0f}" if seconds else "-"
        lines.append(f"| {name} | {chosen} | {mean} |")
    return [*lines, ""]


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Paired differences against Wide&Deep with their 95% intervals, one panel per metric
    (without Wide&Deep among the runs: each model's mean ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comparisons = report.get("vs_base") or {}
    table = report["table"]
    names = [n for n in dict.fromkeys((*TABLE1, *TABLE2, *comparisons)) if n in comparisons]
    if not names:
        names = list(table)
    metrics = [m for m in ("auc", "gauc", "request_auc", "ndcg_at_10") if m in table[names[0]]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.4 * len(names) + 2))
    y = np.arange(len(names))
    for ax, metric in zip(np.atleast_1d(axes), metrics, strict=True):
        if comparisons:
            rows = [comparisons[n][metric] for n in names]
            means = np.array([r["mean"] for r in rows])
            low = np.array([r["low"] if np.isfinite(r["low"]) else r["mean"] for r in rows])
            high = np.array([r["high"] if np.isfinite(r["high"]) else r["mean"] for r in rows])
            colors = [_VERDICT_COLORS.get(r["verdict"], "tab:gray") for r in rows]
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_title(f"{LABELS[metric]} - Wide&Deep")
        else:
            means = np.array([table[n][metric]["mean"] for n in names])
            spread = np.array([table[n][metric]["std"] for n in names])
            low, high, colors = means - spread, means + spread, ["tab:blue"] * len(names)
            ax.set_title(f"{LABELS[metric]}, mean ± std")
        for k, color in enumerate(colors):  # errorbar takes one color per call
            ax.errorbar(
                means[k],
                y[k],
                xerr=[[means[k] - low[k]], [high[k] - means[k]]],
                fmt="o",
                color=color,
                capsize=3,
            )
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
    what = "paired difference to Wide&Deep, 95% interval" if comparisons else "mean ± std"
    fig.suptitle(f"{report.get('label') or report['data']}: {what} over seeds {report['seeds']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


_VERDICT_COLORS = {"better": "tab:green", "worse": "tab:red"}


ELEC_ROWS: tuple[tuple[str, str], ...] = (
    ("dcnv2", "DCNv2 alone (vanilla structure, no distillation)"),
    ("mllm", "M-LLM (frozen MiniLM + transformation and prediction layers)"),
    ("gain", "gain network (DCNv2 + M-LLM vector)"),
    ("gain_zero", "diagnosis: gain network, M-LLM vector zeroed"),
    ("gain_shuffled", "diagnosis: gain network, M-LLM vector shuffled across rows"),
    ("gain_layernorm", "diagnosis: gain network, M-LLM vector normalized (LayerNorm)"),
    ("gain_disjoint", "diagnosis: gain network, M-LLM cross-fitted on disjoint rows"),
    ("gain_full_text", "diagnosis: gain network, full sample text"),
    ("vanilla_no_clid", "vanilla without CLID"),
    ("vanilla_no_mse", "vanilla without MSE"),
    ("elec_vanilla", "ELEC vanilla"),
    ("gain_norm", "gain network with the normalized injection (LayerNorm)"),
    ("elec_norm_vanilla", "ELEC vanilla distilled from that gain network"),
    ("mllm_fixed", "M-LLM trained to its best validation epoch (up to 10)"),
    ("gain_fixed", "gain network with the fixes: normalized injection, that M-LLM"),
    ("elec_fixed_vanilla", "ELEC vanilla distilled from the fixed gain network"),
)
#: (gain row, the vanilla row distilled from it): the gaps the report says are closed or not.
ELEC_PAIRS: tuple[tuple[str, str], ...] = (
    ("gain", "elec_vanilla"),
    ("gain_norm", "elec_norm_vanilla"),
    ("gain_fixed", "elec_fixed_vanilla"),
)
#: What each distillation beside the paper's changes (the report's paragraph per pair).
_FIXES = {
    "gain_norm": "the normalized injection (LayerNorm on the M-LLM vector)",
    "gain_fixed": "both fixes (normalized injection, M-LLM trained to its best epoch)",
}
#: A full run's gain network -> the diagnosis row of the same gain network trained alone. The
#: two follow the same trajectory (same seed, batches and losses: the teacher side of the
#: distillation is detached) and differ only in the epoch kept: a full run keeps the vanilla
#: network's best validation epoch, a diagnosis run the gain network's own.
_TRAINED_ALONE = {"gain_norm": "gain_layernorm"}
_DIAGNOSIS = {"elec.train_vanilla": False}
#: DCNv2 alone's run: the one report row it gives (metrics unprefixed).
_DCNV2_ROWS = {"dcnv2": ""}
#: run name -> (config overrides, {report row: the prefix of its metrics in the run's metrics}).
ELEC_VARIANTS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "elec": ({}, {"elec_vanilla": "", "gain": "gain_", "mllm": "mllm_"}),
    # ELEC with the normalized injection alone: the diagnosis row that moved the gain network,
    # trained with its vanilla network (its M-LLM is the paper's run's, one epoch, same seed).
    "elec_norm": (
        {"model.params.injection_norm": True},
        {"elec_norm_vanilla": "", "gain_norm": "gain_"},
    ),
    # ELEC with what the diagnosis found: the normalized injection and an M-LLM trained to its
    # best validation epoch rather than for one epoch.
    "elec_fixed": (
        {"model.params.injection_norm": True, "elec.mllm_epochs": 10},
        {"elec_fixed_vanilla": "", "gain_fixed": "gain_", "mllm_fixed": "mllm_"},
    ),
    "elec_no_clid": ({"elec.use_clid": False}, {"vanilla_no_clid": ""}),
    "elec_no_mse": ({"elec.use_rep": False}, {"vanilla_no_mse": ""}),
    "gain_zero": ({**_DIAGNOSIS, "elec.lm_vector": "zero"}, {"gain_zero": "gain_"}),
    "gain_shuffled": ({**_DIAGNOSIS, "elec.lm_vector": "shuffled"}, {"gain_shuffled": "gain_"}),
    "gain_layernorm": (
        {**_DIAGNOSIS, "model.params.injection_norm": True},
        {"gain_layernorm": "gain_"},
    ),
    "gain_disjoint": ({**_DIAGNOSIS, "elec.mllm_rows": "disjoint"}, {"gain_disjoint": "gain_"}),
    "gain_full_text": ({**_DIAGNOSIS, "elec.full_text": True}, {"gain_full_text": "gain_"}),
}
#: The ELEC metrics per row: AUC and LogLoss, and the AUC of every segment (training.segments).
ELEC_METRICS: tuple[str, ...] = ("auc", "logloss", *(f"auc@{s}" for s in SEGMENTS))


def _row_values(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {m: metrics[prefix + m] for m in ELEC_METRICS if prefix + m in metrics}


def adopt_elec_runs(report_json: Path, out_dir: Path) -> list[str]:
    """Take the finished runs an ELEC report recorded as runs of ``out_dir`` (per seed, every
    row a run produced), so the report can grow by seeds or variants without training again what
    it holds. A run is adopted only where the report has every one of its rows for every seed.
    ELEC reports keep only the total of the runs' times, so each adopted run is given an equal
    share of it (the sum stays true). Only for the same data, seeds and training code: the caller
    vouches for that. Returns the run names adopted (a run already in ``out_dir`` is kept)."""
    old = json.loads(report_json.read_text())
    seeds, table = old["seeds"], old["table"]
    run_rows = {"dcnv2": _DCNV2_ROWS, **{name: rows for name, (_, rows) in ELEC_VARIANTS.items()}}
    complete = {
        name: rows
        for name, rows in run_rows.items()
        if all(row in table and len(table[row]["auc"]["values"]) == len(seeds) for row in rows)
    }
    share = old.get("minutes", 0.0) * 60 / max(1, len(complete) * len(seeds))
    adopted = []
    for k, seed in enumerate(seeds):
        for name, rows in complete.items():
            run_dir = out_dir / "runs" / f"{name}-seed{seed}"
            if (run_dir / "metrics.json").is_file():
                continue
            metrics: dict[str, Any] = {
                prefix + m: table[row][m]["values"][k]
                for row, prefix in rows.items()
                for m in table[row]
                if len(table[row][m]["values"]) == len(seeds)
            }
            if k == 0:  # the report counts segment rows on its first seed's world
                metrics.update({f"rows@{s}": n for s, n in old.get("segment_rows", {}).items()})
            meta = {"seconds": share, "adopted_from": str(report_json), "seconds_are": "a share"}
            _write_adopted_run(run_dir, metrics, meta)
            adopted.append(run_dir.name)
    return adopted


def run_elec_report(
    data_dir: Path,
    out_dir: Path,
    *,
    seeds: Sequence[int] = SEEDS,
    config: Path = CONFIG_DIR / "elec.toml",
    overrides: dict[str, Any] | None = None,
    variants: Sequence[str] = tuple(ELEC_VARIANTS),
    timing_sizes: tuple[int, ...] = (1, 100, 500),
    label: str = "",
) -> dict[str, Any]:
    """ELEC's Tables 2-3 (AUC, LogLoss, by segment, over seeds), its diagnosis rows and Table 5
    (ms per request) analogs. The files are rewritten after every seed."""
    from training.distill import run_elec, time_per_request

    seconds = 0.0
    values: dict[str, dict[str, list[float]]] = {}
    timing: dict[str, dict[str, float]] = {}
    timing_path = out_dir / "timing.json"
    if timing_path.is_file():
        timing = json.loads(timing_path.read_text())
    segment_rows: dict[str, int] = {}
    reach: list[dict[str, dict[str, float]]] = []
    report: dict[str, Any] = {}
    for k, seed in enumerate(seeds):
        base = {**(overrides or {}), **seed_overrides(seed)}
        world = data_of_seed(data_dir, seed)
        reach += _text_reach(world)
        runs: dict[str, tuple[Path, dict[str, str]]] = {
            "dcnv2": (out_dir / "runs" / f"dcnv2-seed{seed}", _DCNV2_ROWS)
        }
        if not (runs["dcnv2"][0] / "metrics.json").is_file():
            run_training(load_config(config, base), world, runs["dcnv2"][0])
        for variant in variants:
            switch, rows = ELEC_VARIANTS[variant]
            run_dir = out_dir / "runs" / f"{variant}-seed{seed}"
            runs[variant] = (run_dir, rows)
            if not (run_dir / "metrics.json").is_file():
                log.info("training %s seed %d", variant, seed)
                result = run_elec(load_config(config, {**base, **switch}), world, run_dir)
                if variant == "elec" and not timing and timing_sizes:
                    timing = time_per_request(result, timing_sizes)
                    timing_path.parent.mkdir(parents=True, exist_ok=True)
                    timing_path.write_text(json.dumps(timing, indent=2) + "\n")
        for run_dir, rows in runs.values():
            metrics = drop_small_segments(json.loads((run_dir / "metrics.json").read_text()))
            seconds += json.loads((run_dir / "meta.json").read_text()).get("seconds", 0.0)
            segment_rows = segment_rows or {
                key.removeprefix("rows@"): int(v)
                for key, v in metrics.items()
                if key.startswith("rows@")
            }
            for row, prefix in rows.items():
                for m, v in _row_values(metrics, prefix).items():
                    values.setdefault(row, {}).setdefault(m, []).append(v)
        table: dict[str, dict[str, dict[str, Any]]] = {
            row: {m: stats(v) for m, v in by_metric.items()} for row, by_metric in values.items()
        }
        report = {
            "data": str(data_dir),
            "label": label,
            "seeds": list(seeds[: k + 1]),
            **summarize_elec(table),
            "segment_rows": segment_rows,
            **({"text_reach": _reach_stats(reach)} if reach else {}),
            "timing_ms": timing,
            "minutes": round(seconds / 60, 1),
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (out_dir / "report.md").write_text(render_elec_markdown(report))
        plot_elec_report(report, out_dir / "report.png")
    return report


def _text_reach(world: Path) -> list[dict[str, dict[str, float]]]:
    """The oracle's text reach by segment of a generated world with worded quality (empty for
    any other world, or one not on disk: a report of adopted runs needs no data)."""
    from training.data.summary import text_reach_by_segment
    from training.data.tables import World

    if not (world / "world.json").is_file():
        return []
    loaded = World.load(world, mmap=True)
    return [text_reach_by_segment(loaded)] if "worded_quality" in loaded.items else []


def _reach_stats(
    reach: list[dict[str, dict[str, float]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per segment and figure (words_unread, words_read, reach): its stats over the worlds."""
    segments = [s for s in SEGMENTS if all(s in world for world in reach)]
    return {
        s: {key: stats([world[s][key] for world in reach]) for key in reach[0][s]} for s in segments
    }


def summarize_elec(table: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Every row against DCNv2 alone (paired over seeds, per metric and segment) and, per
    distillation and metric, the share of its gain network's gap its vanilla network closes
    (only where that gain network is shown better)."""
    alone = table["dcnv2"]
    vs_dcnv2 = {
        row: {
            m: compare(table[row][m]["values"], alone[m]["values"], m)
            for m in table[row]
            if m in alone and len(alone[m]["values"]) == len(table[row][m]["values"])
        }
        for row in table
        if row != "dcnv2"
    }
    gaps = {
        vanilla_row: shares
        for gain_row, vanilla_row in ELEC_PAIRS
        if (shares := _gap_shares(table, gain_row, vanilla_row, vs_dcnv2.get(gain_row, {})))
    }
    return {
        "interval": "paired t-interval over seeds, 95%",
        "table": table,
        "vs_dcnv2": vs_dcnv2,
        "gap_closed": gaps.get("elec_vanilla", {}).get("auc", float("nan")),
        "gap_closed_by_vanilla": gaps,
        # What each diagnosis did to the gain network (the diagnosis row minus the gain row).
        "vs_gain": {
            row: {
                m: compare(table[row][m]["values"], table["gain"][m]["values"], m)
                for m in table[row]
                if m in table["gain"]
                and len(table["gain"][m]["values"]) == len(table[row][m]["values"])
            }
            for row in table
            if row.startswith("gain_") and row not in _FIXES and "gain" in table
        },
    }


def metric_label(metric: str) -> str:
    """ "AUC", or "AUC, cold items (none)" for a segment metric."""
    if "@" not in metric:
        return LABELS[metric]
    name, segment = metric.split("@")
    return f"{LABELS[name]}, {SEGMENT_LABELS[segment]}"


def render_elec_markdown(report: dict[str, Any]) -> str:
    table, timing = report["table"], report.get("timing_ms") or {}
    vs = report.get("vs_dcnv2", {})
    title = report.get("label") or f"`{report['data']}`"
    lines = [
        f"# ELEC on {title}",
        "",
        f"Data: `{report['data']}`; seeds {report['seeds']} (each sets initialization, batch "
        "order and text tower, and the world where the path names `{seed}`); test split; mean "
        "± std over seeds; against DCNv2 alone: the paired difference over seeds with its 95% "
        "t-interval, a verdict only where it excludes 0. Every score is the network's own, "
        "position-free. The gain network of a full ELEC run is kept at the epoch the "
        "vanilla network's validation AUC chose (they train jointly, and that is the run's early "
        "stopping); a diagnosis row trains the gain network alone and keeps its own best epoch. "
        "Training every run took "
        f"{report.get('minutes', '?')} minutes (the sum of the runs' own times).",
        "",
        *([f"**Note:** {report['note']}", ""] if report.get("note") else []),
        "## Tables 2 and 3 analog",
        "",
        "| model | AUC | LogLoss | AUC - DCNv2 alone | LogLoss - DCNv2 alone |",
        "| --- | --- | --- | --- | --- |",
    ]
    rows = [(r, label) for r, label in ELEC_ROWS if r in table]
    for row, label in rows:
        against = vs.get(row, {})
        lines.append(
            f"| {label} | {_cell(table[row].get('auc'))} | {_cell(table[row].get('logloss'))}"
            f" | {_difference_cell(against.get('auc'))}"
            f" | {_difference_cell(against.get('logloss'))} |"
        )
    lines += ["", *_elec_verdict(report), ""]
    segments = [s for s in SEGMENTS if f"auc@{s}" in table.get("dcnv2", {})]
    if segments:
        counts = report.get("segment_rows", {})
        lines += [
            "## By segment: test AUC",
            "",
            "Items by their training impressions, queries by whether a training impression "
            "carried them (search requests only)." + _segment_count_note(counts),
            "",
            "| model | " + " | ".join(SEGMENT_LABELS[s] for s in segments) + " |",
            "| --- |" + " --- |" * len(segments),
        ]
        for row, label in rows:
            cells = [_cell(table[row].get(f"auc@{s}")) for s in segments]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "## By segment: AUC against DCNv2 alone",
            "",
            "| model | " + " | ".join(SEGMENT_LABELS[s] for s in segments) + " |",
            "| --- |" + " --- |" * len(segments),
        ]
        for row, label in rows[1:] if rows and rows[0][0] == "dcnv2" else rows:
            cells = [_difference_cell(vs.get(row, {}).get(f"auc@{s}")) for s in segments]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        labels = dict(ELEC_ROWS)
        for vanilla_row, closed in (report.get("gap_closed_by_vanilla") or {}).items():
            lines += [
                f"Share of its gain network's gap over DCNv2 alone that the "
                f"{labels[vanilla_row]} closes, where that gain network is shown better: "
                + ", ".join(f"{metric_label(m)} {v:.0%}" for m, v in closed.items())
                + ".",
                "",
            ]
    lines += _diagnosis_lines(report)
    lines += _text_reach_lines(report)
    if timing:
        sizes = list(timing["vanilla"])
        lines += [
            "## Table 5 analog: milliseconds per request (median), this machine",
            "",
            "| model | " + " | ".join(f"{n} candidates" for n in sizes) + " |",
            "| --- |" + " --- |" * len(sizes),
        ]
        for name, label in (
            ("mllm", "M-LLM (MiniLM online)"),
            ("gain", "gain network (MiniLM online)"),
            ("vanilla", "vanilla network"),
        ):
            lines.append(
                f"| {label} | " + " | ".join(f"{timing[name][n]:.2f}" for n in sizes) + " |"
            )
        ratio = timing["gain"][sizes[1]] / timing["vanilla"][sizes[1]] if len(sizes) > 1 else 0
        lines += [
            "",
            f"At {sizes[1] if len(sizes) > 1 else '?'} candidates the gain network is "
            f"{ratio:.0f}x slower than the vanilla network, whose time involves no "
            "language model at all.",
            "",
        ]
    return "\n".join(lines)


def _diagnosis_lines(report: dict[str, Any]) -> list[str]:
    """What each diagnosis did to the gain network, said from its paired intervals."""
    vs_gain = report.get("vs_gain") or {}
    if not vs_gain:
        return []
    labels = dict(ELEC_ROWS)
    lines = [
        "## The diagnosis: what moved the gain network",
        "",
        "Each diagnosis row minus the gain network, paired over seeds (AUC overall and by "
        "segment).",
        "",
    ]
    for row, by_metric in vs_gain.items():
        cells = "; ".join(
            f"{metric_label(m)} {_difference_cell(c)}"
            for m, c in by_metric.items()
            if m.startswith("auc")
        )
        verdicts = {c["verdict"] for m, c in by_metric.items() if m.startswith("auc")}
        moved = [w for v, w in (("better", "raised it"), ("worse", "lowered it")) if v in verdicts]
        summary = " and ".join(moved) if moved else "did not move it (no difference shown)"
        lines.append(f"- **{labels[row].removeprefix('diagnosis: ')}**: {summary} ({cells}).")
    return [*lines, ""]


def _text_reach_lines(report: dict[str, Any]) -> list[str]:
    """The most reading the item text can add, by segment (the world's oracle), beside how
    wide the gain network's paired interval against DCNv2 alone is there: where the first is
    smaller than the second, no report of this size could show the text's gain."""
    reach = report.get("text_reach") or {}
    if not reach:
        return []
    rows = ("gain_layernorm", "gain_norm", "gain_fixed", "gain", "dcnv2")
    gain_row = next(r for r in rows if r in report["table"])
    versus = report["vs_dcnv2"].get(gain_row, {})
    n_worlds = len(next(iter(reach.values()))["reach"]["values"])
    lines = [
        "## What reading the words can add at most, by segment",
        "",
        "The planted P(click) of the test rows (every other factor exact) with the items' "
        "quality unknown, and with its worded part known but not its latent part: what a model "
        "that reads the item text, and learnt nothing from the item's id, can know of quality "
        f"(as on a cold item). Mean over {n_worlds} worlds (min to max); beside it, the "
        f"half-width of the {dict(ELEC_ROWS)[gain_row]}'s paired 95% interval against DCNv2 "
        "alone on that segment.",
        "",
        "| segment | oracle AUC, quality unknown | worded part read | reach | half-width of "
        "the interval |",
        "| --- | --- | --- | --- | --- |",
    ]
    for segment, cell in reach.items():
        spread = cell["reach"]["values"]
        interval = versus.get(f"auc@{segment}")
        half = f"{(interval['high'] - interval['low']) / 2:.4f}" if interval else "-"
        lines.append(
            f"| {SEGMENT_LABELS[segment]} | {cell['words_unread']['mean']:.4f} | "
            f"{cell['words_read']['mean']:.4f} | +{cell['reach']['mean']:.4f} "
            f"({min(spread):+.4f} to {max(spread):+.4f}) | {half} |"
        )
    return [*lines, ""]


def _elec_verdict(report: dict[str, Any]) -> list[str]:
    """Whether ELEC's distillation paid off, and whether the sanity rows hold, said plainly
    with the intervals behind them."""
    table, vs = report["table"], report["vs_dcnv2"]
    lines: list[str] = []
    for row, what in (("gain_zero", "zeroed"), ("gain_shuffled", "shuffled across rows")):
        if row in vs and "auc" in vs[row]:
            versus = vs[row]["auc"]
            holds = versus["verdict"] == NO_DIFFERENCE
            lines += [
                f"**Sanity (vector {what}):** the gain network with its M-LLM vector {what} is "
                + (
                    "within the interval of DCNv2 alone"
                    if holds
                    else f"{versus['verdict']} than DCNv2 alone: the injection itself moves it"
                )
                + f" ({_difference_cell(versus)}).",
                "",
            ]
    closed_by = report.get("gap_closed_by_vanilla") or {}
    for gain_row, vanilla_row in ELEC_PAIRS:
        if gain_row not in _FIXES or gain_row not in vs or vanilla_row not in vs:
            continue
        closed = closed_by.get(vanilla_row, {})
        shares = ", ".join(f"{metric_label(m)} {v:.0%}" for m, v in closed.items())
        lines += [
            f"**ELEC with {_FIXES[gain_row]}**: the gain network (kept at the vanilla "
            "network's best epoch) is "
            + _versus_cells(vs[gain_row])
            + " against DCNv2 alone; the vanilla network distilled from it "
            + _versus_cells(vs[vanilla_row])
            + (
                f". Of the gain network's gap where it is shown, the vanilla network closes "
                f"{shares}."
                if shares
                else ". The gain network is shown above DCNv2 alone nowhere: no gap to close."
            ),
            "",
        ]
        alone = _TRAINED_ALONE.get(gain_row)
        if alone is not None and alone in vs:
            shares = ", ".join(
                f"{metric_label(m)} {share:.0%}"
                for m, share in _gap_shares(table, alone, vanilla_row, vs[alone]).items()
            )
            lines += [
                "The same gain network trained alone and kept at its own best epoch (the "
                "diagnosis row) is "
                + _versus_cells(vs[alone])
                + (
                    f"; of that gap the vanilla network above closes {shares}."
                    if shares
                    else "; it is shown above DCNv2 alone nowhere either."
                ),
                "",
            ]
    if "gain" not in table or "elec_vanilla" not in table:
        return lines
    gain, alone, vanilla = table["gain"]["auc"], table["dcnv2"]["auc"], table["elec_vanilla"]["auc"]
    gain_vs = vs["gain"]["auc"]
    if gain_vs["verdict"] == "better":
        return [
            *lines,
            f"The gain network is above DCNv2 alone ({_difference_cell(gain_vs)}), and the ELEC "
            f"vanilla network closes {report['gap_closed']:.0%} of that gap "
            f"({_difference_cell(vs['elec_vanilla']['auc'])} against DCNv2 alone).",
        ]
    where = "below" if gain_vs["verdict"] == "worse" else "not shown above"
    return [
        *lines,
        f"**ELEC with the raw injection did not pay off: there is no gap to close.** The gain "
        f"network is "
        f"{where} DCNv2 alone ({gain['mean']:.4f} against {alone['mean']:.4f}; paired "
        f"difference {_difference_cell(gain_vs)}), and distilling from it moves the vanilla "
        f"network to {vanilla['mean']:.4f} ({_difference_cell(vs['elec_vanilla']['auc'])}). "
        "The segments below say where it does and does not.",
    ]


def _gap_shares(
    table: dict[str, Any], gain_row: str, vanilla_row: str, versus: dict[str, dict[str, Any]]
) -> dict[str, float]:
    """Per metric where ``gain_row`` is shown above DCNv2 alone: the share of that gap the
    vanilla network of ``vanilla_row`` closes."""
    alone = table["dcnv2"]
    return {
        m: (table[vanilla_row][m]["mean"] - alone[m]["mean"])
        / (table[gain_row][m]["mean"] - alone[m]["mean"])
        for m, c in versus.items()
        if c["verdict"] == "better" and m in table.get(vanilla_row, {})
    }


def _versus_cells(versus: dict[str, dict[str, Any]]) -> str:
    """AUC overall and on the tail and cold items, each with its interval and verdict."""
    cells = [
        f"{metric_label(m)} {_difference_cell(versus[m])}"
        for m in ("auc", "auc@tail_items", "auc@cold_items")
        if m in versus
    ]
    return "; ".join(cells)


def plot_elec_report(report: dict[str, Any], path: Path) -> None:
    """AUC minus DCNv2 alone with its 95% interval, a panel overall and one per segment; the
    Table 5 analog beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, timing, vs = report["table"], report.get("timing_ms") or {}, report["vs_dcnv2"]
    metrics = ["auc", *(f"auc@{s}" for s in SEGMENTS if f"auc@{s}" in table["dcnv2"])]
    rows = [r for r, _ in ELEC_ROWS if r in vs]
    panels = len(metrics) + (1 if timing else 0)
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 0.35 * len(rows) + 2.2))
    axes = np.atleast_1d(axes)
    y = np.arange(len(rows))
    for ax, metric in zip(axes, metrics, strict=False):
        for k, row in enumerate(rows):
            c = vs[row].get(metric)
            if c is None:
                continue
            low = c["low"] if np.isfinite(c["low"]) else c["mean"]
            high = c["high"] if np.isfinite(c["high"]) else c["mean"]
            ax.errorbar(
                c["mean"],
                k,
                xerr=[[c["mean"] - low], [high - c["mean"]]],
                fmt="o",
                capsize=3,
                color=_VERDICT_COLORS.get(c["verdict"], "tab:gray"),
            )
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, rows if ax is axes[0] else [""] * len(rows), fontsize=8)
        ax.invert_yaxis()
        title = "AUC" if metric == "auc" else SEGMENT_LABELS[metric.split("@")[1]]
        ax.set_title(f"{title}\n- DCNv2 alone", fontsize=9)
    if timing:
        ax = axes[-1]
        sizes = [int(n) for n in timing["vanilla"]]
        for name in ("mllm", "gain", "vanilla"):
            ax.plot(sizes, [timing[name][str(n)] for n in sizes], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("candidates per request")
        ax.set_ylabel("ms per request (median)")
        ax.legend(fontsize=8)
        ax.set_title("Table 5 analog", fontsize=9)
    fig.suptitle(f"ELEC on {report.get('label') or report['data']}: seeds {report['seeds']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
