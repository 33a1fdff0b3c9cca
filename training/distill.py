"""ELEC's training (papers/elec.txt 2.2-2.3): the M-LLM, then the pseudo-siamese distillation.

1. The M-LLM's new layers learn clicks from the frozen language model's sample vectors
   (training.sample_text, one encoding per distinct part).
2. With the M-LLM frozen, the gain network (tabular + M-LLM vector) and the vanilla network
   (tabular only) train jointly on
       L_total = L_gain + L_van + L_score + alpha * L_rep
   with L_score the CLID listwise distillation over each request list (Eq. 1-2) and L_rep the
   MSE between high-level vectors (Eq. 3). The teacher side of both is detached, so L_score and
   L_rep move only the vanilla network.
3. Only the vanilla network is saved as the run's model; the M-LLM and gain metrics go in its
   meta. `time_per_request` measures ELEC's Table 5 analog.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from service.contract import FeatureSpec, default_feature_spec
from training.data.tables import World
from training.encode import EncodingCache, MiniLMEncoder, TextEncoder
from training.evaluate import auc, logloss
from training.features import ImpressionFeatures
from training.losses import clid_loss, representation_mse
from training.models import build_config
from training.models.elec import MLLM, ELECConfig, GainNetwork, VanillaNetwork
from training.models.position import PositionTower, position_aware_bce
from training.sample_text import SampleVectors, sample_texts, sample_vectors
from training.segments import row_segments, segment_metrics
from training.tower import train_text_tower
from training.train import (
    EarlyStopping,
    ElecSection,
    ExperimentConfig,
    predict,
    request_batches,
    save_checkpoint,
    score_metrics,
    seed_everything,
)

log = logging.getLogger(__name__)
Array = np.ndarray[Any, Any]
Batch = dict[str, torch.Tensor]


@dataclass
class ElecResult:
    metrics: dict[str, float]
    vanilla: VanillaNetwork
    gain: GainNetwork
    mllm: MLLM
    samples: SampleVectors
    features: ImpressionFeatures
    encoder: TextEncoder


def _with_lm(batch: Batch, samples: SampleVectors, rows: Array) -> Batch:
    return {**batch, "lm_vec": torch.from_numpy(samples.compose(rows))}


def _train_mllm(
    mllm: MLLM,
    samples: SampleVectors,
    features: ImpressionFeatures,
    train: Array,
    valid: Array,
    cfg: ExperimentConfig,
    rng: np.random.Generator,
) -> float:
    """Train the M-LLM's new layers on clicks (through a position tower of its own, as every
    click model here: PAL) for up to ``mllm_epochs``, keeping the epoch of the best validation
    AUC (patience ``mllm_patience``), then freeze them; returns that validation AUC."""
    settings = cfg.elec
    tower = PositionTower()
    optimizer = torch.optim.Adam(
        [*mllm.parameters(), *tower.parameters()], lr=settings.mllm_lr, fused=True
    )
    click = torch.from_numpy(features.labels["click"])
    position = torch.from_numpy(features.labels["position"])
    stopper = EarlyStopping("M-LLM", settings.mllm_patience, {"mllm": mllm})

    def valid_auc() -> float:
        with torch.no_grad():
            scores = mllm(torch.from_numpy(samples.compose(valid)))["score"].numpy()
        return auc(features.labels["click"][valid], scores)

    for epoch in range(settings.mllm_epochs):
        order = rng.permutation(train)
        total, steps = 0.0, 0
        for start in tqdm(
            range(0, len(order), cfg.train.batch_size),
            leave=False,
            desc=f"M-LLM epoch {epoch + 1}/{settings.mllm_epochs}",
        ):
            rows = order[start : start + cfg.train.batch_size]
            optimizer.zero_grad()
            out = mllm(torch.from_numpy(samples.compose(rows)))
            loss = position_aware_bce(out["logit"], tower.log_seen(position[rows]), click[rows])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        if stopper.end_epoch(total / max(steps, 1), valid_auc()):
            break
    stopper.restore()
    mllm.eval()
    for p in mllm.parameters():
        p.requires_grad_(False)  # frozen from here on (ELEC 2.3.2)
    return stopper.best_auc


def distillation_loss(
    gain_out: dict[str, torch.Tensor],
    vanilla_out: dict[str, torch.Tensor],
    batch: Batch,
    settings: ElecSection,
    towers: tuple[PositionTower, PositionTower],
) -> torch.Tensor:
    """L_gain + L_van + L_score + alpha * L_rep (Eq. 5), the terms switched by ``settings``.

    The click terms go through each network's position tower (PAL); the distillation terms
    compare the networks' own position-free logits, the ones that rank.
    """
    gain_tower, vanilla_tower = towers
    loss = position_aware_bce(
        gain_out["logit"], gain_tower.log_seen(batch["position"]), batch["click"]
    ) + position_aware_bce(
        vanilla_out["logit"], vanilla_tower.log_seen(batch["position"]), batch["click"]
    )
    if settings.use_clid:
        loss = loss + clid_loss(vanilla_out["logit"], gain_out["logit"], batch["request"])
    if settings.use_rep:
        loss = loss + settings.alpha * representation_mse(
            vanilla_out["high_level"], gain_out["high_level"]
        )
    return loss


def _split_rows(train: Array, settings: ElecSection, max_rows: int | None) -> tuple[Array, Array]:
    """(the M-LLM's training rows, the gain and vanilla networks' training rows), time-ordered.

    The networks take the most recent ``max_rows`` (all without a limit). The M-LLM takes the
    same rows, or with ``mllm_rows = "disjoint"`` the rows before them (the earlier half of the
    training rows when the networks take them all, the networks then the later half).
    """
    recent = train[-max_rows:] if max_rows and len(train) > max_rows else train
    if settings.mllm_rows == "same":
        return recent, recent
    earlier = train[: len(train) - len(recent)]
    if len(earlier):
        return earlier, recent
    half = len(train) // 2
    return train[:half], train[half:]


class Injection:
    """What the gain network is given for some rows: the M-LLM's high-level vector, or for the
    sanity rows zeros or the vector of another row of the same batch (``lm_vector``)."""

    def __init__(self, mllm: MLLM, samples: SampleVectors, mode: str, seed: int) -> None:
        self.mllm, self.samples, self.mode = mllm, samples, mode
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, rows: Array) -> torch.Tensor:
        with torch.no_grad():
            high: torch.Tensor = self.mllm(torch.from_numpy(self.samples.compose(rows)))[
                "high_level"
            ]
        if self.mode == "zero":
            return torch.zeros_like(high)
        if self.mode == "shuffled":
            return high[torch.randperm(len(high), generator=self.generator)]
        return high


def run_elec(
    cfg: ExperimentConfig,
    world_dir: Path,
    out_dir: Path,
    *,
    encoder: TextEncoder | None = None,
    spec: FeatureSpec | None = None,
) -> ElecResult:
    """Train the M-LLM, then gain and vanilla jointly; save the vanilla network as the model
    (with ``elec.train_vanilla = false``, a diagnosis run: the gain network alone, no model)."""
    started = time.perf_counter()
    settings = cfg.elec
    torch.set_num_threads(cfg.train.threads or os.cpu_count() or 1)
    seed_everything(cfg.train.seed)
    rng = np.random.default_rng(cfg.train.seed)
    spec = spec or default_feature_spec(cfg.text_tower.output_dim)
    world = World.load(world_dir, mmap=True)
    features = ImpressionFeatures(world, train_text_tower(world, world_dir, cfg.text_tower), spec)
    encoder = encoder or MiniLMEncoder(settings.encoder_path)
    samples = sample_vectors(
        world,
        encoder,
        EncodingCache(Path(settings.cache), encoder.fingerprint, encoder.dim),
        full_text=settings.full_text,
    )
    mllm_rows, train = _split_rows(features.rows_of_split(0), settings, cfg.train.max_train_rows)
    valid, test = features.rows_of_split(1), features.rows_of_split(2)

    seed_everything(cfg.train.seed)
    config: ELECConfig = replace(
        build_config("vanilla", spec, cfg.model.params), lm_dim=encoder.dim
    )
    mllm, gain, vanilla = MLLM(config), GainNetwork(spec, config), VanillaNetwork(spec, config)
    mllm_valid_auc = _train_mllm(mllm, samples, features, mllm_rows, valid, cfg, rng)
    log.info("M-LLM valid AUC %.4f", mllm_valid_auc)
    inject = Injection(mllm, samples, settings.lm_vector, cfg.train.seed)

    def gain_scores(batch: Batch, rows: Array) -> torch.Tensor:
        scores: torch.Tensor = gain(batch, inject(rows))["score"]
        return scores

    towers = (PositionTower(), PositionTower())
    trained: dict[str, nn.Module] = {"gain": gain, "gain_position": towers[0]}
    if settings.train_vanilla:
        trained.update(vanilla=vanilla, position=towers[1])
    optimizer = torch.optim.Adam(
        [p for module in trained.values() for p in module.parameters()],
        lr=cfg.train.lr,
        fused=True,
    )
    stopper = EarlyStopping(cfg.name, cfg.train.patience, trained)
    hiding_rng = np.random.default_rng([cfg.train.seed, 1])  # as run_training's
    for epoch in range(cfg.train.epochs):
        batches = request_batches(features.labels["request"], train, cfg.train.batch_size, rng)
        total = 0.0
        for rows in tqdm(batches, desc=f"{cfg.name} epoch {epoch + 1}/{cfg.train.epochs}"):
            batch = features.batch(rows)
            if cfg.train.unknown_item_share:
                features.hide_items(batch, hiding_rng, cfg.train.unknown_item_share)
            optimizer.zero_grad()
            gain_out = gain(batch, inject(rows))
            if settings.train_vanilla:
                loss = distillation_loss(gain_out, vanilla(batch), batch, settings, towers)
            else:
                loss = position_aware_bce(
                    gain_out["logit"], towers[0].log_seen(batch["position"]), batch["click"]
                )
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += loss.item()
        watched, score_fn = (vanilla, None) if settings.train_vanilla else (gain, gain_scores)
        valid_auc = auc(
            features.labels["click"][valid],
            predict(watched, features, valid, cfg.train.eval_batch_size, score_fn),
        )
        if stopper.end_epoch(total / max(len(batches), 1), valid_auc):
            break
    stopper.restore()

    labels = features.labels
    segments = row_segments(world, test)
    clicks = labels["click"][test]

    def side_metrics(prefix: str, scores: Array) -> dict[str, float]:
        return {
            f"{prefix}_auc": auc(clicks, scores),
            f"{prefix}_logloss": logloss(clicks, scores),
            **segment_metrics(
                scores,
                clicks,
                labels["relevance"][test],
                labels["request"][test],
                segments,
                prefix=f"{prefix}_",
            ),
        }

    metrics: dict[str, float] = (
        score_metrics(
            predict(vanilla, features, test, cfg.train.eval_batch_size), features, test, world_dir
        )
        if settings.train_vanilla
        else {}
    )
    mllm_test = predict(
        mllm,
        features,
        test,
        cfg.train.eval_batch_size,
        lambda _, rows: mllm(torch.from_numpy(samples.compose(rows)))["score"],
    )
    metrics.update(
        {
            "valid_auc": stopper.best_auc,
            "best_epoch": stopper.best_epoch,
            "epochs_run": len(stopper.history),
            "train_seconds": time.perf_counter() - started,
            "mllm_valid_auc": mllm_valid_auc,
            **side_metrics(
                "gain", predict(gain, features, test, cfg.train.eval_batch_size, gain_scores)
            ),
            **side_metrics("mllm", mllm_test),
        }
    )
    record = {
        "metrics": metrics,
        "history": stopper.history,
        "elec": settings.model_dump(),
        "encoder_fingerprint": encoder.fingerprint,
        "rows": {"mllm": len(mllm_rows), "networks": len(train)},
        "seconds": time.perf_counter() - started,
        "position_seen": towers[1].seen(),
    }
    if settings.train_vanilla:
        save_checkpoint(out_dir, vanilla, cfg, spec, world_dir, record)
    else:  # a diagnosis run: its figures, no served model
        out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"config": cfg.model_dump(), "world": str(world_dir), **record}
        (out_dir / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    torch.save(gain.state_dict(), out_dir / "gain.pt")
    torch.save(mllm.state_dict(), out_dir / "mllm.pt")
    return ElecResult(metrics, vanilla, gain, mllm, samples, features, encoder)


def _median_ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def time_per_request(
    result: ElecResult,
    sizes: tuple[int, ...] = (1, 100, 500),
    repeats: int = 5,
) -> dict[str, dict[str, float]]:
    """ELEC's Table 5 analog: milliseconds per request (median of ``repeats``) by candidates.

    - mllm: the language model encodes each candidate's sample text online, then the M-LLM layers;
    - gain: the same language model work plus the gain network;
    - vanilla: the vanilla network alone on the same request (no language model at all).
    """
    features, world, encoder = result.features, result.features.world, result.encoder
    rng = np.random.default_rng(0)
    table: dict[str, dict[str, float]] = {"mllm": {}, "gain": {}, "vanilla": {}}
    with torch.no_grad():
        for n in sizes:
            head = int(rng.integers(0, world.impressions.n_rows - n))
            rows = np.arange(head, head + n)
            batch = features.batch(rows)
            batch["request_index"] = torch.zeros(n, dtype=torch.long)  # one request
            texts = sample_texts(world, rows)

            def run_mllm(texts: list[str] = texts) -> torch.Tensor:
                lm = torch.from_numpy(encoder.encode(texts))
                high: torch.Tensor = result.mllm(lm)["high_level"]
                return high

            def run_gain(batch: Batch = batch) -> None:
                result.gain(batch, run_mllm())

            def run_vanilla(batch: Batch = batch) -> None:
                result.vanilla(batch)

            table["mllm"][str(n)] = _median_ms(run_mllm, repeats)
            table["gain"][str(n)] = _median_ms(run_gain, repeats)
            table["vanilla"][str(n)] = _median_ms(run_vanilla, max(repeats, 20))
    return table
