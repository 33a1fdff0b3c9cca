"""A real catalogue end to end: a graded CSV with the client's own product ids, imported,
encoded, trained, exported, snapshotted and loaded into real Redis; `/rank` takes those ids."""

from __future__ import annotations

from pathlib import Path

import redis
from fastapi.testclient import TestClient

from export.package import export_run
from export.snapshot import write_snapshot
from service.app import create_app
from service.index.keys import KeySchema
from service.index.loader import load_snapshot
from service.index.snapshot import Snapshot
from service.settings import Settings
from tests.conftest import CONFIGS
from tests.service.conftest import CATALOGUE_COLUMNS, write_catalogue_csv
from training.data.graded_csv import Binning, load_relevance_csv
from training.data.real import world_from_relevance
from training.encode import EncodingCache, HashingTestEncoder, encode_world
from training.train import load_config, load_saved_run, run_training


def test_a_catalogue_with_its_own_ids_is_ranked_by_those_ids_through_redis(
    tmp_path: Path, redis_prefix: tuple[str, str]
) -> None:
    csv_path = tmp_path / "catalogue.csv"
    write_catalogue_csv(csv_path)
    columns = CATALOGUE_COLUMNS
    labels, report = load_relevance_csv(
        csv_path, columns, binning=Binning.from_thresholds([1.5, 2, 2.5])
    )
    assert report.items == 360 and report.titles_shared_by_ids > 0  # nothing collapsed
    world_dir = tmp_path / "world"
    world_from_relevance(labels, n_users=100, n_impressions=6_000).save(world_dir)
    encoder = HashingTestEncoder(dim=32)
    cache = EncodingCache(tmp_path / "cache", encoder.fingerprint, encoder.dim)
    encode_world(world_dir, encoder, cache, progress=False)
    config = load_config(CONFIGS / "prectr_tiny.toml", {"train.epochs": 1, "train.threads": 1})
    run_training(config, world_dir, tmp_path / "run")
    package = export_run(tmp_path / "run", tmp_path / "packages", version="1", parity_rounds=1)
    snapshot_dir = tmp_path / "snapshot"
    write_snapshot(world_dir, load_saved_run(tmp_path / "run").config.text_tower, snapshot_dir)

    url, prefix = redis_prefix
    client = redis.Redis.from_url(url)
    load_snapshot(Snapshot(snapshot_dir), client, KeySchema(prefix), grace_s=0)
    client.close()
    settings = Settings(
        models=[package.package.folder],
        store="redis",
        redis_url=url,
        namespace=prefix,
        device="cpu",
        buckets=(16, 64),
        deadline_ms=5_000,
    )
    ids = [f"SKU-{uid:05d}" for uid in range(24, 36)]  # query 2's products
    with TestClient(create_app(settings)) as http:
        answer = http.post(
            "/rank",
            json={
                "user_id": "u0",
                "query": "need 2 query",
                "candidates": [{"item_id": i} for i in ids],
            },
        )
    assert answer.status_code == 200, answer.text
    ranked = answer.json()["items"]
    assert sorted(item["item_id"] for item in ranked) == sorted(ids)
    assert not [item for item in ranked if "unknown_item" in item.get("flags", [])]
    assert len({item["score"] for item in ranked}) > 1  # ranked by what the index knows
