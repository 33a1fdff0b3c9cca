"""Offline metrics: AUC, GAUC (Eq. 11), LogLoss, RelaImpr (Eq. 12), Relevance Score@10 (Eq. 13),
and the per-request ranking metrics a user of `/rank` sees: NDCG@10 against graded relevance and
the click AUC within each request.

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


def _runs(groups: Array) -> list[Array]:
    """Row indices of each group (any group ids; rows need not be contiguous)."""
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(np.asarray(groups)[order])) + 1
    return [rows for rows in np.split(order, bounds) if len(rows)]


def request_auc(labels: Array, scores: Array, requests: Array) -> tuple[float, int]:
    """Unweighted mean click AUC within each request that has a click and a non-click, and the
    number of such requests: how well each returned ranking orders what its user clicked.

    >>> clicks, requests = np.array([1, 0, 0, 1, 1]), np.array([1, 1, 2, 2, 3])
    >>> request_auc(clicks, np.array([.9, .1, .8, .2, .5]), requests)  # 1.0 and 0.0; 3 skipped
    (0.5, 2)
    """
    values = [
        auc(labels[rows], scores[rows])
        for rows in _runs(requests)
        if 0 < labels[rows].sum() < len(rows)
    ]
    return (float(np.mean(values)) if values else float("nan")), len(values)


def ndcg_at_k(relevance: Array, scores: Array, requests: Array, k: int = 10) -> tuple[float, int]:
    """Mean NDCG@k of each request's ranking by ``scores`` against graded ``relevance`` (gain
    2^rel - 1), over requests with a label (rel >= 0 on every row) and a positive ideal DCG; and
    the number of such requests. Ties in score keep row order.

    >>> ndcg_at_k(np.array([3, 0, 1]), np.array([0.2, 0.9, 0.5]), np.array([7, 7, 7]), k=2)
    (0.0826..., 1)
    """
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for rows in _runs(requests):
        rel = np.asarray(relevance[rows], dtype=np.float64)
        if (rel < 0).any():
            continue  # a request without a query has no relevance labels
        gains = 2.0**rel - 1.0
        ideal = np.sort(gains)[::-1][:k]
        if ideal[0] <= 0:
            continue
        ranked = gains[np.argsort(-np.asarray(scores[rows]), kind="stable")][:k]
        values.append(float(ranked @ discounts[: len(ranked)] / (ideal @ discounts[: len(ideal)])))
    return (float(np.mean(values)) if values else float("nan")), len(values)


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
) -> tuple[float, int, int]:
    """Mean cosine between each query and its top-k items by model score (Eq. 13); with the
    number of queries whose top k a model can change (more than k distinct items shown) and
    the number of queries. On data where most queries show at most k items, every model gets
    the same score: the count says how much of the data the figure can see.

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
    queries = moving = 0
    for rows in np.split(order, bounds):
        if len(rows) == 0:
            continue
        queries += 1
        moving += len(rows) > k
        top = rows[:k]
        cosines.extend((iv[pair_item[top]] @ qv[pair_query[top[0]]]).tolist())
    return (float(np.mean(cosines)) if cosines else float("nan")), moving, queries
