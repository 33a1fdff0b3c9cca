"""Evaluation reports: PRECTR's Table 1 (every model) and Table 2 (ablations), 3 seeds each.

`run_report` trains every (config, seed) it is given (reusing finished runs), gathers the test
metrics and writes ``report.json``, ``report.md`` and ``report.png``: mean and standard deviation
over seeds of AUC, GAUC, LogLoss, RelaImpr against Wide&Deep and Relevance Score@10, plus the
significance of PRECTR against Wide&Deep.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluate import rela_impr
from training.train import load_config, run_training

log = logging.getLogger(__name__)

TABLE1: tuple[str, ...] = ("lr", "dnn", "wide_deep", "deepfm", "dcnv2", "din", "sukd", "prectr")
TABLE2: tuple[str, ...] = (
    "wide_deep",
    "prectr_no_two_stage",
    "prectr_no_regularization",
    "prectr_no_incentive",
    "prectr",
)
METRICS: tuple[str, ...] = ("auc", "gauc", "logloss", "rela_impr", "relevance_score_at_10")
BASE = "wide_deep"
CONFIG_DIR = Path(__file__).parent / "configs"


def run_report(
    data_dir: Path,
    out_dir: Path,
    *,
    configs: Sequence[str] = tuple(dict.fromkeys(TABLE1 + TABLE2)),
    seeds: Sequence[int] = (0, 1, 2),
    config_dir: Path = CONFIG_DIR,
    label: str = "",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train what is missing, then write the report files; returns the report record."""
    started = time.perf_counter()
    runs: dict[str, list[dict[str, float]]] = {}
    for name in configs:
        for seed in seeds:
            run_dir = out_dir / "runs" / f"{name}-seed{seed}"
            metrics_path = run_dir / "metrics.json"
            if not metrics_path.is_file():
                cfg = load_config(
                    config_dir / f"{name}.toml", {**(overrides or {}), "train.seed": seed}
                )
                log.info("training %s seed %d", name, seed)
                run_training(cfg, data_dir, run_dir)
            runs.setdefault(name, []).append(json.loads(metrics_path.read_text()))
    report = summarize_runs(runs, seeds)
    report.update(
        {
            "data": str(data_dir),
            "label": label,
            "minutes": round((time.perf_counter() - started) / 60, 1),
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_markdown(report))
    plot_report(report, out_dir / "report.png")
    return report


def summarize_runs(runs: dict[str, list[dict[str, float]]], seeds: Sequence[int]) -> dict[str, Any]:
    """Mean and std per model and metric; RelaImpr per seed against that seed's Wide&Deep."""
    base_auc = [r["auc"] for r in runs.get(BASE, [])]
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for name, per_seed in runs.items():
        values: dict[str, list[float]] = {m: [] for m in METRICS}
        for k, metrics in enumerate(per_seed):
            for m in METRICS:
                if m == "rela_impr":
                    if k < len(base_auc):
                        values[m].append(rela_impr(metrics["auc"], base_auc[k]))
                else:
                    values[m].append(metrics[m])
        table[name] = {
            m: {
                "mean": float(np.mean(v)),
                "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                "values": [float(x) for x in v],
            }
            for m, v in values.items()
            if v
        }
    significance: dict[str, Any] = {}
    if "prectr" in table and BASE in table:
        for m in ("auc", "gauc", "relevance_score_at_10"):
            gap = table["prectr"][m]["mean"] - table[BASE][m]["mean"]
            spread = max(table["prectr"][m]["std"], table[BASE][m]["std"], 1e-12)
            significance[m] = {
                "gap": gap,
                "gap_in_std": gap / spread,
                "beats_by_2_std": bool(gap > 2 * spread),
            }
    return {"seeds": list(seeds), "table": table, "prectr_vs_wide_deep": significance}


def _cell(stats: dict[str, float] | None, digits: int = 4) -> str:
    if stats is None:
        return "-"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    table = report["table"]
    title = f"# Offline evaluation{' — ' + report['label'] if report.get('label') else ''}"
    lines = [
        title,
        "",
        f"Data: `{report['data']}`; seeds {report['seeds']}; mean ± std over seeds; "
        f"RelaImpr (Eq. 12) against Wide&Deep of the same seed; Relevance Score@10 (Eq. 13) "
        f"with MiniLM vectors. Took {report.get('minutes', '?')} minutes.",
        "",
    ]
    header = "| model | AUC | GAUC | LogLoss | RelaImpr % | Relevance Score@10 |"
    rule = "| --- | --- | --- | --- | --- | --- |"
    for caption, names in (("Table 1: every model", TABLE1), ("Table 2: ablations", TABLE2)):
        present = [n for n in names if n in table]
        if not present:
            continue
        lines += [f"## {caption}", "", header, rule]
        for name in present:
            row = table[name]
            lines.append(
                f"| {name} | {_cell(row.get('auc'))} | {_cell(row.get('gauc'))} | "
                f"{_cell(row.get('logloss'))} | {_cell(row.get('rela_impr'), 2)} | "
                f"{_cell(row.get('relevance_score_at_10'))} |"
            )
        lines.append("")
    sig = report.get("prectr_vs_wide_deep") or {}
    if sig:
        lines += ["## PRECTR against Wide&Deep", ""]
        for metric, s in sig.items():
            verdict = "more than 2 std" if s["beats_by_2_std"] else "NOT by 2 std"
            lines.append(f"- {metric}: gap {s['gap']:+.4f} = {s['gap_in_std']:.1f} std ({verdict})")
        lines.append("")
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = report["table"]
    names = [n for n in dict.fromkeys(TABLE1 + TABLE2) if n in table]
    metrics = [m for m in ("auc", "gauc", "relevance_score_at_10") if m in table[names[0]]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.5))
    for ax, metric in zip(np.atleast_1d(axes), metrics, strict=True):
        means = [table[n][metric]["mean"] for n in names]
        stds = [table[n][metric]["std"] for n in names]
        colors = [
            "tab:red" if n == "prectr" else "tab:orange" if n.startswith("prectr") else "tab:blue"
            for n in names
        ]
        ax.bar(range(len(names)), means, yerr=stds, color=colors, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        low = min(m - s for m, s in zip(means, stds, strict=True))
        high = max(m + s for m, s in zip(means, stds, strict=True))
        ax.set_ylim(low - 0.1 * (high - low + 1e-6), high + 0.1 * (high - low + 1e-6))
        ax.set_title(metric)
    fig.suptitle(
        f"{report.get('label') or report['data']}: mean ± std over seeds {report['seeds']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
