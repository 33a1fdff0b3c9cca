"""Reports: runs over seeds become Markdown, JSON and a PNG; the CLI drives it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from training.report import (
    adopt_elec_runs,
    adopt_runs,
    render_markdown,
    resummarize,
    run_elec_report,
    run_report,
    stats,
    summarize_elec,
    summarize_runs,
    write_report,
)

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def _run(auc: float, gauc: float, ndcg: float) -> dict[str, float]:
    return {
        "auc": auc,
        "gauc": gauc,
        "logloss": 0.4,
        "request_auc": auc - 0.05,
        "ndcg_at_10": ndcg,
        "relevance_score_at_10": 0.4,
        "best_epoch": 3,
        "epochs_run": 5,
        "train_seconds": 12.0,
    }


def test_summary_compares_by_paired_intervals_and_says_only_what_they_show() -> None:
    runs = {
        "wide_deep": [_run(0.70, 0.60, 0.50), _run(0.71, 0.61, 0.52), _run(0.72, 0.60, 0.49)],
        # AUC +0.05 in every seed: shown; NDCG up in one seed, down in another: not shown
        "prectr": [_run(0.75, 0.62, 0.56), _run(0.76, 0.63, 0.46), _run(0.77, 0.62, 0.50)],
        "prectr_no_incentive": [
            _run(0.74, 0.62, 0.56),
            _run(0.75, 0.63, 0.46),
            _run(0.76, 0.62, 0.50),
        ],
    }
    report = summarize_runs(runs, [0, 1, 2])
    prectr = report["table"]["prectr"]
    assert abs(prectr["auc"]["mean"] - 0.76) < 1e-9
    assert abs(prectr["rela_impr_auc"]["values"][0] - 25.0) < 1e-9  # (0.25 / 0.20 - 1) * 100
    assert abs(prectr["rela_impr_gauc"]["values"][0] - 20.0) < 1e-9  # (0.12 / 0.10 - 1) * 100
    auc = report["vs_base"]["prectr"]["auc"]
    assert auc["low"] > 0 and auc["verdict"] == "better"
    ndcg = report["vs_base"]["prectr"]["ndcg_at_10"]
    assert ndcg["low"] < 0 < ndcg["high"] and ndcg["verdict"] == "no difference shown"
    # the incentive: PRECTR minus the ablation is +0.01 AUC in every seed, so it paid off there
    incentive = report["vs_prectr"]["prectr_no_incentive"]
    assert incentive["auc"]["verdict"] == "paid off"
    assert incentive["ndcg_at_10"]["verdict"] == "no difference shown"
    assert report["epochs"]["prectr"][0] == {
        "seed": 0,
        "best_epoch": 3,
        "epochs_run": 5,
        "seconds": 12.0,
    }
    assert report["fusion"] == {}  # no control among these runs
    with_control = summarize_runs(
        {
            **runs,
            "wide_deep_pair": [_run(0.71, 0.6, 0.5), _run(0.72, 0.6, 0.5), _run(0.72, 0.6, 0.5)],
        },
        [0, 1, 2],
    )
    assert with_control["fusion"]["auc"]["verdict"] == "better"  # PRECTR above its control
    # the strongest baseline per metric: the control on AUC (0.7167 > W&D's 0.71), W&D on NDCG
    best = with_control["vs_best"]
    assert best["auc"]["against"] == "wide_deep_pair" and best["auc"]["verdict"] == "better"
    assert best["ndcg_at_10"]["against"] == "wide_deep"
    assert best["logloss"]["against"] in ("wide_deep", "wide_deep_pair")
    assert "prectr_no_incentive" not in {c["against"] for c in best.values()}  # not Table 1
    markdown = render_markdown({**report, "data": "x"})
    assert "Table 1" in markdown and "**better**" in markdown and "3/5" in markdown
    assert "against its strongest baseline" in markdown and "against wide_deep:" in markdown
    assert "std)" not in markdown and "2 std" not in markdown


def _tiny_report(world: Path, out: Path) -> dict[str, Any]:
    """The tiny PRECTR over seeds 0 and 1, one epoch each."""
    return run_report(
        world,
        out,
        configs=["prectr_tiny"],
        seeds=[0, 1],
        config_dir=CONFIGS,
        overrides={"train.epochs": 1},
    )


def test_report_trains_each_seed_and_writes_md_json_png(
    encoded_tiny_world: Path, tmp_path: Path
) -> None:
    report = _tiny_report(encoded_tiny_world, tmp_path)
    assert len(report["table"]["prectr_tiny"]["auc"]["values"]) == 2
    assert report["epochs"]["prectr_tiny"][1]["epochs_run"] == 1
    assert "ndcg_at_10" in report["table"]["prectr_tiny"]
    for name in ("report.md", "report.json", "report.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "report.json").read_text())["seeds"] == [0, 1]


def test_an_interrupted_report_keeps_the_seeds_it_finished(
    encoded_tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.report

    train = training.report.run_training

    def stopped_at_seed_1(cfg: Any, world: Path, out: Path) -> Any:
        if cfg.train.seed == 1:
            raise KeyboardInterrupt
        return train(cfg, world, out)

    monkeypatch.setattr(training.report, "run_training", stopped_at_seed_1)
    with pytest.raises(KeyboardInterrupt):
        _tiny_report(encoded_tiny_world, tmp_path)
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["seeds"] == [0]
    assert len(written["table"]["prectr_tiny"]["auc"]["values"]) == 1
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.png").is_file()


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


def test_an_older_report_is_resummarized_from_its_per_seed_values(tmp_path: Path) -> None:
    def row(values: list[float]) -> dict[str, object]:
        return {"mean": sum(values) / len(values), "std": 0.0, "values": values}

    older = {  # the layout of report.json before paired intervals (mean, std, values)
        "seeds": [0, 1, 2],
        "data": "data/x",
        "label": "older",
        "minutes": 3.0,
        "prectr_vs_wide_deep": {"auc": {"gap_in_std": 2.4, "beats_by_2_std": True}},
        "table": {
            name: {m: row(v) for m in ("auc", "gauc", "logloss", "relevance_score_at_10")}
            for name, v in (("wide_deep", [0.70, 0.71, 0.72]), ("prectr", [0.71, 0.70, 0.74]))
        },
    }
    (tmp_path / "report.json").write_text(json.dumps(older))
    report = resummarize(tmp_path, "runs of the previous protocol")
    assert "prectr_vs_wide_deep" not in report
    assert report["vs_base"]["prectr"]["auc"]["verdict"] == "no difference shown"
    markdown = (tmp_path / "report.md").read_text()
    assert "runs of the previous protocol" in markdown and "std)" not in markdown
    assert (tmp_path / "report.png").stat().st_size > 0


def test_a_report_grows_by_adopting_the_runs_another_recorded(tmp_path: Path) -> None:
    """Runs adopted from a report.json give back the same table, chosen epochs and minutes;
    nothing is trained for them (a run that had to train would need data, and there is none)."""
    runs = {
        "wide_deep": [_run(0.70, 0.60, 0.50), _run(0.71, 0.61, 0.52), _run(0.72, 0.60, 0.49)],
        "prectr": [_run(0.75, 0.62, 0.56), _run(0.76, 0.63, 0.46), _run(0.77, 0.62, 0.50)],
    }
    old = summarize_runs(runs, [0, 1, 2])
    old.update({"data": "nowhere", "label": "", "minutes": 1.2})
    write_report(old, tmp_path / "old")
    out = tmp_path / "new"
    adopted = adopt_runs(tmp_path / "old" / "report.json", out)
    assert len(adopted) == 6
    assert adopt_runs(tmp_path / "old" / "report.json", out) == []  # kept, not rewritten
    grown = run_report(tmp_path / "no-data", out, configs=["wide_deep", "prectr"], seeds=[0, 1, 2])
    assert grown["table"] == old["table"]
    assert grown["vs_base"] == old["vs_base"]
    assert grown["epochs"] == old["epochs"]
    assert grown["minutes"] == 1.2  # 6 runs of 12 s


def test_an_elec_report_grows_by_adopting_the_runs_another_recorded(tmp_path: Path) -> None:
    """An ELEC report's runs are rebuilt row by row from its report.json: the same table and
    minutes come back without training (there is no data to train on), and a variant with a row
    missing for a seed is not adopted (it would train)."""
    values = {
        "dcnv2": [0.70, 0.71, 0.69],
        "elec_vanilla": [0.71, 0.72, 0.70],
        "gain": [0.72, 0.72, 0.71],
        "mllm": [0.60, 0.61, 0.59],
        "gain_zero": [0.70, 0.70, 0.70],
    }
    table = {
        row: {
            "auc": stats(v),
            "logloss": stats([0.4, 0.41, 0.39]),
            "auc@cold_items": stats([x - 0.02 for x in v]),
        }
        for row, v in values.items()
    }
    table["gain_shuffled"] = {"auc": stats([0.7, 0.7])}  # one seed short
    old = {
        "seeds": [0, 1, 2],
        **summarize_elec(table),
        "segment_rows": {"cold_items": 1000},
        "timing_ms": {},
        "minutes": 1.5,
    }
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text(json.dumps(old))
    out = tmp_path / "new"
    adopted = adopt_elec_runs(tmp_path / "old" / "report.json", out)
    assert sorted(adopted) == sorted(
        f"{run}-seed{seed}" for run in ("dcnv2", "elec", "gain_zero") for seed in (0, 1, 2)
    )
    assert adopt_elec_runs(tmp_path / "old" / "report.json", out) == []  # kept, not rewritten
    grown = run_elec_report(
        tmp_path / "no-data", out, seeds=[0, 1, 2], variants=["elec", "gain_zero"], timing_sizes=()
    )
    assert grown["table"] == {row: cells for row, cells in table.items() if row != "gain_shuffled"}
    assert grown["minutes"] == 1.5
    assert grown["segment_rows"] == {"cold_items": 1000}
    assert grown["vs_gain"]["gain_zero"]["auc"] == old["vs_gain"]["gain_zero"]["auc"]

    # Over a long-tail world on disk the report adds what reading the words can add at most,
    # by segment, beside the width of the gain network's interval there.
    from training.data.synthetic import generate_world

    generate_world("tiny", seed=0, kind="longtail").save(tmp_path / "world")
    over_world = run_elec_report(
        tmp_path / "world", out, seeds=[0, 1, 2], variants=["elec", "gain_zero"], timing_sizes=()
    )
    cold = over_world["text_reach"]["cold_items"]
    assert len(cold["reach"]["values"]) == 3 and cold["reach"]["mean"] > 0
    markdown = (out / "report.md").read_text()
    assert "What reading the words can add at most" in markdown
    width = over_world["vs_dcnv2"]["gain"]["auc@cold_items"]
    assert f"{(width['high'] - width['low']) / 2:.4f} |" in markdown


def test_the_elec_report_says_what_share_of_a_shown_gap_each_distillation_closes() -> None:
    """Where a gain network is shown above DCNv2 alone (here the one with both fixes, on tail
    items only), the report gives the share of that gap its vanilla network closes; where it is
    not shown, it says there is no gap, and gives the share of the gap of the same gain network
    trained alone."""
    from training.report import render_elec_markdown

    base = [0.70, 0.71, 0.69, 0.70, 0.72]

    def row(overall: float, tail: float) -> dict[str, Any]:
        return {
            "auc": stats([b + overall + 0.001 * (k % 2) for k, b in enumerate(base)]),
            "auc@tail_items": stats([b + tail + 0.001 * (k % 2) for k, b in enumerate(base)]),
        }

    table = {
        "dcnv2": row(0.0, 0.0),
        "gain": row(0.0, 0.0),
        "elec_vanilla": row(0.0, 0.0),
        "gain_fixed": row(0.0, 0.02),
        "elec_fixed_vanilla": row(0.0, 0.01),
        # the same gain network kept at the vanilla's best epoch (no gap) and at its own (a gap)
        "gain_norm": row(0.0, 0.0),
        "gain_layernorm": row(0.0, 0.04),
        "elec_norm_vanilla": row(0.0, 0.01),
    }
    report = {"data": "x", "seeds": [0, 1, 2, 3, 4], **summarize_elec(table), "minutes": 1.0}
    closed = report["gap_closed_by_vanilla"]
    assert set(closed) == {"elec_fixed_vanilla"}
    assert set(closed["elec_fixed_vanilla"]) == {"auc@tail_items"}
    assert closed["elec_fixed_vanilla"]["auc@tail_items"] == pytest.approx(0.5, abs=0.01)
    markdown = render_elec_markdown(report)
    assert "ELEC with both fixes" in markdown
    assert "the vanilla network closes AUC, tail items (1-19) 50%" in markdown
    assert "ELEC with the normalized injection" in markdown and "no gap to close" in markdown
    assert "of that gap the vanilla network above closes AUC, tail items (1-19) 25%" in markdown
