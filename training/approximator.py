"""PRECTR's pair approximator fitted to, and judged by, what the served model reads from it.

The tower's approximator (training.tower) is fitted by squared error to the reduced pair vectors.
Pair vectors share a large common direction, so a least-squares guess shrinks towards the mean
pair, and the uncentred cosine (0.998) hid how much of the rest it misses (centred: 0.78). What
matters to a ranking is what PRECTR's relevance module (RSL) reads from the vector: an
approximated pair was read as far more relevant than its real pair (expected level 2.51 against
1.55 on a rater-graded catalogue).

So once PRECTR has trained, a copy of the tower's approximator is fine-tuned with the trained
model frozen, on what the RSL reads: the squared difference between the expected relevance
level it reads from the approximated vector and the one it reads from the real vector, plus a
small weight on the vector's squared error (the vector also feeds PRIM's tau, which should not
read nonsense). That copy is what the run saves and export folds into the served graph.

Measured on the default world's PRECTR (seed 0, held-out queries): the tower's approximator
reads levels 0.329 off the real pair's on average (bias +0.009); the fitted one 0.198 (bias
+0.020), and its label error falls from 0.387 to 0.270 (0.191 with the real pairs). What did
not pay off: the KL divergence from the RSL's reading of the real pair (it hedges: the reading
spreads over the levels and sinks, bias -0.18, error 0.339), and four more epochs of squared
error alone (bias -0.19: the level bias of a squared-error fit is noise of that size, set by
where its training stops, not a shift to subtract). On CrowdFlower the RSL reads little from
the pair vector (label error 0.79 with the real pairs) and both approximators are within 0.04
levels of the real pair.

A seeded share of the training queries is kept out of the fit, so that `approximator_report`
can state the error on pairs of queries the approximator never saw, on every world (synthetic
worlds have no query outside the training split).

The report sets the expected relevance level the served RSL assigns with the approximated
vector against the one it assigns with the real vector and against the label: the bias (mean
signed difference), the mean absolute error, and the centred cosine.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from tqdm import tqdm

from service.contract import RELEVANCE_LEVELS
from training.data.tables import World
from training.features import ReducedVectors, pair_relevance_features
from training.models.prectr import PRECTR, RelevanceArch
from training.models.text_tower import PairApproximator

log = logging.getLogger(__name__)
Array = np.ndarray[Any, Any]


class ApproximatorFit(BaseModel):
    """How the served approximator is fitted to a trained PRECTR (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(8, ge=0)  # 0 serves the tower's approximator unchanged
    lr: float = 1e-3
    batch_size: int = 1024
    # Weight of the vector's squared error (summed over D, ~1-10) against the squared level
    # error (~0.01-0.1): small, so the relevance reading decides (1e-2 and up left half the
    # level error in place on the default world).
    vector_weight: float = Field(1e-3, ge=0.0)
    held_out_share: float = Field(0.1, ge=0.0, lt=1.0)


def held_out_queries(world: World, share: float, seed: int) -> Array:
    """The queries the approximator is not fitted on: every query outside the training split,
    and a seeded ``share`` of the training split's queries (sorted ids; never the empty query)."""
    imp = world.impressions
    train = np.unique(imp["query_id"][imp["split"] == 0])
    train = train[train != 0]
    rng = np.random.default_rng([seed, 2])  # its own stream: no other draw of the run moves
    kept_out = rng.choice(train, round(share * len(train)), replace=False)
    others = np.setdiff1d(np.unique(world.pairs["query_id"]), train)
    return np.union1d(kept_out, others[others != 0])


def _pairs_split(world: World, held_out: Array) -> tuple[Array, Array]:
    """Rows of ``world.pairs``: (fitted on, held out)."""
    query = world.pairs["query_id"]
    out = np.isin(query, held_out)
    return np.flatnonzero(~out & (query != 0)), np.flatnonzero(out)


class PairInputs:
    """The RSL's inputs for rows of ``world.pairs``: query, item, real pair vectors (P, D) and the
    lexical relevance features (P, R)."""

    def __init__(self, world: World, reduced: ReducedVectors) -> None:
        pairs = world.pairs
        self.query = torch.from_numpy(reduced.queries.astype(np.float32))[
            torch.from_numpy(pairs["query_id"].astype(np.int64))
        ]
        self.item = torch.from_numpy(reduced.items.astype(np.float32))[
            torch.from_numpy(pairs["item_id"].astype(np.int64))
        ]
        self.pair = torch.from_numpy(reduced.pairs.astype(np.float32))
        self.relevance = torch.from_numpy(pair_relevance_features(world))
        self.label = pairs["relevance"].astype(np.float64)


def fit_approximator(
    model: PRECTR,
    approximator: PairApproximator,
    world: World,
    reduced: ReducedVectors,
    settings: ApproximatorFit,
    seed: int,
) -> tuple[PairApproximator, dict[str, Any]]:
    """A copy of ``approximator`` fine-tuned against the frozen ``model``'s RSL; returns it and its
    report (`approximator_report` of the tower's approximator and of the fitted one)."""
    held_out = held_out_queries(world, settings.held_out_share, seed)
    fit_rows, _ = _pairs_split(world, held_out)
    inputs = PairInputs(world, reduced)
    judge = copy.deepcopy(model.rsl).eval().requires_grad_(False)
    fitted = copy.deepcopy(approximator).train()
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 3])
    optimizer = torch.optim.Adam(fitted.parameters(), lr=settings.lr)
    for epoch in range(settings.epochs):
        order = rng.permutation(fit_rows)
        size = settings.batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        bar = tqdm(batches, desc=f"approximator fit {epoch + 1}/{settings.epochs}", leave=False)
        for rows in bar:
            r = torch.from_numpy(rows)
            query, item, real, relevance = (
                inputs.query[r],
                inputs.item[r],
                inputs.pair[r],
                inputs.relevance[r],
            )
            approximated = fitted(query, item)  # (B, D)
            with torch.no_grad():
                target = _levels(judge(query, item, real, relevance))  # (B,)
            level_error = (_levels(judge(query, item, approximated, relevance)) - target).pow(2)
            vector_error = (approximated - real).pow(2).sum(1)
            loss = (level_error + settings.vector_weight * vector_error).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.set_postfix(level=f"{level_error.mean().item():.4f}")
    fitted.eval()
    report = {
        "settings": settings.model_dump(),
        "held_out_queries": len(held_out),
        "tower": approximator_report(model, approximator, world, inputs, held_out),
        "served": approximator_report(model, fitted, world, inputs, held_out),
    }
    log.info("pair approximator: %s", report)
    return fitted, report


