"""The text tower (PRECTR 4.2) and the pair approximator.

`TextTower` reduces MiniLM's 384-d vectors of queries, items and (query, item) pairs to a small
dimension with a 3-layer MLP. It is trained offline in two stages: (1) clicked vs unclicked search
impressions as relevant vs irrelevant pairs, (2) fine-tuning on the four relevance levels. Its
outputs are what the index holds.

`PairApproximator` predicts a pair's reduced vector from its query and item vectors, for the
(query, item) pairs the index does not hold (trained offline against the tower's pair output).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from service.contract import RELEVANCE_LEVELS
from training.layers import MLP


@dataclass(frozen=True)
class TextTowerConfig:
    input_dim: int = 384
    hidden: tuple[int, int] = (256, 128)
    output_dim: int = 64


class TextTower(nn.Module):
    """384 -> hidden -> hidden -> output_dim, shared by queries, items and pairs.

    Shapes:
        reduce: (..., input_dim) -> (..., output_dim)
        click_logit: pair, query, item (B, input_dim) each -> (B,)
        relevance_logits: same inputs -> (B, 4)

    Example::

        >>> tower = TextTower(TextTowerConfig())
        >>> tower.reduce(torch.zeros(5, 384)).shape
        torch.Size([5, 64])
    """

    def __init__(self, config: TextTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.mlp = MLP(config.input_dim, config.hidden, config.output_dim)
        width = 2 * config.output_dim
        self.click_head = nn.Linear(width, 1)
        self.relevance_head = nn.Linear(width, RELEVANCE_LEVELS)

    def reduce(self, vectors: Tensor) -> Tensor:
        return self.mlp(vectors)  # type: ignore[no-any-return]

    def _joint(self, pair: Tensor, query: Tensor, item: Tensor) -> Tensor:
        # The pair vector carries the cross-encoded match; q * i ties the query and item
        # reductions into the same space so all three kinds of vectors are trained.
        return torch.cat([self.reduce(pair), self.reduce(query) * self.reduce(item)], dim=-1)

    def click_logit(self, pair: Tensor, query: Tensor, item: Tensor) -> Tensor:
        return self.click_head(self._joint(pair, query, item)).squeeze(-1)  # type: ignore[no-any-return]

    def relevance_logits(self, pair: Tensor, query: Tensor, item: Tensor) -> Tensor:
        return self.relevance_head(self._joint(pair, query, item))  # type: ignore[no-any-return]


class PairApproximator(nn.Module):
    """Reduced pair vector from reduced query and item vectors.

    Shapes:
        query (B, D), item (B, D) -> (B, D).
    """

    def __init__(self, dim: int = 64, hidden: tuple[int, ...] = (128, 128)) -> None:
        super().__init__()
        self.mlp = MLP(3 * dim, hidden, dim)

    def forward(self, query: Tensor, item: Tensor) -> Tensor:
        return self.mlp(torch.cat([query, item, query * item], dim=-1))  # type: ignore[no-any-return]
