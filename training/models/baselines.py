"""The CTR baselines of PRECTR's Table 1, under one input convention.

Every model takes the named input groups of `training.features` (a dict of tensors) and returns
``{"logit": (B,), "score": (B,)}``; DCNv2 also exposes its high-level vector for ELEC.

- `LogisticRegression`: one weight per bucket plus a linear term over dense features.
- `DNN`: embeddings + dense + sum-pooled history vectors -> MLP (YouTube DNN).
- `WideDeep`: the wide linear part plus a deep MLP (PRECTR's base; ``out_dim`` 4 inside PRECTR).
- `DeepFM`: first order + factorization machine + deep MLP over the same embeddings.
- `DCNv2`: a cross network beside a deep MLP over the embeddings (2 cross layers, {256,128,64}).
- `DIN`: target attention of the candidate (query and item vectors) over the user's history.
- `SuKD`: Wide&Deep with the query and item text vectors as supplementary inputs.
- `WideDeepPair`: the control for PRECTR's fusion. Wide&Deep given every input PRECTR has beyond
  it (query, item and pair vectors, the relevance features) through a shared text trunk, and
  the relevance levels as an auxiliary task on that trunk (``rsl_logits``), but no fusion: the
  click logit is Wide&Deep's, the trunk one more deep input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from service.contract import RELEVANCE_LEVELS, FeatureSpec
from training.layers import (
    MLP,
    CrossNetwork,
    FieldEmbedding,
    TargetAttention,
    factorization_machine,
)

Batch = dict[str, Tensor]


@dataclass(frozen=True)
class TabularConfig:
    """Hyperparameters shared by the tabular baselines."""

    embedding_dim: int = 16
    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.0
    cross_layers: int = 2
    attention_heads: int = 2
    text_dim: int = 64
    text_hidden: int = 64  # WideDeepPair's text trunk


def _score(logit: Tensor) -> dict[str, Tensor]:
    return {"logit": logit, "score": torch.sigmoid(logit)}


class TabularInput(nn.Module):
    """Embeddings of every categorical field, flattened, beside the dense features.

    Shapes:
        categorical (B, F), dense (B, Dd) -> (B, F * E + Dd); `fields` gives (B, F, E).
    """

    def __init__(self, spec: FeatureSpec, embedding_dim: int) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(spec, embedding_dim)
        self.n_dense = len(spec.select(kind="dense"))
        self.out_dim = self.embedding.n_fields * embedding_dim + self.n_dense

    def fields(self, batch: Batch) -> Tensor:
        return self.embedding(batch["categorical"])  # type: ignore[no-any-return]

    def forward(self, batch: Batch) -> Tensor:
        return torch.cat([self.fields(batch).flatten(1), batch["dense"]], dim=1)


class WideLinear(nn.Module):
    """The wide part: a weight per bucket of every field plus a linear map of dense features.

    Shapes:
        categorical (B, F), dense (B, Dd) -> (B, out_dim).
    """

    def __init__(self, spec: FeatureSpec, out_dim: int = 1) -> None:
        super().__init__()
        self.weights = FieldEmbedding(spec, out_dim)
        self.dense = nn.Linear(len(spec.select(kind="dense")), out_dim)

    def forward(self, batch: Batch) -> Tensor:
        return self.weights(batch["categorical"]).sum(dim=1) + self.dense(batch["dense"])  # type: ignore[no-any-return]


class LogisticRegression(nn.Module):
    """LR: logit = sum of bucket weights + w . dense + b.

    Example::

        >>> from service.contract import default_feature_spec
        >>> from training.models.baselines import example_batch
        >>> spec = default_feature_spec()
        >>> LogisticRegression(spec, TabularConfig())(example_batch(spec, 3))["score"].shape
        torch.Size([3])
    """

    def __init__(self, spec: FeatureSpec, config: TabularConfig) -> None:
        super().__init__()
        self.wide = WideLinear(spec)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return _score(self.wide(batch).squeeze(-1))


class DNN(nn.Module):
    """Embedding & MLP with sum-pooled history (query and pair vectors of past clicks).

    Shapes:
        batch (B candidates, R requests) -> logit, score (B,); history pooled per request.
    """

    def __init__(self, spec: FeatureSpec, config: TabularConfig) -> None:
        super().__init__()
        self.input = TabularInput(spec, config.embedding_dim)
        self.mlp = MLP(self.input.out_dim + 2 * config.text_dim, config.hidden, 1, config.dropout)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        mask = batch["history_mask"].unsqueeze(-1).float()  # (R, L, 1)
        pooled = torch.cat(
            [(batch["history_query_vec"] * mask).sum(1), (batch["history_pair_vec"] * mask).sum(1)],
            dim=1,
        )[batch["request_index"]]  # (B, 2D), pooled once per request
        return _score(self.mlp(torch.cat([self.input(batch), pooled], dim=1)).squeeze(-1))


class WideDeep(nn.Module):
    """Wide linear + deep MLP; ``out_dim`` > 1 gives one logit per relevance level (PRECTR g).

    Shapes:
        batch -> logits (B, out_dim) from `logits`; forward gives the (B,) click logit.
    """

    def __init__(
        self, spec: FeatureSpec, config: TabularConfig, out_dim: int = 1, extra_dim: int = 0
    ) -> None:
        super().__init__()
        self.input = TabularInput(spec, config.embedding_dim)
        self.wide = WideLinear(spec, out_dim)
        self.deep = MLP(self.input.out_dim + extra_dim, config.hidden, out_dim, config.dropout)

    def logits(self, batch: Batch, extra: Tensor | None = None) -> Tensor:
        deep_in = self.input(batch)
        if extra is not None:
            deep_in = torch.cat([deep_in, extra], dim=1)
        return self.wide(batch) + self.deep(deep_in)  # type: ignore[no-any-return]

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return _score(self.logits(batch).squeeze(-1))


class SuKD(nn.Module):
    """Wide&Deep with the query and item text vectors as supplementary deep inputs.

    Shapes:
        batch -> logit, score (B,); query_vec (R, D) gathered to (B, D).
    """

    def __init__(self, spec: FeatureSpec, config: TabularConfig) -> None:
        super().__init__()
        self.base = WideDeep(spec, config, extra_dim=2 * config.text_dim)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        query = batch["query_vec"][batch["request_index"]]  # (B, D)
        extra = torch.cat([query, batch["item_vec"]], dim=1)
        return _score(self.base.logits(batch, extra).squeeze(-1))


class WideDeepPair(nn.Module):
    """Wide&Deep + the pair vector and the relevance auxiliary task (PRECTR's extra information
    without its fusion).

    Shapes:
        query_vec (R, D) gathered to (B, D); item_vec, pair_vec (B, D); relevance features
        (B, Rf) -> trunk (B, H) -> rsl_logits (B, 4); Wide&Deep(tabular, trunk) -> logit,
        score (B,).
    """

    def __init__(self, spec: FeatureSpec, config: TabularConfig) -> None:
        super().__init__()
        dense_names = [f.name for f in spec.select(kind="dense")]
        self.relevance_columns = [dense_names.index(n) for n in spec.relevance_features]
        text_in = 3 * config.text_dim + len(self.relevance_columns)
        self.trunk = nn.Sequential(nn.Linear(text_in, config.text_hidden), nn.ReLU())
        self.relevance_head = nn.Linear(config.text_hidden, RELEVANCE_LEVELS)
        self.base = WideDeep(spec, config, extra_dim=config.text_hidden)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        query = batch["query_vec"][batch["request_index"]]  # (B, D)
        relevance = batch["dense"][:, self.relevance_columns]
        text = torch.cat([query, batch["item_vec"], batch["pair_vec"], relevance], dim=1)
        hidden = self.trunk(text)  # (B, H)
        return {
            **_score(self.base.logits(batch, hidden).squeeze(-1)),
            "rsl_logits": self.relevance_head(hidden),
        }


class DeepFM(nn.Module):
    """First-order weights + FM over field embeddings + deep MLP over the same embeddings.

    Shapes:
        batch -> logit, score (B,); field embeddings (B, F, E).
    """

    def __init__(self, spec: FeatureSpec, config: TabularConfig) -> None:
        super().__init__()
        self.input = TabularInput(spec, config.embedding_dim)
        self.wide = WideLinear(spec)
        self.deep = MLP(self.input.out_dim, config.hidden, 1, config.dropout)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        fields = self.input.fields(batch)  # (B, F, E)
        deep_in = torch.cat([fields.flatten(1), batch["dense"]], dim=1)
        logit = self.wide(batch) + factorization_machine(fields) + self.deep(deep_in)
        return _score(logit.squeeze(-1))


class DCNv2(nn.Module):
    """DCNv2 (parallel): cross network and deep MLP over x0, concatenated, then a linear head.

    ``extra_dim`` widens x0 with an injected vector (ELEC's gain network injects the M-LLM
    vector there). `high_level` is the vector before the head, shape (B, D + hidden[-1]).
    """

    def __init__(self, spec: FeatureSpec, config: TabularConfig, extra_dim: int = 0) -> None:
        super().__init__()
        self.input = TabularInput(spec, config.embedding_dim)
        width = self.input.out_dim + extra_dim
        self.cross = CrossNetwork(width, config.cross_layers)
        self.deep = MLP(width, config.hidden, dropout=config.dropout)
        self.high_level_dim = width + self.deep.out_dim
        self.head = nn.Linear(self.high_level_dim, 1)

    def high_level(self, batch: Batch, extra: Tensor | None = None) -> Tensor:
        x0 = self.input(batch)
        if extra is not None:
            x0 = torch.cat([x0, extra], dim=1)
        return torch.cat([self.cross(x0), self.deep(x0)], dim=1)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return _score(self.head(self.high_level(batch)).squeeze(-1))


class DIN(nn.Module):
    """Target attention of the candidate over the history, pooled beside the tabular input.

    Shapes:
        batch -> logit, score (B,); keys and values projected per request (R, H, L, d).
    """

    def __init__(self, spec: FeatureSpec, config: TabularConfig) -> None:
        super().__init__()
        d = config.text_dim
        self.input = TabularInput(spec, config.embedding_dim)
        self.attention = TargetAttention(2 * d, 2 * d, 2 * d, d, config.attention_heads)
        self.mlp = MLP(self.input.out_dim + d, config.hidden, 1, config.dropout)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        at = batch["request_index"]
        target = torch.cat([batch["query_vec"][at], batch["item_vec"]], dim=1)  # (B, 2D)
        history = torch.cat([batch["history_query_vec"], batch["history_pair_vec"]], dim=2)
        # Keys and values are projected once per request; only the query is per candidate.
        k, v = self.attention.project_sequence(history, history)  # (R, H, L, d)
        interest = self.attention.attend(target, k[at], v[at], batch["history_mask"][at])  # (B, D)
        return _score(self.mlp(torch.cat([self.input(batch), interest], dim=1)).squeeze(-1))


def example_batch(
    spec: FeatureSpec, n: int, history: int = 50, seed: int = 0, requests: int = 1
) -> Batch:
    """A random but valid batch of ``n`` candidates over ``requests`` requests (docs, tests,
    export traces)."""
    g = torch.Generator().manual_seed(seed)
    categorical = spec.select(kind="categorical")
    d = next(f.dim for f in spec.select(kind="vector") if f.dim) or 64
    buckets = torch.stack(
        [torch.randint(0, f.buckets or 2, (n,), generator=g) for f in categorical], dim=1
    )
    lengths = torch.randint(0, history + 1, (requests,), generator=g)
    return {
        "categorical": buckets,
        "dense": torch.rand(n, len(spec.select(kind="dense")), generator=g),
        "item_vec": torch.randn(n, d, generator=g) * 0.2,
        "pair_vec": torch.randn(n, d, generator=g) * 0.2,
        "request_index": torch.arange(n) * requests // n,
        "query_vec": torch.randn(requests, d, generator=g) * 0.2,
        "history_query_vec": torch.randn(requests, history, d, generator=g) * 0.2,
        "history_pair_vec": torch.randn(requests, history, d, generator=g) * 0.2,
        "history_mask": torch.arange(history)[None, :] < lengths[:, None],
    }
