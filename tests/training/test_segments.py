"""Segments: every test row is on exactly one item segment; query segments cover searches."""

from __future__ import annotations

import numpy as np

from service.contract import EMPTY_QUERY_ID
from training.data.synthetic import generate_world
from training.segments import TAIL_BELOW, row_segments, segment_metrics


def test_segments_partition_the_rows_by_training_impressions() -> None:
    world = generate_world("tiny", seed=1, kind="longtail")
    imp = world.impressions
    rows = np.flatnonzero(imp["split"] == 2)
    segments = row_segments(world, rows)
    items = segments["head_items"].astype(int) + segments["tail_items"] + segments["cold_items"]
    assert np.all(items == 1)
    search = imp["query_id"][rows] != EMPTY_QUERY_ID
    assert np.array_equal(segments["seen_queries"] | segments["unseen_queries"], search)
    trained = np.bincount(imp["item_id"][imp["split"] == 0], minlength=world.items.n_rows)
    seen = trained[imp["item_id"][rows]]
    assert np.all(seen[segments["cold_items"]] == 0)
    assert np.all(seen[segments["tail_items"]] < TAIL_BELOW)
    assert segments["cold_items"].any() and segments["unseen_queries"].any()


def test_segment_metrics_score_each_segment_on_its_own_rows() -> None:
    click = np.array([1, 0, 1, 0, 0, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.7])
    relevance = np.array([3, 0, 2, 1, -1, -1])  # request 1 ranked worst first
    request = np.array([0, 0, 1, 1, 2, 2])
    segments = {
        "head_items": np.array([True, True, False, False, True, True]),
        "cold_items": np.array([False, False, True, True, False, False]),
        "unseen_queries": np.array([True, True, True, True, False, False]),
    }
    out = segment_metrics(scores, click, relevance, request, segments, prefix="m_")
    assert out["m_auc@cold_items"] == 0.0  # the clicked cold row scored below the other
    assert out["m_auc@head_items"] == 1.0
    assert out["rows@cold_items"] == 2
    assert 0.0 < out["m_ndcg_at_10@unseen_queries"] < 1.0
    assert "m_ndcg_at_10@cold_items" not in out  # item segments split requests: no NDCG


def test_a_segment_of_few_rows_gets_no_figure() -> None:
    from training.segments import MIN_SEGMENT_ROWS, drop_small_segments

    metrics = {
        "auc": 0.7,
        "rows@cold_items": MIN_SEGMENT_ROWS - 1,
        "auc@cold_items": 1.0,
        "rows@head_items": MIN_SEGMENT_ROWS,
        "gain_auc@head_items": 0.6,
    }
    kept = drop_small_segments(metrics)
    assert "auc@cold_items" not in kept and kept["gain_auc@head_items"] == 0.6
    assert kept["auc"] == 0.7 and kept["rows@cold_items"] == MIN_SEGMENT_ROWS - 1
