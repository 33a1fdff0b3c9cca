"""The training loop on the tiny world: loss falls, two-stage rates, lists kept whole, DDP."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch
import torch.multiprocessing as mp

from service.contract import FeatureSpec
from training.report import METRICS
from training.train import (
    EarlyStopping,
    build_optimizer,
    load_config,
    request_batches,
    run_training,
    training_loss,
)

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def test_tiny_prectr_run_learns_and_writes_its_checkpoint(
    encoded_tiny_world: Path, tmp_path: Path
) -> None:
    cfg = load_config(CONFIGS / "prectr_tiny.toml", {"train.epochs": 3, "train.patience": 3})
    result = run_training(cfg, encoded_tiny_world, tmp_path / "run")
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.metrics["auc"] > 0.7  # the oracle reaches about 0.87 on tiny
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["contract_hash"] and meta["text_tower"]["fingerprint"] and meta["git_sha"]
    assert set(meta["metrics"]) >= {*METRICS, "best_epoch", "epochs_run"}
    assert 1 <= meta["metrics"]["best_epoch"] <= meta["metrics"]["epochs_run"] <= 3
    assert (tmp_path / "run" / "model.pt").is_file()
    # the position tower learnt that lower slots are seen less (the tiny world's examination
    # decays with position), and the saved model has no position input at all
    seen = meta["position_seen"]
    assert seen[0] > seen[4] > seen[9]
    spec = FeatureSpec.load(tmp_path / "run" / "feature_spec.json")
    assert "position" not in {field.name for field in spec.fields}


def test_early_stopping_stops_after_patience_epochs_without_a_new_best() -> None:
    stopper = EarlyStopping("x", patience=2, modules={"m": torch.nn.Linear(1, 1)})
    decisions = [stopper.end_epoch(0.0, auc) for auc in (0.70, 0.72, 0.71, 0.715)]
    assert decisions == [False, False, False, True]
    assert stopper.best_epoch == 2 and stopper.best_auc == 0.72


def test_the_fusion_control_trains_its_relevance_head(encoded_tiny_world: Path) -> None:
    """wide_deep_pair: the auxiliary relevance loss is in its training loss with its weight."""
    torch.manual_seed(0)
    outputs = {
        "logit": torch.randn(4),
        "score": torch.rand(4),
        "log_seen": torch.zeros(4),
        "rsl_logits": torch.randn(4, 4),
    }
    batch = {
        "click": torch.tensor([1.0, 0.0, 0.0, 1.0]),
        "relevance": torch.tensor([3, 0, -1, 2]),  # -1: no query, ignored
        "request": torch.tensor([0, 0, 1, 1]),
        "conversion": torch.zeros(4),
    }
    plain = load_config(CONFIGS / "wide_deep_pair.toml", {"loss.relevance_weight": 0.0})
    weighted = load_config(CONFIGS / "wide_deep_pair.toml", {"loss.relevance_weight": 2.0})
    difference = training_loss(outputs, batch, weighted, False) - training_loss(
        outputs, batch, plain, False
    )
    expected = 2.0 * torch.nn.functional.cross_entropy(
        outputs["rsl_logits"][[0, 1, 3]], batch["relevance"][[0, 1, 3]]
    )
    torch.testing.assert_close(difference, expected)


def test_rsl_gets_ten_times_smaller_steps_in_stage_two(encoded_tiny_world: Path) -> None:
    from service.contract import default_feature_spec
    from training.models import build_model

    cfg = load_config(CONFIGS / "prectr_tiny.toml")
    model = build_model("prectr", default_feature_spec(16), cfg.model.params)
    optimizer = build_optimizer(model, cfg)
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates["rsl"] == pytest.approx(rates["base"] / 10)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()  # Adam's first step moves every weight by lr * sign(grad)
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    rsl = [v for n, v in moved.items() if n.startswith("rsl.")]
    rest = [v for n, v in moved.items() if not n.startswith("rsl.")]
    assert max(rsl) == pytest.approx(rates["base"] / 10, rel=1e-3)
    assert min(rest) == pytest.approx(rates["base"], rel=1e-3)


def test_config_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[model]\nfamily = "lr"\n[train]\nepoch = 3\n')
    with pytest.raises(pydantic.ValidationError, match="epoch"):
        load_config(path)


def test_request_batches_keep_lists_whole() -> None:
    request = np.repeat(np.arange(50), 10)
    rows = np.arange(500)
    batches = request_batches(request, rows, 64, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == rows.tolist()
    for batch in batches:
        counts = np.bincount(request[batch])
        assert set(counts[counts > 0].tolist()) == {10}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, world: str, out: str, port: int) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    cfg = load_config(CONFIGS / "prectr_tiny.toml", {"train.epochs": 1, "train.threads": 1})
    result = run_training(cfg, Path(world), Path(out) / "run")
    torch.save(result.model.state_dict(), Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_run_ends_with_identical_weights(
    encoded_tiny_world: Path, tmp_path: Path
) -> None:
    # Train once in-process first so the text tower is cached and both ranks load the same one.
    run_training(
        load_config(CONFIGS / "prectr_tiny.toml", {"train.epochs": 1}),
        encoded_tiny_world,
        tmp_path / "warm",
    )
    mp.spawn(
        _ddp_worker,
        args=(str(encoded_tiny_world), str(tmp_path), _free_port()),
        nprocs=2,
        join=True,
    )
    first = torch.load(tmp_path / "rank0.pt", weights_only=True)
    second = torch.load(tmp_path / "rank1.pt", weights_only=True)
    warm = torch.load(tmp_path / "warm" / "model.pt", weights_only=True)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)
    assert any(not torch.equal(first[n], warm[n]) for n in first)  # it did train on shards
