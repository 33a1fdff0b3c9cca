"""The position tower: display-position bias learnt beside a model, in training only (PAL).

Logged clicks depend on where an item was shown, which the service cannot know when it ranks.
Feeding the position to the model as a feature and serving a "missing" value (what this project
did before) serves a function no training row ever produced. PAL (Guo et al., RecSys 2019)
factorizes instead:

    P(click | x, pos) = P(seen | pos) * P(click | x, seen)
                      = sigmoid(position_logit[pos]) * sigmoid(model_logit(x))

and trains both factors jointly on the logged click; at serving only the model's factor ranks,
so the served graph has no position input and every offline metric is computed on exactly that
factor. The product form is also the generative model of the synthetic world and of the click
simulator (training/data/simulate.py: examination by position times attraction).

Departure from the paper: PAL's position module is a small network over position features; with
a single categorical input that network is exactly a table of logits, which is what this is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Positions 0..N_POSITIONS-2 get a logit each; later positions share the last one.
N_POSITIONS = 16
#: sigmoid(2.0) = 0.88: start from "most shown items are seen", so early batches train the model
#: factor on nearly the plain click likelihood.
_INITIAL_LOGIT = 2.0


class PositionTower(nn.Module):
    """log P(seen | position) for each row.

    Shapes:
        position (B,) int64, 0 = the first slot -> log_seen (B,) float, <= 0

    Example::

        >>> tower = PositionTower()
        >>> tower.log_seen(torch.tensor([0, 3, 99])).shape
        torch.Size([3])
    """

    def __init__(self, n_positions: int = N_POSITIONS) -> None:
        super().__init__()
        self.n_positions = n_positions
        self.logit = nn.Parameter(torch.full((n_positions,), _INITIAL_LOGIT))

    def log_seen(self, position: Tensor) -> Tensor:
        slot = position.long().clamp(0, self.n_positions - 1)
        return F.logsigmoid(self.logit[slot])

    def seen(self) -> list[float]:
        """P(seen | position) of every slot (for the run's report)."""
        return [float(p) for p in torch.sigmoid(self.logit.detach())]


def position_aware_bce(model_logit: Tensor, log_seen: Tensor, click: Tensor) -> Tensor:
    """Mean BCE of P(click) = P(seen) * sigmoid(model_logit) against logged clicks.

    Computed in log space: log P = log_seen + logsigmoid(logit), and log(1 - P) by log1p of
    -exp(log P), which stays finite because log P < 0 strictly (clamped a hair below 0).

    >>> logit, click = torch.tensor([0.3, -1.2]), torch.tensor([1.0, 0.0])
    >>> always_seen = torch.zeros(2)  # log 1: reduces to the plain BCE
    >>> bool(torch.isclose(position_aware_bce(logit, always_seen, click),
    ...                    F.binary_cross_entropy_with_logits(logit, click)))
    True
    """
    log_p = (log_seen + F.logsigmoid(model_logit)).clamp(max=-1e-7)
    log_not_p = torch.log1p(-torch.exp(log_p))
    y = click.float()
    return -(y * log_p + (1.0 - y) * log_not_p).mean()
