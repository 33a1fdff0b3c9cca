"""ELEC: distillation reaches only the vanilla network; the language model never changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from service.contract import default_feature_spec
from training.encode import MiniLMEncoder
from training.losses import clid_loss, representation_mse
from training.models.baselines import example_batch
from training.models.elec import MLLM, ELECConfig, GainNetwork, VanillaNetwork
from training.models.position import PositionTower, position_aware_bce
from training.report import run_elec_report
from training.train import ElecSection, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
SPEC = default_feature_spec(16)
CONFIG = ELECConfig(embedding_dim=4, hidden=(16, 8), mllm_hidden=(32, 16), lm_dim=24, text_dim=16)


def test_score_and_representation_losses_reach_only_the_vanilla_network() -> None:
    torch.manual_seed(0)
    mllm, gain, vanilla = MLLM(CONFIG), GainNetwork(SPEC, CONFIG), VanillaNetwork(SPEC, CONFIG)
    batch = example_batch(SPEC, 12, requests=3)
    group = batch["request_index"]
    gain_out = gain(batch, mllm(torch.randn(12, 24))["high_level"])
    vanilla_out = vanilla(batch)
    loss = clid_loss(vanilla_out["logit"], gain_out["logit"], group) + representation_mse(
        vanilla_out["high_level"], gain_out["high_level"]
    )
    loss.backward()
    for module in (gain, mllm):
        for name, p in module.named_parameters():
            assert p.grad is None or not p.grad.any(), f"{name} got a distillation gradient"
    assert any(p.grad is not None and p.grad.any() for p in vanilla.parameters())


def test_distillation_terms_switch_off_to_the_two_cross_entropies() -> None:
    from training.distill import distillation_loss

    torch.manual_seed(0)
    gain_out = {"logit": torch.randn(6), "high_level": torch.randn(6, 4)}
    vanilla_out = {"logit": torch.randn(6), "high_level": torch.randn(6, 4)}
    batch = {
        "click": torch.tensor([1, 0, 0, 1, 0, 0]),
        "request": torch.tensor([0] * 3 + [1] * 3),
        "position": torch.tensor([0, 1, 2, 0, 1, 2]),
    }
    towers = (PositionTower(), PositionTower())
    with torch.no_grad():
        towers[0].logit[:3] = torch.tensor([3.0, 1.0, -1.0])  # each network has its own
    plain = distillation_loss(
        gain_out, vanilla_out, batch, ElecSection(use_clid=False, use_rep=False), towers
    )
    expected = sum(
        position_aware_bce(out["logit"], tower.log_seen(batch["position"]), batch["click"])
        for out, tower in ((gain_out, towers[0]), (vanilla_out, towers[1]))
    )
    torch.testing.assert_close(plain, expected)
    full = distillation_loss(gain_out, vanilla_out, batch, ElecSection(alpha=0.5), towers)
    extra = clid_loss(vanilla_out["logit"], gain_out["logit"], batch["request"]) + 0.5 * (
        representation_mse(vanilla_out["high_level"], gain_out["high_level"])
    )
    torch.testing.assert_close(full, expected + extra)


def test_elec_report_on_tiny_keeps_the_language_model_frozen(
    encoded_tiny_world: Path, tmp_path: Path
) -> None:
    from training.distill import run_elec

    encoder = MiniLMEncoder(threads=1)
    before = {k: v.clone() for k, v in encoder._model.state_dict().items()}
    cfg = load_config(CONFIGS / "elec_tiny.toml", {"elec.cache": str(tmp_path / "cache")})
    result = run_elec(cfg, encoded_tiny_world, tmp_path / "run", encoder=encoder)
    for name, value in encoder._model.state_dict().items():
        assert torch.equal(value, before[name]), f"language model weight {name} changed"
    assert all(not p.requires_grad for p in result.mllm.parameters())
    assert result.metrics["mllm_auc"] > 0.55  # MiniLM sample vectors carry click signal
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["config"]["model"]["family"] == "vanilla" and meta["encoder_fingerprint"]

    report = run_elec_report(
        encoded_tiny_world,
        tmp_path / "report",
        seeds=[0],
        config=CONFIGS / "elec_tiny.toml",
        overrides={"elec.cache": str(tmp_path / "cache"), "train.epochs": 1},
        timing_sizes=(1, 10),
    )
    assert set(report["timing_ms"]) == {"mllm", "gain", "vanilla"}
    assert np.isfinite(report["table"]["elec_vanilla"]["auc"]["mean"])
    for name in ("report.md", "report.json", "report.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
