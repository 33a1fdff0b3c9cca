"""An encoded tiny world for training tests (the hashing test encoder: milliseconds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from training.encode import EncodingCache, HashingTestEncoder, encode_world


@pytest.fixture(scope="session")
def encoded_tiny_world(tiny_world_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("encoded") / "world"
    shutil.copytree(tiny_world_dir, folder)
    encoder = HashingTestEncoder(dim=32)
    cache = EncodingCache(folder.parent / "cache", encoder.fingerprint, encoder.dim)
    encode_world(folder, encoder, cache, progress=False)
    return folder
