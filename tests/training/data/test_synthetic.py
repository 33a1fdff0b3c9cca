"""The synthetic world: determinism, no history leakage, and learnable planted structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.contract import EMPTY_QUERY_ID, HISTORY_LENGTH
from training.data.synthetic import WorldConfig, generate_world
from training.data.tables import World
from training.evaluate import auc


@pytest.fixture(scope="module")
def world(tiny_world_dir: Path) -> World:
    return World.load(tiny_world_dir)


def test_same_seed_same_world_other_seed_other_world(world: World) -> None:
    again = generate_world("tiny", seed=0)
    for name, table in world.tables().items():
        for column, values in table.items():
            nan_aware = values.dtype.kind == "f"
            assert np.array_equal(values, again.tables()[name][column], equal_nan=nan_aware), (
                f"{name}.{column} differs between two runs with seed 0"
            )
    other = generate_world("tiny", seed=1)
    assert not np.array_equal(other.impressions["click"], world.impressions["click"])


def test_sizes_follow_the_config(world: World) -> None:
    cfg = WorldConfig.of_size("tiny")
    assert world.impressions.n_rows == cfg.n_impressions
    assert world.items.n_rows == 30 * cfg.items_per_category
    assert world.queries.n_rows == 1 + 30 * cfg.queries_per_category
    assert world.pairs.n_rows == 30 * cfg.queries_per_category * cfg.pool_size
    assert WorldConfig.of_size("default").n_impressions >= 1_000_000


def test_every_search_impression_is_a_labelled_pair(world: World) -> None:
    imp = world.impressions
    search = imp["query_id"] != EMPTY_QUERY_ID
    labelled = {
        (q, i): r
        for q, i, r in zip(
            world.pairs["query_id"], world.pairs["item_id"], world.pairs["relevance"], strict=True
        )
    }
    for q, i, r in zip(
        imp["query_id"][search][:5000],
        imp["item_id"][search][:5000],
        imp["relevance"][search][:5000],
        strict=True,
    ):
        assert labelled[(q, i)] == r
    assert np.all(imp["relevance"][~search] == -1)
    assert 0.05 < np.mean(~search) < 0.3  # some recommendation requests, no query


def test_queries_are_one_to_four_normalized_terms(world: World) -> None:
    texts = [str(t) for t in world.queries["text"][1:]]
    assert world.queries["text"][0] == ""
    assert all(1 <= len(t.split()) <= 4 for t in texts)
    assert len(set(texts)) == len(texts)


def test_history_is_strictly_before_the_impression_and_bounded(world: World) -> None:
    imp = world.impressions
    assert imp["hist_len"].max() <= HISTORY_LENGTH
    assert imp["hist_len"].max() > 10
    rng = np.random.default_rng(0)
    for row in rng.choice(imp.n_rows, 500, replace=False):
        history = world.history(int(row))
        assert np.all(history["user_id"] == imp["user_id"][row])
        assert np.all(history["time"] < imp["time"][row])
        assert np.all(history["query_id"] != EMPTY_QUERY_ID)
        # and it is the most recent clicks: the next click of this user is not before row's time
        end = int(imp["hist_end"][row])
        if end < world.clicks.n_rows and world.clicks["user_id"][end] == imp["user_id"][row]:
            assert world.clicks["time"][end] >= imp["time"][row]


def test_split_is_time_ordered(world: World) -> None:
    imp = world.impressions
    times = [imp["time"][imp["split"] == s] for s in range(3)]
    assert times[0].max() <= times[1].min() and times[1].max() <= times[2].min()
    assert 0.75 < np.mean(imp["split"] == 0) < 0.85


def _ctr(click: np.ndarray, mask: np.ndarray) -> float:
    return float(click[mask].mean())


def test_clicks_depend_on_relevance(world: World) -> None:
    imp = world.impressions
    ctr = [_ctr(imp["click"], imp["relevance"] == level) for level in range(4)]
    assert ctr == sorted(ctr) and ctr[3] > 3 * ctr[0]


def test_clicks_depend_on_position(world: World) -> None:
    imp = world.impressions
    # Within one relevance level, so that the shown order's relevance does not confound it.
    strong = imp["relevance"] == 3
    ctr = [_ctr(imp["click"], strong & (imp["position"] == p)) for p in range(10)]
    assert ctr[0] > 1.5 * ctr[9]
    rank_of_ctr = np.argsort(np.argsort(ctr))
    assert np.corrcoef(np.arange(10), rank_of_ctr)[0, 1] < -0.9


def test_clicks_depend_on_relevance_sensitivity(world: World) -> None:
    """Exacting users shun irrelevant items more than lenient ones (PRECTR 4.5)."""
    imp = world.impressions
    search = imp["relevance"] >= 0
    department = np.asarray(world.meta["category_department"])
    query_category = world.queries["category"][imp["query_id"][search]]
    sensitivity = world.users["sensitivity"][imp["user_id"][search], department[query_category]]
    low = sensitivity < np.quantile(sensitivity, 0.33)
    high = sensitivity > np.quantile(sensitivity, 0.67)
    click = imp["click"][search]
    relevant = imp["relevance"][search] >= 2
    gap_high = _ctr(click, high & relevant) / _ctr(click, high & ~relevant)
    gap_low = _ctr(click, low & relevant) / _ctr(click, low & ~relevant)
    assert gap_high > 1.5 * gap_low


def test_oracle_beats_chance_clearly(world: World) -> None:
    imp = world.impressions
    test = imp["split"] == 2
    assert auc(imp["click"][test], imp["p_click"][test]) > 0.75


def test_every_planted_factor_carries_signal(world: World) -> None:
    from training.data.summary import oracle_ablation

    ablation = oracle_ablation(world)
    for factor in ("relevance", "sensitivity", "interest", "quality"):
        assert ablation[factor] < ablation["full"] - 0.002, factor
