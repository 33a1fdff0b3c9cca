"""The served pair approximator: fitted to the trained PRECTR, judged on queries it never saw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from export.package import load_approximator
from training.approximator import held_out_queries
from training.data.tables import World
from training.tower import load_tower_approximator
from training.train import APPROXIMATOR_FILE, load_saved_run


def test_held_out_queries_leave_a_share_of_training_queries_out_of_the_fit(
    encoded_tiny_world: Path,
) -> None:
    world = World.load(encoded_tiny_world, mmap=True)
    imp = world.impressions
    train = set(np.unique(imp["query_id"][imp["split"] == 0]).tolist()) - {0}
    every = set(np.unique(world.pairs["query_id"]).tolist()) - {0}
    held_out = held_out_queries(world, 0.2, seed=3)
    assert 0 not in held_out
    assert every - train <= set(held_out.tolist())  # never fitted: not in the training split
    kept_out = set(held_out.tolist()) & train
    assert len(kept_out) == round(0.2 * len(train))
    assert np.array_equal(held_out, held_out_queries(world, 0.2, seed=3))  # seeded
    assert not np.array_equal(held_out, held_out_queries(world, 0.2, seed=4))
    assert set(held_out_queries(world, 0.0, seed=3).tolist()) == every - train


def test_a_prectr_run_serves_the_approximator_it_fitted_to_its_model(
    tiny_runs: dict[str, Path],
) -> None:
    """The run saves its fitted approximator and the held-out report of it and of the tower's;
    export loads the fitted one, not the tower's."""
    run = load_saved_run(tiny_runs["prectr"])
    world_dir = Path(run.meta["world"]["path"])
    record = json.loads((tiny_runs["prectr"] / "meta.json").read_text())["approximator"]
    assert record["held_out_queries"] > 0
    for which in ("tower", "served"):
        assert record[which]["held_out"]["pairs"] > 0 and record[which]["in_sample"]["pairs"] > 0
    served = load_approximator(run, world_dir).state_dict()
    fitted = torch.load(tiny_runs["prectr"] / APPROXIMATOR_FILE, weights_only=True)
    tower = load_tower_approximator(world_dir, run.config.text_tower).state_dict()
    assert all(torch.equal(served[k], fitted[k]) for k in fitted)
    assert any(not torch.equal(served[k], tower[k]) for k in tower)
