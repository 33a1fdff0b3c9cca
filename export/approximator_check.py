"""How well PRECTR's pair approximator stands in for a real pair vector, judged by what the
served model does with it: the relevance the RSL module reads from it.

The approximator was judged by the cosine of its vector to the real one (0.998), but pair
vectors share a large common direction, so the uncentred cosine hides how much of the rest it
misses (centred: 0.78), and an approximated pair was read as far more relevant than its real
pair (expected level 2.51 against 1.55). Here, on pairs of queries the approximator never saw
(the world's validation and test queries), the expected relevance level the served RSL assigns
with the approximated vector is set against the one it assigns with the real vector and
against the label: the bias (mean signed difference), the mean absolute error, and the centred
cosine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from service.contract import RELEVANCE_LEVELS
from training.data.tables import World
from training.features import ReducedVectors, pair_relevance_features
from training.models.prectr import PRECTR
from training.models.text_tower import PairApproximator


def _expected_level(
    model: PRECTR,
    query: torch.Tensor,
    item: torch.Tensor,
    pair: torch.Tensor,
    relevance: torch.Tensor,
) -> np.ndarray[Any, Any]:
    logits = model.rsl(query, item, pair, relevance)  # (P, 4)
    levels = torch.arange(RELEVANCE_LEVELS, dtype=logits.dtype)
    return (torch.softmax(logits, dim=1) @ levels).numpy()


def held_out_pairs(world: World) -> np.ndarray[Any, Any]:
    """Rows of ``world.pairs`` whose query never occurs in the training split."""
    imp = world.impressions
    train_queries = np.unique(imp["query_id"][imp["split"] == 0])
    pairs = world.pairs
    return np.flatnonzero(~np.isin(pairs["query_id"], train_queries) & (pairs["query_id"] != 0))


def approximator_report(
    model: PRECTR, approximator: PairApproximator, world: World, reduced: ReducedVectors
) -> dict[str, dict[str, float]]:
    """The approximator by the relevance the served RSL reads from it: on held-out pairs (queries
    outside the training split) where the world has any, and on every pair (in-sample: the
    approximator was fitted on the training queries' pairs)."""
    relevance = pair_relevance_features(world)  # (P, 5): the RSL's lexical inputs
    every = np.flatnonzero(world.pairs["query_id"] != 0)
    report = {"in_sample": _measure(model, approximator, world, reduced, relevance, every)}
    held_out = held_out_pairs(world)
    if len(held_out):
        report["held_out"] = _measure(model, approximator, world, reduced, relevance, held_out)
    return report


def _measure(
    model: PRECTR,
    approximator: PairApproximator,
    world: World,
    reduced: ReducedVectors,
    relevance_of_pairs: np.ndarray[Any, Any],
    rows: np.ndarray[Any, Any],
) -> dict[str, float]:
    pairs = world.pairs
    query = torch.from_numpy(reduced.queries[pairs["query_id"][rows]].astype(np.float32))
    item = torch.from_numpy(reduced.items[pairs["item_id"][rows]].astype(np.float32))
    real = torch.from_numpy(reduced.pairs[rows].astype(np.float32))
    relevance = torch.from_numpy(relevance_of_pairs[rows])
    label = pairs["relevance"][rows].astype(np.float64)
    with torch.no_grad():
        approximated = approximator(query, item)
        from_real = _expected_level(model.eval(), query, item, real, relevance)
        from_approximated = _expected_level(model, query, item, approximated, relevance)
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
