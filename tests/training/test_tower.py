"""The text tower's cache: a tower appears whole in its folder or not at all."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from training import tower
from training.data.tables import World
from training.tower import TowerSettings, load_reduced, tower_folder, train_text_tower


def test_a_tower_is_cached_whole_over_what_an_interrupted_run_left(
    encoded_tiny_world: Path, tmp_path: Path
) -> None:
    world_dir = tmp_path / "world"
    shutil.copytree(encoded_tiny_world, world_dir, ignore=shutil.ignore_patterns("text_tower"))
    settings = TowerSettings(click_epochs=1, relevance_epochs=1, approximator_epochs=1)
    folder = tower_folder(world_dir, settings)
    folder.mkdir(parents=True)
    (folder / "tower.pt").write_bytes(b"half written")  # no meta.json: never finished

    reduced = train_text_tower(World.load(world_dir), world_dir, settings)

    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no staging left
    assert (folder / "meta.json").is_file()
    assert (folder / "tower.pt").read_bytes() != b"half written"
    again = load_reduced(folder)
    np.testing.assert_array_equal(again.pairs, reduced.pairs)


def test_a_tower_another_process_finished_first_is_kept(
    encoded_tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world_dir = tmp_path / "world"
    shutil.copytree(encoded_tiny_world, world_dir, ignore=shutil.ignore_patterns("text_tower"))
    settings = TowerSettings(click_epochs=1, relevance_epochs=1, approximator_epochs=1)
    world = World.load(world_dir)
    train_text_tower(world, world_dir, settings)
    folder = tower_folder(world_dir, settings)
    theirs = tmp_path / "theirs"
    folder.rename(theirs)
    meta = theirs / "meta.json"
    meta.write_text(meta.read_text().replace("{", '{"written_by": "the other process",', 1))

    class FinishedElsewhere(tower.PairApproximator):
        """Built once this process's tower is trained: the other process's tower lands now."""

        def __init__(self, dim: int) -> None:
            super().__init__(dim)
            shutil.copytree(theirs, folder)

    monkeypatch.setattr(tower, "PairApproximator", FinishedElsewhere)
    reduced = train_text_tower(world, world_dir, settings)

    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
    assert (folder / "meta.json").read_text() == (theirs / "meta.json").read_text()
    np.testing.assert_array_equal(reduced.items, load_reduced(theirs).items)
