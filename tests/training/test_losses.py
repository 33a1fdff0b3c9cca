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


def test_representation_mse_and_pwiser() -> None:
    assert representation_mse(torch.ones(2, 3), torch.zeros(2, 3)).item() == 3.0
    score = torch.tensor([0.9, 0.5, 0.45])
    # converted 0.9 vs clicked 0.5: gap 0.4 >= 0.3, no loss; clicked 0.5 vs unclicked 0.45:
    # gap 0.05 < 0.1 -> (0.1 - 0.05)^2.
    got = pwiser(score, torch.tensor([1, 1, 0]), torch.tensor([1, 0, 0]))
    assert math.isclose(got.item(), 0.05**2, rel_tol=1e-4)
