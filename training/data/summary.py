"""The summary every data command prints: sizes, CTR by relevance level, history lengths."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.contract import EMPTY_QUERY_ID, RELEVANCE_LEVELS
from training.data.tables import SPLITS, World
from training.evaluate import auc


def summarize(world: World) -> dict[str, Any]:
    """Headline figures of a world, as plain JSON-able values."""
    imp = world.impressions
    click = imp["click"].astype(np.float64)
    relevance = imp["relevance"]
    hist = imp["hist_len"].astype(np.float64)
    split = imp["split"]
    summary: dict[str, Any] = {
        "source": world.meta.get("source"),
        "impressions": imp.n_rows,
        "requests": int(len(np.unique(imp["request_id"]))),
        "users": world.users.n_rows,
        "queries": world.queries.n_rows - 1,  # row 0 is the empty query
        "items": world.items.n_rows,
        "pairs": world.pairs.n_rows,
        "history_clicks": world.clicks.n_rows,
        "recommendation_share": float(np.mean(imp["query_id"] == EMPTY_QUERY_ID)),
        "ctr": float(click.mean()),
        "conversion_per_click": float(imp["conversion"].sum() / max(click.sum(), 1.0)),
        "ctr_by_relevance": {
            str(level): float(click[relevance == level].mean())
            for level in range(RELEVANCE_LEVELS)
            if np.any(relevance == level)
        },
        "ctr_no_query": float(click[relevance < 0].mean()) if np.any(relevance < 0) else None,
        "history_length": {
            "mean": float(hist.mean()),
            "p50": float(np.percentile(hist, 50)),
            "p90": float(np.percentile(hist, 90)),
            "max": int(hist.max()),
        },
        "split_rows": {name: int(np.sum(split == k)) for k, name in enumerate(SPLITS)},
    }
    p_click = imp["p_click"].astype(np.float64)
    test = (split == 2) & np.isfinite(p_click)
    if np.any(test):
        summary["oracle_test_auc"] = auc(click[test], p_click[test])
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A few aligned lines for a terminal."""
    hist = summary["history_length"]
    lines = [
        f"source        {summary['source']}",
        f"impressions   {summary['impressions']:,} in {summary['requests']:,} requests "
        f"({summary['recommendation_share']:.1%} without a query)",
        f"users         {summary['users']:,}",
        f"queries       {summary['queries']:,}",
        f"items         {summary['items']:,}",
        f"pairs         {summary['pairs']:,} (query, item) with a relevance label",
        f"CTR           {summary['ctr']:.4f} overall; conversions per click "
        f"{summary['conversion_per_click']:.3f}",
        "CTR by level  "
        + "  ".join(f"{lvl}: {ctr:.4f}" for lvl, ctr in summary["ctr_by_relevance"].items())
        + (f"  no query: {summary['ctr_no_query']:.4f}" if summary["ctr_no_query"] else ""),
        f"history       mean {hist['mean']:.1f}, p50 {hist['p50']:.0f}, p90 {hist['p90']:.0f}, "
        f"max {hist['max']} (clicks before the impression)",
        "splits        "
        + "  ".join(f"{name}: {rows:,}" for name, rows in summary["split_rows"].items()),
    ]
    if "oracle_test_auc" in summary:
        lines.append(f"oracle AUC    {summary['oracle_test_auc']:.4f} (planted P(click), test split)")
    return "\n".join(lines)