def _levels(logits: Tensor) -> Tensor:
    """Expected relevance level of RSL logits: (B, 4) -> (B,)."""
    levels = torch.arange(RELEVANCE_LEVELS, dtype=logits.dtype)
    return torch.softmax(logits, dim=1) @ levels


def _expected_level(judge: RelevanceArch, inputs: PairInputs, rows: Array, pair: Tensor) -> Array:
    r = torch.from_numpy(rows)
    logits = judge(inputs.query[r], inputs.item[r], pair, inputs.relevance[r])  # (P, 4)
    return _levels(logits).numpy()


def approximator_report(
    model: PRECTR,
    approximator: PairApproximator,
    world: World,
    inputs: PairInputs,
    held_out: Array,
) -> dict[str, dict[str, float]]:
    """The approximator by the relevance the served RSL reads from it: on the pairs of the
    ``held_out`` queries (never fitted on) and on the pairs it was fitted on ("in_sample")."""
    fitted_rows, held_out_rows = _pairs_split(world, held_out)
    report = {"in_sample": _measure(model, approximator, inputs, fitted_rows)}
    if len(held_out_rows):
        report["held_out"] = _measure(model, approximator, inputs, held_out_rows)
    return report


def _measure(
    model: PRECTR, approximator: PairApproximator, inputs: PairInputs, rows: Array
) -> dict[str, float]:
    r = torch.from_numpy(rows)
    real = inputs.pair[r]
    label = inputs.label[rows]
    with torch.no_grad():
        approximated = approximator.eval()(inputs.query[r], inputs.item[r])
        judge = model.eval().rsl
        from_real = _expected_level(judge, inputs, rows, real)
        from_approximated = _expected_level(judge, inputs, rows, approximated)
        centre = real.mean(dim=0, keepdim=True)
        centred = torch.nn.functional.cosine_similarity(approximated - centre, real - centre)
        uncentred = torch.nn.functional.cosine_similarity(approximated, real)
    difference = from_approximated - from_real
    return {
        "pairs": len(rows),
        "level_bias": round(float(difference.mean()), 4),
        "level_mean_abs_error": round(float(np.abs(difference).mean()), 4),
        "label_mae_real": round(float(np.abs(from_real - label).mean()), 4),
        "label_mae_approximated": round(float(np.abs(from_approximated - label).mean()), 4),
        "cosine": round(float(uncentred.mean()), 4),
        "centred_cosine": round(float(centred.mean()), 4),
    }
