"""Training the text tower and the pair approximator, and reducing a world's vectors with them.

The result is cached beside the world (``<world>/text_tower/<key>/``), keyed by the tower
settings, the seed and the encoder fingerprint, so every model trained on a world shares one
tower, as every model served shares one index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from tqdm import tqdm

from training.data.tables import World
from training.encode import VECTOR_DTYPE  # fp16: what the index stores, read back in training
from training.evaluate import auc
from training.features import ReducedVectors, find_pairs
from training.losses import click_bce, relevance_cross_entropy
from training.models.text_tower import PairApproximator, TextTower, TextTowerConfig

log = logging.getLogger(__name__)


class TowerSettings(BaseModel):
    """How the text tower is trained (PRECTR 4.2)."""

    model_config = ConfigDict(extra="forbid")

    output_dim: int = 64
    click_epochs: int = 2
    relevance_epochs: int = 8
    approximator_epochs: int = 8
    lr: float = 1e-3
    batch_size: int = 1024
    max_click_rows: int = 300_000
    seed: int = 0


def _fingerprint_state(module: torch.nn.Module) -> str:
    sha = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().numpy().tobytes())
    return sha.hexdigest()


def _batches(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray[Any, Any]]:
    order = rng.permutation(n)
    return [order[i : i + size] for i in range(0, n, size)]


def _fit(
    step: Any,
    n_rows: int,
    epochs: int,
    settings: TowerSettings,
    rng: np.random.Generator,
    optimizer: torch.optim.Optimizer,
    label: str,
) -> None:
    for epoch in range(epochs):
        batches = _batches(n_rows, settings.batch_size, rng)
        bar = tqdm(batches, desc=f"{label} epoch {epoch + 1}/{epochs}", leave=False)
        for rows in bar:
            optimizer.zero_grad()
            loss = step(rows)
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")


def train_text_tower(world: World, world_dir: Path, settings: TowerSettings) -> ReducedVectors:
    """Train (or load from the cache) the tower and the approximator; return reduced vectors."""
    encoder_meta = json.loads((world_dir / "vectors" / "encoder.json").read_text())
    folder = tower_folder(world_dir, settings)
    if (folder / "meta.json").is_file():
        return load_reduced(folder)

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    queries = torch.from_numpy(np.load(world_dir / "vectors" / "queries.npy").astype(np.float32))
    items = torch.from_numpy(np.load(world_dir / "vectors" / "items.npy").astype(np.float32))
    pairs = torch.from_numpy(np.load(world_dir / "vectors" / "pairs.npy").astype(np.float32))
    config = TextTowerConfig(input_dim=queries.shape[1], output_dim=settings.output_dim)
    tower = TextTower(config)
    optimizer = torch.optim.Adam(tower.parameters(), lr=settings.lr)

    # Stage 1: clicked vs unclicked search impressions of the training split.
    imp = world.impressions
    train = np.flatnonzero((imp["split"] == 0) & (imp["query_id"] != 0))
    if len(train) > settings.max_click_rows:
        train = rng.choice(train, settings.max_click_rows, replace=False)
    pair_row = find_pairs(world, imp["query_id"][train], imp["item_id"][train])
    train, pair_row = train[pair_row >= 0], pair_row[pair_row >= 0]
    click = torch.from_numpy(imp["click"][train].astype(np.float32))
    q_of = torch.from_numpy(imp["query_id"][train].astype(np.int64))
    i_of = torch.from_numpy(imp["item_id"][train].astype(np.int64))
    p_of = torch.from_numpy(pair_row.astype(np.int64))

    def click_step(rows: np.ndarray[Any, Any]) -> torch.Tensor:
        r = torch.from_numpy(rows)
        logit = tower.click_logit(pairs[p_of[r]], queries[q_of[r]], items[i_of[r]])
        return click_bce(logit, click[r])

    _fit(click_step, len(train), settings.click_epochs, settings, rng, optimizer, "tower clicks")

    # Stage 2: the relevance levels of the pairs whose query is seen in training.
    train_queries = np.unique(imp["query_id"][imp["split"] == 0])
    labelled = np.flatnonzero(np.isin(world.pairs["query_id"], train_queries))
    level = torch.from_numpy(world.pairs["relevance"][labelled].astype(np.int64))
    pq = torch.from_numpy(world.pairs["query_id"][labelled].astype(np.int64))
    pi = torch.from_numpy(world.pairs["item_id"][labelled].astype(np.int64))
    pr = torch.from_numpy(labelled.astype(np.int64))

    def relevance_step(rows: np.ndarray[Any, Any]) -> torch.Tensor:
        r = torch.from_numpy(rows)
        logits = tower.relevance_logits(pairs[pr[r]], queries[pq[r]], items[pi[r]])
        return relevance_cross_entropy(logits, level[r])

    _fit(
        relevance_step,
        len(labelled),
        settings.relevance_epochs,
        settings,
        rng,
        optimizer,
        "tower relevance",
    )

    tower.eval()
    with torch.no_grad():
        reduced = ReducedVectors(
            queries=tower.reduce(queries).numpy().astype(VECTOR_DTYPE),
            items=tower.reduce(items).numpy().astype(VECTOR_DTYPE),
            pairs=tower.reduce(pairs).numpy().astype(VECTOR_DTYPE),
        )
        reduced.queries[0] = 0  # the empty query has no text
        stage1_auc = auc(
            click.numpy(), tower.click_logit(pairs[p_of], queries[q_of], items[i_of]).numpy()
        )
        accuracy = float(
            (tower.relevance_logits(pairs[pr], queries[pq], items[pi]).argmax(1) == level)
            .float()
            .mean()
        )

    approximator = PairApproximator(settings.output_dim)
    optimizer = torch.optim.Adam(approximator.parameters(), lr=settings.lr)
    rq = torch.from_numpy(reduced.queries.astype(np.float32))
    ri = torch.from_numpy(reduced.items.astype(np.float32))
    rp = torch.from_numpy(reduced.pairs.astype(np.float32))
    all_q = torch.from_numpy(world.pairs["query_id"].astype(np.int64))
    all_i = torch.from_numpy(world.pairs["item_id"].astype(np.int64))
    fit_rows = np.flatnonzero(np.isin(world.pairs["query_id"], train_queries))

    def approximator_step(rows: np.ndarray[Any, Any]) -> torch.Tensor:
        r = torch.from_numpy(fit_rows[rows])
        error: torch.Tensor = approximator(rq[all_q[r]], ri[all_i[r]]) - rp[r]
        return error.pow(2).sum(1).mean()

    _fit(
        approximator_step,
        len(fit_rows),
        settings.approximator_epochs,
        settings,
        rng,
        optimizer,
        "pair approximator",
    )
    with torch.no_grad():
        approx = approximator(rq[all_q], ri[all_i])
        cosine = torch.nn.functional.cosine_similarity(approx, rp, dim=1).mean().item()

    # Written whole under a temporary name, then renamed into place: two reports training the
    # same tower side by side never read one half written (the second to finish keeps the first's).
    staging = folder.with_name(f".{folder.name}-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    torch.save(tower.state_dict(), staging / "tower.pt")
    torch.save(approximator.state_dict(), staging / "approximator.pt")
    for name in ("queries", "items", "pairs"):
        np.save(staging / f"{name}.npy", getattr(reduced, name))
    meta = {
        "fingerprint": hashlib.sha256(
            (_fingerprint_state(tower) + encoder_meta["fingerprint"]).encode()
        ).hexdigest(),
        "encoder_fingerprint": encoder_meta["fingerprint"],
        "config": asdict(config),
        "settings": settings.model_dump(),
        "metrics": {
            "click_auc": stage1_auc,
            "relevance_accuracy": accuracy,
            "approximator_cosine": cosine,
        },
    }
    (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    try:
        staging.rename(folder)
    except OSError:
        if (folder / "meta.json").is_file():  # another process put the same tower there first
            shutil.rmtree(staging)
        else:  # what an interrupted run of the older, in-place writing left
            shutil.rmtree(folder)
            staging.rename(folder)
    log.info(
        "text tower %s: click AUC %.4f, relevance accuracy %.3f, approximator cosine %.3f",
        folder.name,
        stage1_auc,
        accuracy,
        cosine,
    )
    return load_reduced(folder)


def load_reduced(folder: Path) -> ReducedVectors:
    return ReducedVectors(
        queries=np.load(folder / "queries.npy"),
        items=np.load(folder / "items.npy"),
        pairs=np.load(folder / "pairs.npy"),
    )


def tower_meta(world_dir: Path, settings: TowerSettings) -> dict[str, Any]:
    """The meta record of the cached tower for these settings (after `train_text_tower`)."""
    folder = tower_folder(world_dir, settings)
    return dict(json.loads((folder / "meta.json").read_text()))


def tower_folder(world_dir: Path, settings: TowerSettings) -> Path:
    """Where the tower for these settings and this world's encoder is cached."""
    encoder_meta = json.loads((world_dir / "vectors" / "encoder.json").read_text())
    # The world's meta names its generator, seed and click model: a regenerated world with other
    # clicks gets its own tower.
    world_meta = json.loads((world_dir / "world.json").read_text())
    world_meta.pop("generated_seconds", None)
    key = json.dumps(
        {
            "settings": settings.model_dump(),
            "encoder": encoder_meta["fingerprint"],
            "world": world_meta,
        },
        sort_keys=True,
    )
    return world_dir / "text_tower" / hashlib.sha256(key.encode()).hexdigest()[:16]


def load_tower_approximator(world_dir: Path, settings: TowerSettings) -> PairApproximator:
    """The pair approximator trained with the cached tower for these settings."""
    folder = tower_folder(world_dir, settings)
    approximator = PairApproximator(settings.output_dim)
    approximator.load_state_dict(torch.load(folder / "approximator.pt", weights_only=True))
    return approximator.eval()
