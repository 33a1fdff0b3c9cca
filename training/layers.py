"""Building blocks shared by the model families, grouped by kind.

- embeddings: `FieldEmbedding` (one table per categorical field of the contract)
- dense towers: `MLP`
- explicit interactions: `CrossNetwork` (DCNv2), `factorization_machine` (DeepFM)
- sequence pooling: `TargetAttention` (multi-head, masked; DIN and PRECTR 4.5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from service.contract import FeatureSpec


class FieldEmbedding(nn.Module):
    """One embedding table per categorical field, stacked.

    Args:
        spec: the contract; its categorical fields, in order, are the columns of the input.
        dim: embedding width.

    Shapes:
        input (B, F) int64 buckets -> output (B, F, dim).

    Example::

        >>> from service.contract import default_feature_spec
        >>> spec = default_feature_spec()
        >>> emb = FieldEmbedding(spec, 4)
        >>> emb(torch.zeros(2, len(spec.select(kind="categorical")), dtype=torch.long)).shape
        torch.Size([2, 12, 4])
    """

    def __init__(self, spec: FeatureSpec, dim: int) -> None:
        super().__init__()
        fields = spec.select(kind="categorical")
        self.names = tuple(f.name for f in fields)
        tables = [nn.Embedding(f.buckets or 2, dim) for f in fields]
        for table in tables:
            nn.init.normal_(table.weight, std=0.01)
        self.tables = nn.ModuleList(tables)

    @property
    def n_fields(self) -> int:
        return len(self.tables)

    def forward(self, buckets: Tensor) -> Tensor:
        return torch.stack([t(buckets[:, i]) for i, t in enumerate(self.tables)], dim=1)


class MLP(nn.Sequential):
    """Linear -> ReLU (-> Dropout) blocks, then an optional linear output layer.

    Shapes:
        (..., in_dim) -> (..., hidden[-1]) or (..., out_dim) when out_dim is given.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        super().__init__(*layers)
        self.out_dim = width


class CrossNetwork(nn.Module):
    """DCNv2's cross layers: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l.

    Shapes:
        (B, D) -> (B, D).
    """

    def __init__(self, dim: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


def factorization_machine(embeddings: Tensor) -> Tensor:
    """Second-order FM term: 0.5 * sum((sum e)^2 - sum e^2), shape (B, F, E) -> (B, 1)."""
    square_of_sum = embeddings.sum(dim=1).pow(2)  # (B, E)
    sum_of_square = embeddings.pow(2).sum(dim=1)  # (B, E)
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)


class TargetAttention(nn.Module):
    """Multi-head scaled dot-product attention of one target over a masked sequence (Eq. 7).

    softmax(Q K^T / sqrt(d)) V with Q = W_q target, K = W_k keys, V = W_v values, per head. A row
    with an empty sequence (all masked) returns zeros rather than NaN.

    Args:
        query_dim / key_dim / value_dim: input widths; dim: the projected width (heads * d).
        heads: number of heads.

    Shapes:
        target (B, Dq), keys (B, L, Dk), values (B, L, Dv), mask (B, L) bool -> (B, dim).
        B may be 1 for a per-request computation that the caller broadcasts.
    """

    def __init__(
        self, query_dim: int, key_dim: int, value_dim: int, dim: int, heads: int = 2
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError("dim must be divisible by heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(query_dim, dim, bias=False)
        self.k = nn.Linear(key_dim, dim, bias=False)
        self.v = nn.Linear(value_dim, dim, bias=False)

    def project_sequence(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """K and V per head, (N, L, *) -> (N, H, L, d): project a sequence once, attend often."""
        n, length, _ = keys.shape
        k = self.k(keys).view(n, length, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(values).view(n, length, self.heads, self.head_dim).transpose(1, 2)
        return k, v

    def attend(self, target: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """Targets (B, Dq) over projected K, V (B, H, L, d) with mask (B, L) -> (B, dim)."""
        b, _, length, _ = k.shape
        q = self.q(target).view(b, self.heads, 1, self.head_dim)  # (B, H, 1, d)
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, 1, L)
        valid = mask.view(b, 1, 1, length)
        # finfo.min, not a literal: -1e9 overflows to -inf in fp16 and NaNs an empty history.
        logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=-1) * valid  # zero weight on padding
        pooled: Tensor = (weights @ v).reshape(b, self.heads * self.head_dim)  # (B, dim)
        return pooled

    def forward(self, target: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        k, v = self.project_sequence(keys, values)
        return self.attend(target, k, v, mask)
