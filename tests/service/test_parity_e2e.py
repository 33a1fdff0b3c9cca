"""End-to-end parity: logged requests through the service (real Redis, real HTTP, ONNX Runtime)
get exactly the inputs the evaluated model saw, and the same scores.

The offline side is `training.features.ImpressionFeatures` (the code training and evaluation
use) over the logged impressions, with the history the index holds (each user's last 50 clicks).
The display position is in those logged rows and in no model input: training learns its bias
beside the model (PAL). The service side assembles from the Redis index with `service.assemble`;
the test records what it feeds ONNX Runtime and compares every served input with the offline
batch, then the scores within 1e-4.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.contract import EMPTY_QUERY_ID, HISTORY_LENGTH
from service.index.keys import KeySchema
from service.index.loader import load_snapshot
from service.index.snapshot import Snapshot
from service.settings import Settings
from training.data.tables import Table, World
from training.features import ImpressionFeatures
from training.tower import train_text_tower
from training.train import load_saved_run

BOUND = 1e-4


def logged_requests(world: World, n_search: int, n_recommend: int) -> list[np.ndarray[Any, Any]]:
    """Row sets of some test-split requests (search and recommendation), whole lists."""
    imp = world.impressions
    test = np.flatnonzero(imp["split"] == 2)
    requests = imp["request_id"][test]
    chosen: list[np.ndarray[Any, Any]] = []
    for want_search, count in ((True, n_search), (False, n_recommend)):
        for request in np.unique(requests):
            rows = test[requests == request]
            _, first = np.unique(imp["item_id"][rows], return_index=True)
            rows = rows[np.sort(first)]  # a logged list may show an item twice; rank it once
            if (imp["query_id"][rows[0]] != EMPTY_QUERY_ID) == want_search and len(rows) > 1:
                chosen.append(rows)
                count -= 1
                if count == 0:
                    break
    return chosen


def as_served(world: World, rows: np.ndarray[Any, Any]) -> World:
    """The world with only these impressions, with the user's last 50 clicks as history (what
    the index holds). Their logged positions stay: no model input reads them."""
    imp = world.impressions.take(rows)
    columns = {name: np.array(imp[name]) for name in imp}
    users = world.clicks["user_id"].astype(np.int64)
    end = np.searchsorted(users, columns["user_id"], side="right")
    start = np.searchsorted(users, columns["user_id"], side="left")
    columns["hist_end"] = end.astype(np.int64)
    columns["hist_len"] = np.minimum(end - start, HISTORY_LENGTH).astype(np.int16)
    return World(world.items, world.queries, world.users, world.pairs, Table(columns), world.clicks)


def assert_same_inputs(
    served: dict[str, np.ndarray[Any, Any]], offline: dict[str, torch.Tensor], n: int
) -> None:
    """Every input the graph got equals what the evaluated model read for the same rows."""
    assert "position" not in served
    for name, array in served.items():
        if name == "pair_known":
            continue  # the served graph's switch to its approximator (every pair known here)
        expected = offline[name].numpy()
        got = array[:n] if array.shape[0] >= n and name not in REQUEST_INPUTS else array
        assert got.shape == expected.shape, (name, got.shape, expected.shape)
        if got.dtype.kind in "biu":
            np.testing.assert_array_equal(got, expected, err_msg=name)
        else:
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=name)


REQUEST_INPUTS = ("query_vec", "history_query_vec", "history_pair_vec", "history_mask")


@pytest.mark.parametrize("family", ["prectr", "vanilla"])
def test_service_scores_equal_the_offline_model_on_logged_requests(
    family: str,
    tiny_runs: dict[str, Path],
    tiny_snapshot: Snapshot,
    encoded_tiny_world: Path,
    make_settings: Callable[..., Settings],
    redis_prefix: tuple[str, str],
) -> None:
    url, prefix = redis_prefix
    client = redis.Redis.from_url(url)
    load_snapshot(tiny_snapshot, client, KeySchema(prefix), grace_s=0)
    client.close()

    run = load_saved_run(tiny_runs[family])
    world = World.load(encoded_tiny_world, mmap=True)
    vectors = train_text_tower(world, encoded_tiny_world, run.config.text_tower)  # cached
    chosen = logged_requests(world, n_search=6, n_recommend=2)
    assert len(chosen) == 8

    settings = make_settings(store="redis", redis_url=url, namespace=prefix)
    worst = 0.0
    with TestClient(create_app(settings)) as service:
        runner = service.app.state.service.registry.get(family).runner  # type: ignore[attr-defined]
        fed: list[dict[str, np.ndarray[Any, Any]]] = []
        run_graph = runner.run

        def recording(inputs: dict[str, np.ndarray[Any, Any]]) -> Any:
            fed.append({name: np.array(array) for name, array in inputs.items()})
            return run_graph(inputs)

        runner.run = recording
        for rows in chosen:
            served_world = as_served(world, rows)
            features = ImpressionFeatures(served_world, vectors, run.spec)
            batch = features.batch(np.arange(len(rows)))
            with torch.no_grad():
                offline = run.model(batch)["score"].numpy()

            imp = world.impressions
            query_id = int(imp["query_id"][rows[0]])
            body = {
                "user_id": str(world.users["user_key"][imp["user_id"][rows[0]]]),
                "query": str(world.queries["text"][query_id]),
                "candidates": [
                    {"item_id": str(world.items["item_key"][i])} for i in imp["item_id"][rows]
                ],
                "model": family,
                "context": {"hour": int(imp["hour"][rows[0]])},
            }
            fed.clear()
            response = service.post("/rank", json=body)
            assert response.status_code == 200, response.text
            assert len(fed) == 1
            assert_same_inputs(fed[0], batch, len(rows))
            out = response.json()
            assert out["degraded"] == [] and out["index_version"]
            assert not any(item.get("flags") for item in out["items"])  # everything was indexed
            served = {item["item_id"]: item["score"] for item in out["items"]}
            online = np.array([served[c["item_id"]] for c in body["candidates"]])
            worst = max(worst, float(np.abs(online - offline).max()))
    print(f"{family}: service vs offline max abs diff {worst:.3g} over {len(chosen)} requests")
    assert worst <= BOUND, f"{family}: service vs offline max abs diff {worst:.3g}"
