"""Candidates the index lacks: a PRECTR trained with hidden items scores an unknown item as
"unknown" (below the relevant known items), and a supplied title moves it by its relevance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from export.package import export_run
from export.snapshot import write_snapshot
from service.app import create_app
from service.settings import Settings
from tests.conftest import CONFIGS
from training.data.tables import World
from training.train import load_config, load_saved_run, run_training


@pytest.fixture(scope="module")
def served_with_hidden_items(
    encoded_tiny_world: Path, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """PRECTR on the tiny world with a fifth of its training items hidden, served embedded."""
    root = tmp_path_factory.mktemp("hidden-items")
    overrides = {"train.epochs": 4, "train.threads": 1, "train.unknown_item_share": 0.2}
    run_training(load_config(CONFIGS / "prectr_tiny.toml", overrides), encoded_tiny_world, root)
    package = export_run(root, root / "packages", version="1", parity_rounds=1)
    write_snapshot(encoded_tiny_world, load_saved_run(root).config.text_tower, root / "snapshot")
    return Settings(
        models=[package.package.folder],
        store="embedded",
        snapshot=root / "snapshot",
        device="cpu",
        buckets=(16, 64),
        deadline_ms=5_000,
    )


def _labelled_query(world: World) -> tuple[str, list[tuple[str, int]]]:
    """The search query with the most top-level labelled items (the hardest case: its least
    scored top-level item is the bar): its text and its (item key, relevance level) pairs."""
    pairs = world.pairs
    query_of = pairs["query_id"]
    top = pairs["relevance"] == 3
    best = max(
        (q for q in np.unique(query_of[top]) if q), key=lambda q: int((top & (query_of == q)).sum())
    )
    rows = np.flatnonzero(query_of == best)
    items = [
        (str(world.items["item_key"][pairs["item_id"][r]]), int(pairs["relevance"][r]))
        for r in rows
    ]
    return str(world.queries["text"][best]), items


def _scores(settings: Settings, query: str, candidates: list[dict[str, Any]]) -> dict[str, float]:
    with TestClient(create_app(settings)) as http:
        answer = http.post(
            "/rank", json={"user_id": "u-new", "query": query, "candidates": candidates}
        )
    assert answer.status_code == 200, answer.text
    return {item["item_id"]: item["score"] for item in answer.json()["items"]}


def test_unknown_items_rank_below_every_top_level_known_item(
    served_with_hidden_items: Settings, encoded_tiny_world: Path
) -> None:
    """An unknown product with an irrelevant supplied title, and one with no features, used to
    outrank 11 of 13 relevant known products: the missing id bucket had never been trained."""
    query, labelled = _labelled_query(World.load(encoded_tiny_world))
    candidates: list[dict[str, Any]] = [{"item_id": key} for key, _ in labelled]
    candidates += [
        {"item_id": "new-irrelevant", "features": {"title": "zzqx vvkp garden hose adapter"}},
        {"item_id": "new-bare"},
    ]
    scores = _scores(served_with_hidden_items, query, candidates)
    top_level = [scores[key] for key, level in labelled if level == 3]
    unknown = scores["new-irrelevant"], scores["new-bare"]
    print(f"top-level known {sorted(top_level)}; unknown {unknown}")
    assert min(top_level) > max(scores["new-irrelevant"], scores["new-bare"])


def test_a_supplied_title_moves_an_unknown_item_by_its_relevance(
    served_with_hidden_items: Settings, encoded_tiny_world: Path
) -> None:
    query, labelled = _labelled_query(World.load(encoded_tiny_world))
    candidates = [
        {"item_id": "new-matching", "features": {"title": query, "text": query}},
        {"item_id": "new-irrelevant", "features": {"title": "zzqx vvkp garden hose adapter"}},
        *({"item_id": key} for key, _ in labelled[:3]),
    ]
    scores = _scores(served_with_hidden_items, query, candidates)
    assert scores["new-matching"] > scores["new-irrelevant"]
