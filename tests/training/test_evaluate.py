"""Offline metrics against hand-computed examples."""

from __future__ import annotations

import numpy as np

from training.evaluate import auc, gauc, rela_impr, relevance_score_at_k


def test_gauc_equals_hand_computed_example() -> None:
    # User 1: positive above both negatives -> AUC 1, 3 impressions.
    # User 2: the positive below the negative -> AUC 0, 2 impressions.
    # User 3: no positive -> skipped.
    labels = np.array([1, 0, 0, 0, 1, 0, 0])
    scores = np.array([0.9, 0.5, 0.7, 0.8, 0.3, 0.1, 0.2])
    users = np.array([1, 1, 1, 2, 2, 3, 3])
    assert gauc(labels, scores, users) == (3 * 1.0 + 2 * 0.0) / 5


def test_auc_ties_and_rela_impr() -> None:
    assert auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert np.isnan(auc(np.array([1, 1]), np.array([0.1, 0.2])))
    assert rela_impr(0.75, 0.75) == 0.0


def test_relevance_score_takes_each_querys_top_items() -> None:
    query_vectors = np.array([[0.0, 0.0], [1.0, 0.0]])
    item_vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    query_ids = np.array([1, 1, 1, 0])
    item_ids = np.array([0, 1, 2, 1])
    scores = np.array([0.9, 0.8, 0.1, 0.99])
    # Top-2 for query 1: items 0 (cos 1) and 1 (cos 0); the no-query row is ignored.
    got = relevance_score_at_k(query_ids, item_ids, scores, query_vectors, item_vectors, k=2)
    assert got == (0.5, 1, 1)  # query 1 shows 3 items: its top 2 can move


def test_relevance_score_counts_the_queries_whose_top_k_cannot_move() -> None:
    """On data where queries show k items or fewer every model gets the same score; the count
    of queries with more than k items says how much of the data the figure sees."""
    vectors = np.eye(3)
    query_ids = np.array([1, 1, 1, 2, 2])
    item_ids = np.array([0, 1, 2, 0, 1])
    one = relevance_score_at_k(
        query_ids, item_ids, np.array([3, 2, 1, 2, 1.0]), vectors, vectors, 2
    )
    other = relevance_score_at_k(
        query_ids, item_ids, np.array([1, 2, 3, 1, 2.0]), vectors, vectors, 2
    )
    assert one[1:] == other[1:] == (1, 2)  # query 2 (2 items) is the same in every ranking
