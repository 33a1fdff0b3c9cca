"""Every model family: output shapes, a seeded golden value, request-level equivalence."""

from __future__ import annotations

import pytest
import torch

from service.contract import default_feature_spec
from training.layers import TargetAttention
from training.models import MODELS, build_model
from training.models.baselines import example_batch
from training.models.prectr import PRECTR, PRECTRConfig

SPEC = default_feature_spec(16)
# Scores of each family built after torch.manual_seed(0) on example_batch(SPEC, 6, requests=2).
GOLDEN = {
    "lr": [0.42714, 0.38513, 0.39482, 0.33451, 0.38019, 0.42125],
    "dnn": [0.53648, 0.5364, 0.53645, 0.54134, 0.53902, 0.53948],
    "wide_deep": [0.43749, 0.5048, 0.51052, 0.3704, 0.48992, 0.4979],
    "deepfm": [0.43778, 0.50487, 0.51035, 0.37057, 0.49021, 0.49746],
    "dcnv2": [0.47041, 0.47172, 0.48571, 0.485, 0.47841, 0.47204],
    "din": [0.50419, 0.5037, 0.50228, 0.50428, 0.50304, 0.50356],
    "sukd": [0.40444, 0.46948, 0.47627, 0.33765, 0.45503, 0.46107],
    "prectr": [0.51024, 0.53304, 0.48281, 0.52562, 0.52254, 0.51046],
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
    for key in ("query_vec", "history_query_vec", "history_pair_vec", "history_mask"):
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
