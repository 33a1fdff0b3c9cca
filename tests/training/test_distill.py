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

    # the other switches (shuffled, normalized, disjoint) are held by the unit tests below
    diagnosis = ("gain_zero", "gain_full_text")
    report = run_elec_report(
        encoded_tiny_world,
        tmp_path / "report",
        seeds=[0, 1],
        config=CONFIGS / "elec_tiny.toml",
        overrides={"elec.cache": str(tmp_path / "cache"), "train.epochs": 1},
        variants=("elec", *diagnosis),
        timing_sizes=(1, 10),
    )
    assert set(report["timing_ms"]) == {"mllm", "gain", "vanilla"}
    assert np.isfinite(report["table"]["elec_vanilla"]["auc"]["mean"])
    for row in ("dcnv2", "gain", *diagnosis):
        assert len(report["table"][row]["auc"]["values"]) == 2, row
        assert "auc@head_items" in report["table"][row], row
    assert set(report["vs_gain"]) == set(diagnosis)
    # a diagnosis run trains the gain network alone and serves nothing
    assert not (tmp_path / "report" / "runs" / "gain_zero-seed0" / "model.pt").exists()
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "Sanity (vector zeroed)" in markdown and "By segment" in markdown
    for name in ("report.md", "report.json", "report.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_the_gain_network_is_given_zeros_a_shuffle_or_the_vector() -> None:
    from training.distill import Injection

    class Rows:
        """A stand-in composer: row r's vector is r everywhere."""

        def compose(self, rows: np.ndarray) -> np.ndarray:
            return np.repeat(rows[:, None].astype(np.float32), 24, axis=1)

    torch.manual_seed(0)
    mllm = MLLM(CONFIG)
    rows = np.arange(8)
    real = Injection(mllm, Rows(), "sample", seed=0)(rows)  # type: ignore[arg-type]
    zero = Injection(mllm, Rows(), "zero", seed=0)(rows)  # type: ignore[arg-type]
    shuffled = Injection(mllm, Rows(), "shuffled", seed=0)(rows)  # type: ignore[arg-type]
    assert not zero.any()
    assert not torch.equal(shuffled, real)
    assert sorted(map(tuple, shuffled.tolist())) == sorted(map(tuple, real.tolist()))


def test_a_disjoint_mllm_never_sees_the_networks_rows() -> None:
    from training.distill import _split_rows

    train = np.arange(100)
    same = _split_rows(train, ElecSection(), max_rows=40)
    assert np.array_equal(same[0], same[1]) and np.array_equal(same[1], train[-40:])
    for max_rows in (40, None):
        mllm_rows, network_rows = _split_rows(train, ElecSection(mllm_rows="disjoint"), max_rows)
        assert not np.intersect1d(mllm_rows, network_rows).size
        assert mllm_rows.max() < network_rows.min()  # the M-LLM fits the earlier rows
        assert len(network_rows) == (40 if max_rows else 50)


def test_a_normalized_injection_ignores_the_vector_scale() -> None:
    from dataclasses import replace

    torch.manual_seed(0)
    batch = example_batch(SPEC, 6, requests=2)
    vector = torch.randn(6, 16)
    normalized = GainNetwork(SPEC, replace(CONFIG, injection_norm=True)).eval()
    torch.testing.assert_close(
        normalized(batch, vector)["logit"], normalized(batch, 50 * vector)["logit"]
    )
    raw = GainNetwork(SPEC, CONFIG).eval()
    assert not torch.allclose(raw(batch, vector)["logit"], raw(batch, 50 * vector)["logit"])


def test_the_full_sample_text_names_category_brand_and_query_category(
    tiny_world_dir: Path,
) -> None:
    from training.data.tables import World
    from training.sample_text import sample_texts

    world = World.load(tiny_world_dir)
    row = int(np.flatnonzero(world.impressions["query_id"] > 0)[0])
    (plain,) = sample_texts(world, np.array([row]))
    (full,) = sample_texts(world, np.array([row]), full_text=True)
    item = int(world.impressions["item_id"][row])
    category = world.meta["categories"][int(world.items["category"][item])]
    brand = world.meta["brand_names"][int(world.items["brand"][item])]
    assert f"Category is {category}." in full and f"Brand is {brand}." in full
    assert "Query category is" in full and "Category is" not in plain
    assert brand in str(world.items["title"][item])  # the name the catalogue writes
