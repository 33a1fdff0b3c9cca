"""Reports: runs over seeds become Markdown, JSON and a PNG; the CLI drives it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from training.report import render_markdown, run_report, summarize_runs

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def test_summary_has_mean_std_rela_impr_and_significance() -> None:
    runs = {
        "wide_deep": [
            {"auc": 0.70, "gauc": 0.6, "logloss": 0.4, "relevance_score_at_10": 0.4},
            {"auc": 0.71, "gauc": 0.6, "logloss": 0.4, "relevance_score_at_10": 0.4},
        ],
        "prectr": [
            {"auc": 0.75, "gauc": 0.7, "logloss": 0.3, "relevance_score_at_10": 0.5},
            {"auc": 0.76, "gauc": 0.7, "logloss": 0.3, "relevance_score_at_10": 0.5},
        ],
    }
    report = summarize_runs(runs, [0, 1])
    prectr = report["table"]["prectr"]
    assert abs(prectr["auc"]["mean"] - 0.755) < 1e-9
    assert abs(prectr["rela_impr"]["values"][0] - 25.0) < 1e-9  # (0.25 / 0.20 - 1) * 100
    assert report["prectr_vs_wide_deep"]["auc"]["beats_by_2_std"]
    assert "Table 1" in render_markdown({**report, "data": "x"})


def test_report_trains_each_seed_and_writes_md_json_png(
    encoded_tiny_world: Path, tmp_path: Path
) -> None:
    report = run_report(
        encoded_tiny_world,
        tmp_path,
        configs=["prectr_tiny"],
        seeds=[0, 1],
        config_dir=CONFIGS,
        overrides={"train.epochs": 1},
    )
    assert len(report["table"]["prectr_tiny"]["auc"]["values"]) == 2
    for name in ("report.md", "report.json", "report.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "report.json").read_text())["seeds"] == [0, 1]


def test_ranker_train_command(encoded_tiny_world: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "train",
            "--config",
            str(CONFIGS / "prectr_tiny.toml"),
            "--data",
            str(encoded_tiny_world),
            "--out",
            str(tmp_path / "run"),
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["config"]["train"]["seed"] == 3
    evaluated = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "train",
            "eval",
            str(tmp_path / "run"),
            "--data",
            str(encoded_tiny_world),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["auc"] > 0.6
