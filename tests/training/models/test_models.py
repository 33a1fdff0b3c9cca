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
    "lr": [0.40471, 0.3554, 0.34188, 0.45164, 0.38179, 0.32591],
    "dnn": [0.50225, 0.50459, 0.50339, 0.5072, 0.50735, 0.506],
    "wide_deep": [0.48511, 0.46874, 0.38632, 0.56175, 0.44314, 0.43121],
    "deepfm": [0.48508, 0.46995, 0.38595, 0.56177, 0.44361, 0.43181],
    "dcnv2": [0.51947, 0.53453, 0.51047, 0.50354, 0.53144, 0.52542],
    "din": [0.4947, 0.49411, 0.49585, 0.49604, 0.49488, 0.49482],
    "sukd": [0.47912, 0.46095, 0.37809, 0.55144, 0.43573, 0.42321],
    "vanilla": [0.47488, 0.47409, 0.47422, 0.47411, 0.4737, 0.4739],
    "prectr": [0.5429, 0.60895, 0.5205, 0.54132, 0.59795, 0.57454],
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
