"""PRECTR: personalized search relevance matching fused with CTR prediction (papers/prectr.txt).

Composed of named parts:
- `RelevanceArch` T(x; theta): query, item and pair vectors plus the contract's derived relevance
  features -> 4-way softmax P(rsl = i | x).
- `BaseArch` g(x; eta): Wide&Deep over all tabular features -> 4 sigmoids P(click | rsl = i, x).
- Fusion (Eq. 1): f(x) = g . T.
- `IncentiveArch` (4.5): multi-head target attention with the current query vector as Q, the
  history query vectors as K and the history pair relevance vectors as V gives r_expect (Eq. 7);
  log tau = MLP(concat(r_cur, r_expect)) (Eq. 8).

The paper's score = tau * f can leave [0, 1]. We apply tau to the odds instead:
``logit(score) = logit(f) + log(tau)``, i.e. score = tau f / (1 - f + tau f). It is a valid
probability for every tau > 0, equals tau * f to first order where f is small (CTRs are), and
keeps tau's meaning: tau > 1 promotes the candidate, tau < 1 holds it back.

The request-level part (the attention over the history) depends only on the query and the user:
it is computed once per request (R times for a batch of R requests, once when serving) and
gathered to the candidates by ``request_index``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from service.contract import RELEVANCE_LEVELS, FeatureSpec
from training.layers import MLP, TargetAttention
from training.models.baselines import TabularConfig, WideDeep

Batch = dict[str, Tensor]
_EPS = 1e-6


@dataclass(frozen=True)
class PRECTRConfig:
    """PRECTR hyperparameters; ``use_incentive=False`` is the ablation without PRIM."""

    embedding_dim: int = 16
    base_hidden: tuple[int, ...] = (256, 128, 64)
    rsl_hidden: tuple[int, ...] = (128, 64)
    incentive_hidden: tuple[int, ...] = (64, 32)
    attention_heads: int = 2
    text_dim: int = 64
    dropout: float = 0.0
    use_incentive: bool = True


class RelevanceArch(nn.Module):
    """T(x; theta): relevance logits over the 4 levels.

    Shapes:
        query_vec, item_vec, pair_vec (B, D); relevance features (B, R) -> (B, 4) logits.
    """

    def __init__(self, text_dim: int, n_relevance: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.mlp = MLP(3 * text_dim + n_relevance, hidden, RELEVANCE_LEVELS)

    def forward(
        self, query_vec: Tensor, item_vec: Tensor, pair_vec: Tensor, relevance: Tensor
    ) -> Tensor:
        return self.mlp(torch.cat([query_vec, item_vec, pair_vec, relevance], dim=1))  # type: ignore[no-any-return]


class BaseArch(nn.Module):
    """g(x; eta): Wide&Deep with one click logit per relevance level.

    Shapes:
        batch -> (B, 4) logits of P(click | rsl = i, x).
    """

    def __init__(self, spec: FeatureSpec, config: PRECTRConfig) -> None:
        super().__init__()
        tabular = TabularConfig(config.embedding_dim, config.base_hidden, config.dropout)
        self.wide_deep = WideDeep(spec, tabular, out_dim=RELEVANCE_LEVELS)

    def forward(self, batch: Batch) -> Tensor:
        return self.wide_deep.logits(batch)


class IncentiveArch(nn.Module):
    """The personalized relevance incentive: r_expect by target attention, then log tau.

    Shapes:
        expectation: query_vec (R, D), history_query_vec (R, L, D), history_pair_vec (R, L, D),
            history_mask (R, L) -> r_expect (R, D), one per request.
        forward: pair_vec (B, D), r_expect (B, D) gathered per candidate -> log tau (B,).
    """

    def __init__(self, text_dim: int, heads: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.attention = TargetAttention(text_dim, text_dim, text_dim, text_dim, heads)
        self.mlp = MLP(2 * text_dim, hidden, 1)

    def expectation(
        self, query_vec: Tensor, history_query: Tensor, history_pair: Tensor, mask: Tensor
    ) -> Tensor:
        return self.attention(query_vec, history_query, history_pair, mask)  # type: ignore[no-any-return]

    def forward(self, pair_vec: Tensor, r_expect: Tensor) -> Tensor:
        return self.mlp(torch.cat([pair_vec, r_expect], dim=1)).squeeze(-1)  # type: ignore[no-any-return]


class PRECTR(nn.Module):
    """The fused network.

    Args:
        spec: the feature contract (its categorical and dense fields feed the base module; its
            relevance features feed the RSL module).
        config: `PRECTRConfig`.

    Shapes:
        batch (see training.features) -> dict with score (B,), logit (B,), p_rsl (B, 4),
        rsl_logits (B, 4), p_click_given_rsl (B, 4), tau (B,).

    Example::

        >>> from service.contract import default_feature_spec
        >>> from training.models.baselines import example_batch
        >>> spec = default_feature_spec()
        >>> out = PRECTR(spec, PRECTRConfig())(example_batch(spec, 3))
        >>> out["score"].shape, out["p_rsl"].shape
        (torch.Size([3]), torch.Size([3, 4]))
    """

    def __init__(self, spec: FeatureSpec, config: PRECTRConfig) -> None:
        super().__init__()
        self.config = config
        dense_names = [f.name for f in spec.select(kind="dense")]
        self.relevance_columns = [dense_names.index(n) for n in spec.relevance_features]
        self.rsl = RelevanceArch(config.text_dim, len(self.relevance_columns), config.rsl_hidden)
        self.base = BaseArch(spec, config)
        self.incentive = (
            IncentiveArch(config.text_dim, config.attention_heads, config.incentive_hidden)
            if config.use_incentive
            else None
        )

    def rsl_logits(self, batch: Batch) -> Tensor:
        relevance = batch["dense"][:, self.relevance_columns]
        query = batch["query_vec"][batch["request_index"]]  # (B, D)
        return self.rsl(query, batch["item_vec"], batch["pair_vec"], relevance)  # type: ignore[no-any-return]

    def request_context(self, batch: Batch) -> Tensor | None:
        """r_expect of each request in ``batch``: (R, D); None without PRIM."""
        if self.incentive is None:
            return None
        return self.incentive.expectation(
            batch["query_vec"],
            batch["history_query_vec"],
            batch["history_pair_vec"],
            batch["history_mask"],
        )

    def arch_logits(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """The three networks' raw outputs: rsl logits (B, 4), click logits (B, 4), log tau (B,).

        Everything up to here may run in reduced precision; `fuse` is the probability math.
        """
        rsl_logits = self.rsl_logits(batch)  # (B, 4)
        click_logits = self.base(batch)  # (B, 4)
        r_expect = self.request_context(batch)  # (R, D): once per request
        if self.incentive is not None and r_expect is not None:
            log_tau = self.incentive(batch["pair_vec"], r_expect[batch["request_index"]])  # (B,)
        else:
            log_tau = torch.zeros_like(click_logits[:, 0])
        return rsl_logits, click_logits, log_tau

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return fuse(*self.arch_logits(batch))

    def rsl_parameters(self) -> list[nn.Parameter]:
        return list(self.rsl.parameters())


def fuse(rsl_logits: Tensor, click_logits: Tensor, log_tau: Tensor) -> dict[str, Tensor]:
    """Eq. 1 and the odds-scaled incentive: (B, 4), (B, 4), (B,) -> PRECTR's named outputs."""
    p_rsl = torch.softmax(rsl_logits, dim=1)
    p_click_given_rsl = torch.sigmoid(click_logits)  # (B, 4)
    fused = (p_click_given_rsl * p_rsl).sum(dim=1).clamp(_EPS, 1 - _EPS)  # Eq. 1, (B,)
    logit = torch.log(fused) - torch.log1p(-fused) + log_tau
    return {
        "logit": logit,
        "score": torch.sigmoid(logit),
        "rsl_logits": rsl_logits,
        "p_rsl": p_rsl,
        "p_click_given_rsl": p_click_given_rsl,
        "tau": torch.exp(log_tau),
    }
