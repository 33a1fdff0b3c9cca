"""The long-tail world: Zipf exposure, cold items and queries, quality written in words."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.contract import EMPTY_QUERY_ID
from training.data.synthetic import QUALITY_WORDS, WorldConfig, generate_world
from training.data.tables import World


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world("tiny", seed=0, kind="longtail")


def _training_counts(world: World, column: str, n: int) -> np.ndarray:
    imp = world.impressions
    return np.bincount(imp[column][imp["split"] == 0], minlength=n)


def test_cold_items_and_queries_appear_only_in_the_test_period(world: World) -> None:
    imp = world.impressions
    planted = world.meta["long_tail"]
    cold_items, cold_queries = planted["cold_item_ids"], planted["cold_query_ids"]
    assert len(cold_items) > 0 and len(cold_queries) > 0
    before, test = imp["split"] < 2, imp["split"] == 2
    assert not np.isin(imp["item_id"][before], cold_items).any()
    assert not np.isin(imp["query_id"][before], cold_queries).any()
    # ... and the test period shows them: cold rows are a part of what is evaluated
    items = _training_counts(world, "item_id", world.items.n_rows)
    queries = _training_counts(world, "query_id", world.queries.n_rows)
    search = imp["query_id"] != EMPTY_QUERY_ID
    assert np.mean(items[imp["item_id"][test]] == 0) > 0.02
    assert np.mean(queries[imp["query_id"][test & search]] == 0) > 0.02


def test_exposure_is_long_tailed(world: World) -> None:
    counts = np.sort(_training_counts(world, "item_id", world.items.n_rows))[::-1]
    plain = generate_world("tiny", seed=0)
    plain_counts = np.sort(_training_counts(plain, "item_id", plain.items.n_rows))[::-1]
    top = len(counts) // 10
    # the top 10% of items take a larger share of impressions than in the warm world
    assert counts[:top].sum() / counts.sum() > 1.5 * plain_counts[:top].sum() / plain_counts.sum()


def test_part_of_quality_is_written_in_the_item_text(world: World) -> None:
    worded = world.items["worded_quality"].astype(np.float64)
    words = dict(QUALITY_WORDS)
    for text, value in zip(world.items["text"][:200], worded[:200], strict=True):
        written = sum(effect for word, effect in words.items() if word in str(text).lower())
        assert written == pytest.approx(value)
    quality = world.items["quality"].astype(np.float64)
    assert np.corrcoef(quality, worded)[0, 1] > 0.5
    assert WorldConfig.of_kind("longtail", "tiny").worded_quality_sd > 0


def test_same_seed_same_long_tail_world(world: World) -> None:
    again = generate_world("tiny", seed=0, kind="longtail")
    assert np.array_equal(again.impressions["click"], world.impressions["click"])
    assert list(again.items["text"]) == list(world.items["text"])


def test_ranker_data_generate_longtail_tiny(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "data",
            "generate",
            "--world",
            "longtail",
            "--size",
            "tiny",
            "--out",
            str(tmp_path / "world"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cold_items" in result.stdout  # the summary states the segments' test shares
    world = World.load(tmp_path / "world")
    assert world.meta["world"] == "longtail" and "worded_quality" in world.items


def test_text_reach_is_what_reading_the_words_adds_to_the_oracle(world: World) -> None:
    """Knowing an item's worded quality (and not its latent part) raises the planted P(click)'s
    AUC on every item segment; with no words written the two are the same, and the plain world
    has no figure."""
    from training.data.summary import text_reach_by_segment
    from training.data.tables import Table

    reach = text_reach_by_segment(world)
    assert {"head_items", "tail_items", "cold_items"} <= set(reach)
    for cell in reach.values():
        assert cell["words_read"] > cell["words_unread"]
        assert cell["reach"] == pytest.approx(cell["words_read"] - cell["words_unread"])
    silent_items = Table({**world.items, "worded_quality": np.zeros(world.items.n_rows)})
    silent = World(**{**vars(world), "items": silent_items})
    assert all(cell["reach"] == 0 for cell in text_reach_by_segment(silent).values())
    assert text_reach_by_segment(generate_world("tiny", seed=0)) == {}
