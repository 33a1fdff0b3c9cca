"""Offline metrics: AUC, GAUC (Eq. 11), LogLoss, RelaImpr (Eq. 12), Relevance Score@10 (Eq. 13).

All functions take numpy arrays and return floats; none needs torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


def auc(labels: Array, scores: Array) -> float:
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


def gauc(labels: Array, scores: Array, groups: Array) -> float:
    """Impression-weighted mean of per-group AUC (Eq. 11); groups with one class are skipped.

    >>> gauc(np.array([0, 1, 0, 1, 1]), np.array([.1, .9, .8, .2, .5]), np.array([1, 1, 2, 2, 3]))
    0.5
    """
    order = np.argsort(groups, kind="stable")
    sorted_groups = np.asarray(groups)[order]
    bounds = np.flatnonzero(np.diff(sorted_groups)) + 1
    total = weight = 0.0
    for rows in np.split(order, bounds):
        y = labels[rows]
        if 0 < y.sum() < len(y):
            total += len(rows) * auc(y, scores[rows])
            weight += len(rows)
    return total / weight if weight else float("nan")


def logloss(labels: Array, probabilities: Array, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities.

    >>> round(logloss(np.array([1, 0]), np.array([0.9, 0.1])), 4)
    0.1054
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def rela_impr(model_auc: float, base_auc: float) -> float:
    """Relative AUC improvement over a base model in percent (Eq. 12).

    >>> round(rela_impr(0.76, 0.75), 2)
    4.0
    """
    return ((model_auc - 0.5) / (base_auc - 0.5) - 1.0) * 100.0


def relevance_score_at_k(
    query_ids: Array,
    item_ids: Array,
    scores: Array,
    query_vectors: Array,
    item_vectors: Array,
    k: int = 10,
) -> float:
    """Mean cosine between each query and its top-k items by model score (Eq. 13).

    Each (query, item) pair is ranked by its mean score over the rows given; queries with id 0
    (no query) are skipped. Vectors are the language model's (MiniLM) query and item vectors.
    """
    search = query_ids != 0
    q, i, s = query_ids[search], item_ids[search], scores[search]
    pair_key = q.astype(np.int64) * (int(i.max(initial=0)) + 1) + i
    unique_pairs, inverse = np.unique(pair_key, return_inverse=True)
    mean_score = np.bincount(inverse, weights=s) / np.bincount(inverse)
    pair_query = unique_pairs // (int(i.max(initial=0)) + 1)
    pair_item = unique_pairs % (int(i.max(initial=0)) + 1)
    qv = query_vectors / np.maximum(np.linalg.norm(query_vectors, axis=1, keepdims=True), 1e-12)
    iv = item_vectors / np.maximum(np.linalg.norm(item_vectors, axis=1, keepdims=True), 1e-12)
    cosines: list[float] = []
    order = np.lexsort((-mean_score, pair_query))
    bounds = np.flatnonzero(np.diff(pair_query[order])) + 1
    for rows in np.split(order, bounds):
        if len(rows) == 0:
            continue
        top = rows[:k]
        cosines.extend((iv[pair_item[top]] @ qv[pair_query[top[0]]]).tolist())
    return float(np.mean(cosines)) if cosines else float("nan")
