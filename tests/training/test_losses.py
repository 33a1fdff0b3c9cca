"""Losses against hand-computed values."""

from __future__ import annotations

import math

import torch

from training.losses import clid_loss, pwiser, representation_mse, semantic_consistency


def _softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_semantic_consistency_equals_hand_computed_kl() -> None:
    # List 7: clicked item, unclicked relevant (level 2), unclicked irrelevant (level 0).
    # List 9: two unclicked items of levels 3 and 1.
    score = torch.tensor([0.5, 0.2, 0.1, 0.3, 0.4])
    click = torch.tensor([1, 0, 0, 0, 0])
    relevance = torch.tensor([3, 2, 0, 3, 1])
    group = torch.tensor([7, 7, 7, 9, 9])
    # y_list = 4 y + 1 (1 - y) rsl
    first = _kl(_softmax([4.0, 2.0, 0.0]), _softmax([0.5, 0.2, 0.1]))
    second = _kl(_softmax([3.0, 1.0]), _softmax([0.3, 0.4]))
    expected = (first + second) / 2
    got = semantic_consistency(score, click, relevance, group, alpha=4.0, beta=1.0)
    assert math.isclose(got.item(), expected, rel_tol=1e-5)


def test_semantic_consistency_is_zero_when_scores_match_priorities() -> None:
    priority = torch.tensor([4.0, 2.0, 0.0])
    got = semantic_consistency(
        priority, torch.tensor([1, 0, 0]), torch.tensor([3, 2, 0]), torch.zeros(3, dtype=torch.long)
    )
    assert abs(got.item()) < 1e-6


def test_clid_equals_hand_computed_cross_entropy() -> None:
    student = torch.tensor([0.0, 1.0])
    teacher = torch.tensor([2.0, -1.0])
    p_s = [1 / (1 + math.exp(-x)) for x in (0.0, 1.0)]
    p_t = [1 / (1 + math.exp(-x)) for x in (2.0, -1.0)]
    q_s = [p / sum(p_s) for p in p_s]
    q_t = [p / sum(p_t) for p in p_t]
    expected = -sum(t * math.log(s) for t, s in zip(q_t, q_s, strict=True))
    got = clid_loss(student, teacher, torch.zeros(2, dtype=torch.long))
    assert math.isclose(got.item(), expected, rel_tol=1e-5)


def test_representation_mse() -> None:
    assert representation_mse(torch.ones(2, 3), torch.zeros(2, 3)).item() == 3.0


def test_pwiser_anchors_both_terms_on_converted_rows() -> None:
    """The paper's Eq. 2 by hand: 2 converted, 2 clicked-only and 3 non-clicked rows."""
    score = torch.tensor([0.90, 0.40, 0.70, 0.55, 0.50, 0.20, 0.85])
    click = torch.tensor([1, 1, 1, 1, 0, 0, 0])
    conversion = torch.tensor([1, 1, 0, 0, 0, 0, 0])
    m1, m2 = 0.3, 0.1
    converted, clicked_only, non_click = [0.90, 0.40], [0.70, 0.55], [0.50, 0.20, 0.85]

    def hinge(high: list[float], low: list[float], margin: float) -> float:
        pairs = [(h, lo) for h in high for lo in low]
        return sum(max(0.0, margin - (h - lo)) ** 2 for h, lo in pairs) / len(pairs)

    expected = hinge(converted, clicked_only, m1) + hinge(converted, non_click, m2)
    # the pairs by hand: vs clicked-only 0.9-0.7=0.2 -> 0.01, 0.9-0.55=0.35 -> 0,
    # 0.4-0.7=-0.3 -> 0.36, 0.4-0.55=-0.15 -> 0.2025, over 4 pairs; vs non-click 0.9-0.5 -> 0,
    # 0.9-0.2 -> 0, 0.9-0.85=0.05 -> 0.0025, 0.4-0.5=-0.1 -> 0.04, 0.4-0.2=0.2 -> 0,
    # 0.4-0.85=-0.45 -> 0.3025, over 6 pairs
    assert math.isclose(expected, (0.01 + 0.36 + 0.2025) / 4 + (0.0025 + 0.04 + 0.3025) / 6)
    got = pwiser(score, click, conversion, margin_click_only=m1, margin_non_click=m2)
    assert math.isclose(got.item(), expected, rel_tol=1e-5)
    # a clicked-only row scored below a non-clicked one costs nothing: no term compares them
    swapped = score.clone()
    swapped[[2, 6]] = swapped[[6, 2]]  # clicked-only 0.85, non-click 0.70
    again = pwiser(swapped, click, conversion, margin_click_only=m1, margin_non_click=m2)
    assert math.isclose(
        again.item(),
        hinge(converted, [0.85, 0.55], m1) + hinge(converted, [0.5, 0.2, 0.7], m2),
        rel_tol=1e-5,
    )
    # without conversions there is no loss
    assert pwiser(score, click, torch.zeros(7, dtype=torch.long)).item() == 0.0
