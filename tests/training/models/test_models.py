"""Every model family: output shapes, a seeded golden value, request-level equivalence."""

from __future__ import annotations

import pytest
import torch

from service.contract import default_feature_spec
from training.features import REQUEST_INPUTS
from training.layers import TargetAttention
from training.models import MODELS, build_model
from training.models.baselines import example_batch
from training.models.prectr import PRECTR, PRECTRConfig

SPEC = default_feature_spec(16)
# Scores of each family built after torch.manual_seed(0) on example_batch(SPEC, 6, requests=2).
GOLDEN = {
    "lr": [0.47172, 0.48605, 0.47452, 0.55725, 0.50844, 0.45989],
    "dnn": [0.51611, 0.51578, 0.51532, 0.51645, 0.51291, 0.51487],
    "wide_deep": [0.63661, 0.5918, 0.59339, 0.7442, 0.61602, 0.65683],
    "deepfm": [0.63702, 0.59188, 0.59451, 0.74402, 0.61585, 0.65678],
    "dcnv2": [0.49597, 0.48079, 0.48497, 0.48782, 0.4842, 0.48788],
    "din": [0.48852, 0.48931, 0.48811, 0.48861, 0.49026, 0.4876],
    "sukd": [0.62618, 0.57936, 0.58322, 0.73784, 0.60673, 0.64801],
    "vanilla": [0.48853, 0.4884, 0.48866, 0.48865, 0.48864, 0.48858],
    "wide_deep_pair": [0.49044, 0.59386, 0.5758, 0.51934, 0.53707, 0.52876],
    "prectr": [0.56401, 0.53421, 0.57854, 0.51949, 0.50875, 0.57275],
}


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, SPEC, {"embedding_dim": 4} if name != "lr" else {}).eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes_and_golden_scores(name: str) -> None:
    batch = example_batch(SPEC, 6, requests=2)
    with torch.no_grad():
        out = _build(name)(batch)
    assert out["score"].shape == (6,) and out["logit"].shape == (6,)
    assert torch.all((out["score"] > 0) & (out["score"] < 1))
    torch.testing.assert_close(out["score"], torch.tensor(GOLDEN[name]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_request_equals_the_request_repeated_per_candidate(name: str) -> None:
    """Request-level inputs once (R = 1) give the same scores as one copy per candidate."""
    once = example_batch(SPEC, 5, requests=1)
    repeated = dict(once)
    for key in REQUEST_INPUTS:
        repeated[key] = once[key].expand(5, *once[key].shape[1:])
    repeated["request_index"] = torch.arange(5)
    model = _build(name)
    with torch.no_grad():
        torch.testing.assert_close(model(once)["score"], model(repeated)["score"])


def test_prectr_outputs_are_consistent() -> None:
    torch.manual_seed(0)
    model = PRECTR(SPEC, PRECTRConfig(text_dim=16)).eval()
    with torch.no_grad():
        out = model(example_batch(SPEC, 8, requests=2))
    torch.testing.assert_close(out["p_rsl"].sum(1), torch.ones(8))
    fused = (out["p_rsl"] * out["p_click_given_rsl"]).sum(1)
    odds = fused / (1 - fused) * out["tau"]
    torch.testing.assert_close(out["score"], odds / (1 + odds))
    assert torch.all(out["tau"] > 0)


def test_prectr_without_incentive_scores_the_fusion() -> None:
    torch.manual_seed(0)
    model = PRECTR(SPEC, PRECTRConfig(text_dim=16, use_incentive=False)).eval()
    with torch.no_grad():
        out = model(example_batch(SPEC, 8))
    torch.testing.assert_close(out["tau"], torch.ones(8))
    torch.testing.assert_close(out["score"], (out["p_rsl"] * out["p_click_given_rsl"]).sum(1))


def test_target_attention_with_empty_history_is_zero_not_nan() -> None:
    attention = TargetAttention(8, 8, 8, 8, heads=2)
    out = attention(
        torch.randn(2, 8),
        torch.randn(2, 5, 8),
        torch.randn(2, 5, 8),
        torch.tensor([[False] * 5, [True, True, False, False, False]]),
    )
    assert torch.all(out[0] == 0) and torch.isfinite(out).all() and out[1].abs().sum() > 0
