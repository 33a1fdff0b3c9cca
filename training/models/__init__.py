"""Model families, one per file, and the registry the training loop builds them from.

``MODELS[name] = (model class, config dataclass)``; every model is built as ``cls(spec, config)``
and maps a batch of named input groups (training.features) to named outputs with ``score`` and
``logit`` of shape (B,).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from service.contract import FeatureSpec
from training.models.baselines import (
    DIN,
    DNN,
    DCNv2,
    DeepFM,
    LogisticRegression,
    SuKD,
    TabularConfig,
    WideDeep,
    WideDeepPair,
)
from training.models.elec import ELECConfig, VanillaNetwork
from training.models.prectr import PRECTR, PRECTRConfig

MODELS: dict[str, tuple[type[nn.Module], type[Any]]] = {
    "lr": (LogisticRegression, TabularConfig),
    "dnn": (DNN, TabularConfig),
    "wide_deep": (WideDeep, TabularConfig),
    "deepfm": (DeepFM, TabularConfig),
    "dcnv2": (DCNv2, TabularConfig),
    "din": (DIN, TabularConfig),
    "sukd": (SuKD, TabularConfig),
    "wide_deep_pair": (WideDeepPair, TabularConfig),
    "prectr": (PRECTR, PRECTRConfig),
    "vanilla": (VanillaNetwork, ELECConfig),
}


def build_config(name: str, spec: FeatureSpec, params: dict[str, Any]) -> Any:
    """A registered family's config dataclass; unknown hyperparameters are an error."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    _, config_cls = MODELS[name]
    # The text width is the contract's, not a free hyperparameter.
    text_dim = next(f.dim for f in spec.select(kind="vector"))
    values = {"text_dim": text_dim, **params}
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def build_model(name: str, spec: FeatureSpec, params: dict[str, Any]) -> nn.Module:
    """Instantiate a registered family from its hyperparameters."""
    return MODELS[name][0](spec, build_config(name, spec, params))
