"""Offline metrics. AUC is here now; GAUC, LogLoss, RelaImpr and Relevance Score@10 join it with
the model evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def auc(labels: npt.NDArray[Any], scores: npt.NDArray[Any]) -> float:
    """Area under the ROC curve by the rank-sum formula, ties given their mean rank.

    >>> auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    y = np.asarray(labels).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(y), dtype=np.float64)
    # Mean rank within each run of equal scores.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mean_rank = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(mean_rank, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
