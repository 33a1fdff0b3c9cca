"""Shared fixtures: a real Redis under a private key prefix, and a tiny synthetic world.

Redis is required in CI (CI=true or RANKER_REQUIRE_REDIS=1): a test that needs it fails there
when the server is unreachable; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest

# Progress bars are for people; in test logs they are noise.
os.environ.setdefault("TQDM_DISABLE", "1")

# Property tests draw the same examples on every run (a red CI run reproduces; a green one does
# not hide a draw that would have failed). HYPOTHESIS_PROFILE=explore draws new ones.
hypothesis.settings.register_profile("seeded", derandomize=True)
hypothesis.settings.register_profile("explore", derandomize=False)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "seeded"))

REDIS_URL = os.environ.get("RANKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_REQUIRED = os.environ.get("CI") == "true" or os.environ.get("RANKER_REQUIRE_REDIS") == "1"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    """(url, prefix): a live Redis and a key prefix of this test's own; its keys are deleted."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as err:
        message = f"Redis unreachable at {REDIS_URL}: {err}"
        client.close()
        if REDIS_REQUIRED:
            pytest.fail(f"{message} (required: CI=true or RANKER_REQUIRE_REDIS=1)")
        pytest.skip(message)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    try:
        yield REDIS_URL, prefix
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture(scope="session")
def tiny_world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic world on disk, generated once per test session (seed 0)."""
    from training.data.synthetic import generate_world

    folder = tmp_path_factory.mktemp("tiny-world")
    generate_world("tiny", seed=0).save(folder)
    return folder


def shared_data(relative: str) -> Path:
    """A path under ../shared/data, or a skip when the shared data is not beside the checkout."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")
    return path


@pytest.fixture(scope="session")
def encoded_tiny_world(tiny_world_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world encoded by the hashing test encoder (milliseconds, no MiniLM)."""
    import shutil

    from training.encode import EncodingCache, HashingTestEncoder, encode_world

    folder = tmp_path_factory.mktemp("encoded") / "world"
    shutil.copytree(tiny_world_dir, folder)
    encoder = HashingTestEncoder(dim=32)
    cache = EncodingCache(folder.parent / "cache", encoder.fingerprint, encoder.dim)
    encode_world(folder, encoder, cache, progress=False)
    return folder


CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


@pytest.fixture(scope="session")
def tiny_runs(
    encoded_tiny_world: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """One trained run per served family on the tiny world: {"prectr": dir, "vanilla": dir}.

    The vanilla network is trained alone (family "vanilla" under `ranker train`): export reads
    the same VanillaNetwork whether or not ELEC distilled it.
    """
    from training.train import load_config, run_training

    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for family, config in (("prectr", "prectr_tiny"), ("vanilla", "elec_tiny")):
        cfg = load_config(CONFIGS / f"{config}.toml", {"train.epochs": 1, "train.threads": 1})
        run_training(cfg, encoded_tiny_world, root / family)
        runs[family] = root / family
    return runs


@pytest.fixture(scope="session")
def tiny_exports(tiny_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each tiny run exported once (fp32 + fp16): {family: ExportResult}."""
    from export.package import export_run

    root = tmp_path_factory.mktemp("packages")
    return {
        family: export_run(run, root, version="1", parity_rounds=1)
        for family, run in tiny_runs.items()
    }


@pytest.fixture(scope="session")
def tiny_snapshot(tiny_runs: dict[str, Path], encoded_tiny_world: Path, tmp_path_factory):
    """The index snapshot of the tiny world with the PRECTR run's text tower."""
    from export.snapshot import write_snapshot
    from service.index.snapshot import Snapshot
    from training.train import load_saved_run

    run = load_saved_run(tiny_runs["prectr"])
    out = tmp_path_factory.mktemp("snapshots") / "tiny"
    write_snapshot(encoded_tiny_world, run.config.text_tower, out)
    return Snapshot(out)
