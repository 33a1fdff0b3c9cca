"""ELEC (papers/elec.txt, section 2): the modified LLM, the gain network and the vanilla network.

- `MLLM` (2.2): the frozen language model's mean-pooled vector of the sample text -> a
  transformation MLP {512, 256, 128} -> the high-level vector -> a sigmoid prediction layer. The
  language model itself stays outside (its vectors are computed once per distinct text), so only
  the new layers exist here, and only they train.
- `CollaborativeDCN`: DCNv2 in its stacked form (embeddings -> 2 cross layers -> deep {256,128,64})
  so the gain and the vanilla network share one structure and one high-level width even though
  the gain network's input also carries the M-LLM vector (ELEC aggregates by concatenation).
- `GainNetwork`: the collaborative module over tabular features + the M-LLM high-level vector.
- `VanillaNetwork`: the same collaborative module over tabular features only. It is the one that
  is exported and served.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from service.contract import FeatureSpec
from training.layers import MLP, CrossNetwork
from training.models.baselines import TabularInput

Batch = dict[str, Tensor]


@dataclass(frozen=True)
class ELECConfig:
    """ELEC's hyperparameters (2.3 and the paper's experimental setup)."""

    embedding_dim: int = 32
    cross_layers: int = 2
    hidden: tuple[int, ...] = (256, 128, 64)
    mllm_hidden: tuple[int, ...] = (512, 256, 128)
    lm_dim: int = 384
    dropout: float = 0.0
    text_dim: int = 64
    # LayerNorm (learnt scale and shift) on the M-LLM vector before it joins the cross network's
    # x0: the raw ReLU output has its own scale, unlike the embeddings beside it.
    injection_norm: bool = False


class MLLM(nn.Module):
    """Transformation layer and prediction layer over a frozen language model's vector.

    Shapes:
        lm_vec (B, lm_dim) -> high_level (B, mllm_hidden[-1]), logit (B,), score (B,).
    """

    def __init__(self, config: ELECConfig) -> None:
        super().__init__()
        self.transform = MLP(config.lm_dim, config.mllm_hidden, dropout=config.dropout)
        self.head = nn.Linear(self.transform.out_dim, 1)
        self.out_dim = self.transform.out_dim

    def forward(self, lm_vec: Tensor) -> dict[str, Tensor]:
        high = self.transform(lm_vec)
        logit = self.head(high).squeeze(-1)
        return {"high_level": high, "logit": logit, "score": torch.sigmoid(logit)}


class CollaborativeDCN(nn.Module):
    """Stacked DCNv2: x0 = [embeddings, dense, extra] -> cross layers -> deep MLP -> h.

    Shapes:
        batch (+ extra (B, E)) -> h (B, hidden[-1]); forward adds logit and score (B,).
    """

    def __init__(self, spec: FeatureSpec, config: ELECConfig, extra_dim: int = 0) -> None:
        super().__init__()
        self.input = TabularInput(spec, config.embedding_dim)
        width = self.input.out_dim + extra_dim
        self.cross = CrossNetwork(width, config.cross_layers)
        self.deep = MLP(width, config.hidden, dropout=config.dropout)
        self.head = nn.Linear(self.deep.out_dim, 1)

    def forward(self, batch: Batch, extra: Tensor | None = None) -> dict[str, Tensor]:
        x0 = self.input(batch)
        if extra is not None:
            x0 = torch.cat([x0, extra], dim=1)
        high = self.deep(self.cross(x0))
        logit = self.head(high).squeeze(-1)
        return {"high_level": high, "logit": logit, "score": torch.sigmoid(logit)}


class VanillaNetwork(nn.Module):
    """What serves: the collaborative module on tabular features alone.

    Example::

        >>> from service.contract import default_feature_spec
        >>> from training.models.baselines import example_batch
        >>> spec = default_feature_spec()
        >>> VanillaNetwork(spec, ELECConfig())(example_batch(spec, 3))["high_level"].shape
        torch.Size([3, 64])
    """

    def __init__(self, spec: FeatureSpec, config: ELECConfig) -> None:
        super().__init__()
        self.collaborative = CollaborativeDCN(spec, config)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return self.collaborative(batch)  # type: ignore[no-any-return]


class GainNetwork(nn.Module):
    """The collaborative module with the M-LLM high-level vector injected into its input.

    Shapes:
        batch, mllm_high (B, mllm_hidden[-1]) -> high_level (B, hidden[-1]), logit, score (B,).
    """

    def __init__(self, spec: FeatureSpec, config: ELECConfig) -> None:
        super().__init__()
        width = config.mllm_hidden[-1]
        self.collaborative = CollaborativeDCN(spec, config, extra_dim=width)
        self.injection: nn.Module = nn.LayerNorm(width) if config.injection_norm else nn.Identity()

    def forward(self, batch: Batch, mllm_high: Tensor) -> dict[str, Tensor]:
        return self.collaborative(batch, self.injection(mllm_high))  # type: ignore[no-any-return]
