"""Losses, kept outside the models so the bare models export.

- `click_bce`: pointwise CTR risk (PRECTR Eq. 3, ELEC Eq. 4), on logits.
- `relevance_cross_entropy`: the RSL pretraining risk (PRECTR Eq. 2), ignoring rows without a
  relevance level (recommendation requests).
- `semantic_consistency`: PRECTR's listwise regularizer (Eq. 4-5), per list.
- `clid_loss`: ELEC's calibration-compatible listwise distillation (Eq. 1-2), per list.
- `representation_mse`: ELEC's L_rep (Eq. 3).
- `pwiser`: the pairwise conversion-aware ranking loss of papers/pwiser-loss.txt (converted rows
  against clicked-only rows, and against non-clicked rows).

Lists are identified by a group id per row (the request id); rows of one list need not be
contiguous.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def click_bce(logit: Tensor, click: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logit, click.float())


def relevance_cross_entropy(rsl_logits: Tensor, relevance: Tensor) -> Tensor:
    return F.cross_entropy(rsl_logits, relevance.long(), ignore_index=-1)


def _group_index(group: Tensor) -> tuple[Tensor, int]:
    """Dense 0..G-1 ids for arbitrary group ids, and G."""
    unique, inverse = torch.unique(group, return_inverse=True)
    return inverse, int(unique.numel())


def group_log_softmax(values: Tensor, group: Tensor) -> Tensor:
    """log softmax of ``values`` within each group, shape (N,) -> (N,).

    >>> group_log_softmax(torch.tensor([0.0, 0.0, 5.0]), torch.tensor([7, 7, 9])).exp()
    tensor([0.5000, 0.5000, 1.0000])
    """
    index, n_groups = _group_index(group)
    maxima = torch.full((n_groups,), -torch.inf, dtype=values.dtype, device=values.device)
    maxima = maxima.scatter_reduce(0, index, values.detach(), reduce="amax")
    shifted = values - maxima[index]
    sums = torch.zeros(n_groups, dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, index, shifted.exp())
    return shifted - sums.log()[index]


def _mean_over_groups(per_row: Tensor, group: Tensor) -> Tensor:
    index, n_groups = _group_index(group)
    totals = torch.zeros(n_groups, dtype=per_row.dtype, device=per_row.device)
    return totals.index_add(0, index, per_row).mean()


def semantic_consistency(
    score: Tensor,
    click: Tensor,
    relevance: Tensor,
    group: Tensor,
    alpha: float = 4.0,
    beta: float = 1.0,
) -> Tensor:
    """KL(softmax(y_list) || softmax(score)) per list, averaged over lists (PRECTR Eq. 4-5).

    y_list = alpha * y + beta * (1 - y) * rsl: clicked items first, then unclicked items by
    relevance level (0..3; rows without a level count as 0). ``score`` is the model's click
    probability f(x), as in the paper.
    """
    click = click.float()
    level = relevance.clamp(min=0).float()
    priority = alpha * click + beta * (1.0 - click) * level
    log_p = group_log_softmax(priority, group)  # target distribution
    log_q = group_log_softmax(score, group)
    return _mean_over_groups(log_p.exp() * (log_p - log_q), group)


def clid_loss(student_logit: Tensor, teacher_logit: Tensor, group: Tensor) -> Tensor:
    """ELEC's CLID: -sum Q_g log Q_v per list, Q = p / sum(p) over the list (Eq. 1-2).

    With p = sigmoid(logit), log Q = log p - log sum p = group_log_softmax(log p). The teacher's
    distribution is a constant target: distillation only moves the student.
    """
    log_q_student = group_log_softmax(F.logsigmoid(student_logit), group)
    q_teacher = group_log_softmax(F.logsigmoid(teacher_logit.detach()), group).exp()
    return _mean_over_groups(-(q_teacher * log_q_student), group)


def representation_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """ELEC's L_rep: mean over rows of ||h_v - h_g||^2, the teacher detached (Eq. 3)."""
    return (student - teacher.detach()).pow(2).sum(dim=1).mean()


def pwiser(
    score: Tensor,
    click: Tensor,
    conversion: Tensor,
    margin_click_only: float = 0.3,
    margin_non_click: float = 0.1,
) -> Tensor:
    """PWiseR (papers/pwiser-loss.txt, Eq. 2): both terms anchor on the converted samples.

    L = 1/(N2 N1) sum_{i in conv} sum_{j in click-only} [s_i - s_j < m1] (m1 - (s_i - s_j))^2
      + 1/(N2 N0) sum_{i in conv} sum_{k in non-click}  [s_i - s_k < m2] (m2 - (s_i - s_k))^2

    with N2, N1, N0 the numbers of converted, clicked-only and non-clicked rows of the batch. A
    term whose pair set is empty contributes 0 (a batch without conversions has no PWiseR loss).
    """
    converted = score[conversion > 0]
    clicked_only = score[(click > 0) & (conversion <= 0)]
    non_click = score[(click <= 0) & (conversion <= 0)]
    total = score.new_zeros(())
    for low, margin in ((clicked_only, margin_click_only), (non_click, margin_non_click)):
        if converted.numel() and low.numel():
            gap = converted[:, None] - low[None, :]  # (N2, N1) or (N2, N0)
            total = total + F.relu(margin - gap).pow(2).mean()
    return total
