"""The summary every data command prints: sizes, CTR by relevance level, history lengths."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.contract import EMPTY_QUERY_ID, RELEVANCE_LEVELS
from training.data.simulate import ClickModel
from training.data.tables import SPLITS, World
from training.evaluate import auc
from training.segments import MIN_SEGMENT_ROWS, row_segments


def summarize(world: World) -> dict[str, Any]:
    """Headline figures of a world, as plain JSON-able values."""
    imp = world.impressions
    click = imp["click"].astype(np.float64)
    relevance = imp["relevance"]
    hist = imp["hist_len"].astype(np.float64)
    split = imp["split"]
    summary: dict[str, Any] = {
        "source": world.meta.get("world") or world.meta.get("source"),
        "impressions": imp.n_rows,
        "requests": len(np.unique(imp["request_id"])),
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
    if (
        "sensitivity" in world.users
        and "click_model" in world.meta
        and "category_department" in (world.meta)
    ):
        summary["oracle_without"] = oracle_ablation(world)
        if "worded_quality" in world.items:
            summary["text_reach"] = text_reach_by_segment(world)
    summary.update(segment_shares(world))
    return summary


def segment_shares(world: World) -> dict[str, Any]:
    """The share of test impressions in each segment (training.segments): where a model meets
    items and queries its ids learnt little or nothing of."""
    test = np.flatnonzero(world.impressions["split"] == 2)
    if not len(test):
        return {}
    return {
        "test_segments": {
            name: float(mask.mean()) for name, mask in row_segments(world, test).items()
        }
    }


class _Oracle:
    """The planted P(click) of a world's test rows, with any factor replaced by another value.

    Needs the synthetic world's latent columns (sensitivity, interest, quality, price taste).
    """

    def __init__(self, world: World) -> None:
        imp = world.impressions
        self.test = np.flatnonzero(imp["split"] == 2)
        self.model = ClickModel.from_dict(world.meta["click_model"])
        user, item = imp["user_id"][self.test], imp["item_id"][self.test]
        department = np.asarray(world.meta["category_department"])
        query_category = world.queries["category"][imp["query_id"][self.test]].astype(np.int64)
        self.sensitivity = world.users["sensitivity"].astype(np.float64)
        self.user = user
        self.factors: dict[str, Any] = {
            "relevance": imp["relevance"][self.test].astype(np.int64),
            "sensitivity": self.sensitivity[user, department[np.maximum(query_category, 0)]],
            "interest": world.users["interest"][
                user, world.items["category"][item].astype(np.int64)
            ].astype(np.float64),
            "quality": world.items["quality"][item].astype(np.float64),
            "price_gap": np.abs(
                world.items["price_bucket"][item].astype(np.float64)
                - world.users["price_pref"][user]
            ),
        }
        self.worded = (
            world.items["worded_quality"][item].astype(np.float64)
            if "worded_quality" in world.items
            else None
        )
        self.examination = self.model.examination(imp["position"][self.test])
        self.click = imp["click"][self.test]

    def auc(self, mask: Any = slice(None), **replaced: Any) -> float:
        """Test AUC (over ``mask`` of the test rows) of P(click) with ``replaced`` factors."""
        args = {**self.factors, **replaced}
        p_click = self.examination / (1 + np.exp(-self.model.attraction_logit(**args)))
        return auc(self.click[mask], p_click[mask])


def oracle_ablation(world: World) -> dict[str, float]:
    """Test AUC of the planted P(click) with one factor at a time replaced by its mean.

    The drop from the full oracle is what that factor is worth.
    """
    oracle = _Oracle(world)
    factors, n = oracle.factors, len(oracle.test)
    out = {"full": oracle.auc()}
    out["relevance"] = oracle.auc(relevance=np.full(n, -1))
    for name in ("sensitivity", "interest", "quality", "price_gap"):
        out[name] = oracle.auc(**{name: np.full(n, factors[name].mean())})
    out["sensitivity_by_department"] = oracle.auc(
        sensitivity=oracle.sensitivity.mean(axis=1)[oracle.user]
    )
    if oracle.worded is not None:  # the long-tail world: the part the text says
        worded = oracle.worded
        out["worded_quality"] = oracle.auc(quality=factors["quality"] - worded + worded.mean())
    return out


def text_reach_by_segment(world: World) -> dict[str, dict[str, float]]:
    """What reading the item text is worth where the ids know nothing: per segment of the test
    rows (training.segments), the oracle's AUC knowing the worded part of quality but not the
    latent part (``words_read``: the most a model that reads the text and not the ids can know
    of quality, as on a cold item) and knowing neither (``words_unread``), every other factor
    exact; ``reach`` is the difference. Empty for a world with no worded quality."""
    oracle = _Oracle(world)
    if oracle.worded is None:
        return {}
    quality, worded = oracle.factors["quality"], oracle.worded
    latent = quality - worded
    words_read = worded + latent.mean()
    unread = np.full(len(quality), quality.mean())
    out = {}
    for name, mask in row_segments(world, oracle.test).items():
        if mask.sum() < MIN_SEGMENT_ROWS or not 0 < oracle.click[mask].sum() < mask.sum():
            continue
        read = oracle.auc(mask, quality=words_read)
        not_read = oracle.auc(mask, quality=unread)
        out[name] = {"words_read": read, "words_unread": not_read, "reach": read - not_read}
    return out


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
    if "test_segments" in summary:
        lines.append(
            "test rows    "
            + "  ".join(f"{name}: {share:.1%}" for name, share in summary["test_segments"].items())
        )
    if "oracle_test_auc" in summary:
        lines.append(
            f"oracle AUC    {summary['oracle_test_auc']:.4f} (planted P(click), test split)"
        )
    if "oracle_without" in summary:
        lines.append(
            "oracle w/o    "
            + "  ".join(
                f"{name}: {value:.4f}"
                for name, value in summary["oracle_without"].items()
                if name != "full"
            )
        )
    if summary.get("text_reach"):
        lines.append(
            "text reach    "
            + "  ".join(
                f"{name}: {cell['words_unread']:.4f} -> {cell['words_read']:.4f}"
                for name, cell in summary["text_reach"].items()
            )
            + " (oracle AUC, quality unknown -> its worded part read)"
        )
    return "\n".join(lines)
