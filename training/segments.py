"""Where a test row sits: on a head, tail or cold item, under a seen or unseen query.

The papers' claims live in these segments: a language model knows what ids learn slowly (tail
items), or never (cold items and queries whose ids no training row carried). Segments are read
off the world's training split, as a model would see it:

- items: **cold** (no training impression), **tail** (1 to ``TAIL_BELOW - 1``), **head** (more);
- queries: **seen** or **unseen** in a training impression (search requests only; a
  recommendation request has no query and is in neither).

`segment_metrics` gives the click AUC of each segment's rows and, for the query segments (whole
requests), NDCG@10 against the graded relevance; each with the number of rows it covers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from service.contract import EMPTY_QUERY_ID
from training.data.tables import World
from training.evaluate import auc, ndcg_at_k

Array = npt.NDArray[Any]
TAIL_BELOW = 20
#: A segment with fewer test rows gets no figure in a report: its AUC would be noise (Amazon's
#: unseen queries are ~30 rows).
MIN_SEGMENT_ROWS = 200
ITEM_SEGMENTS: tuple[str, ...] = ("head_items", "tail_items", "cold_items")
QUERY_SEGMENTS: tuple[str, ...] = ("seen_queries", "unseen_queries")
SEGMENTS: tuple[str, ...] = ITEM_SEGMENTS + QUERY_SEGMENTS
SEGMENT_LABELS = {
    "head_items": f"head items (>= {TAIL_BELOW} training impressions)",
    "tail_items": f"tail items (1-{TAIL_BELOW - 1})",
    "cold_items": "cold items (none)",
    "seen_queries": "seen queries",
    "unseen_queries": "unseen queries",
}


def row_segments(world: World, rows: Array) -> dict[str, npt.NDArray[np.bool_]]:
    """A mask over ``rows`` per segment (see the module docstring)."""
    imp = world.impressions
    train = np.asarray(imp["split"]) == 0
    item, query = np.asarray(imp["item_id"]), np.asarray(imp["query_id"])
    item_seen = np.bincount(item[train], minlength=world.items.n_rows)[item[rows]]
    query_seen = np.bincount(query[train], minlength=world.queries.n_rows)[query[rows]]
    search = query[rows] != EMPTY_QUERY_ID
    return {
        "head_items": item_seen >= TAIL_BELOW,
        "tail_items": (item_seen > 0) & (item_seen < TAIL_BELOW),
        "cold_items": item_seen == 0,
        "seen_queries": search & (query_seen > 0),
        "unseen_queries": search & (query_seen == 0),
    }


def segment_metrics(
    scores: Array,
    click: Array,
    relevance: Array,
    request: Array,
    segments: dict[str, npt.NDArray[np.bool_]],
    prefix: str = "",
) -> dict[str, float]:
    """``{prefix}auc@{segment}``, ``{prefix}ndcg_at_10@{segment}`` (query segments) and
    ``rows@{segment}``; a segment whose rows hold a single class gets no AUC."""
    out: dict[str, float] = {}
    for name, mask in segments.items():
        out[f"rows@{name}"] = int(mask.sum())
        labels = click[mask]
        if 0 < labels.sum() < len(labels):
            out[f"{prefix}auc@{name}"] = auc(labels, scores[mask])
        if name in QUERY_SEGMENTS and mask.any():
            ndcg, requests = ndcg_at_k(relevance[mask], scores[mask], request[mask], k=10)
            if requests:
                out[f"{prefix}ndcg_at_10@{name}"] = ndcg
    return out


def drop_small_segments(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` without the figures of segments of fewer than ``MIN_SEGMENT_ROWS`` rows."""
    small = {
        key.removeprefix("rows@")
        for key, n in metrics.items()
        if key.startswith("rows@") and n < MIN_SEGMENT_ROWS
    }
    return {
        key: value
        for key, value in metrics.items()
        if "@" not in key or key.startswith("rows@") or key.split("@", 1)[1] not in small
    }
