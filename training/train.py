"""The training loop: configs, two-stage PRECTR training, early stopping, checkpoints, DDP.

An experiment is a TOML file (training/configs/*.toml) validated by `ExperimentConfig`. A run:
1. loads the world and its MiniLM vectors, trains or loads the cached text tower (training.tower)
   and assembles features (training.features);
2. for PRECTR with ``two_stage``: pretrains the RSL module on the relevance levels of the pairs of
   training queries (PRECTR 4.3, Eq. 2), then co-trains with the RSL parameters at
   ``rsl_lr_ratio`` x the base learning rate;
3. trains on whole request lists (the listwise terms need them) with click BCE through the
   position tower (training.models.position: P(click) = P(seen | position) * the model's
   probability, PAL), plus PRECTR's semantic consistency (gamma) and the optional PWiseR term on
   the model's own position-free score, early-stopping on the validation AUC of that score;
4. evaluates the best weights on the test split and writes ``model.pt`` + ``meta.json``
   (config, contract hash, tower fingerprint, metrics, git sha) + ``metrics.json``;
5. for PRECTR: fits the served pair approximator to the trained model (training.approximator)
   and writes it as ``approximator.pt``, its held-out report in ``meta.json``.

Under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (gloo on CPU,
nccl on GPUs); each rank takes every world_size-th batch, and all ranks stay identical.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm import tqdm

from service.contract import FeatureSpec, default_feature_spec
from training.approximator import ApproximatorFit, fit_approximator
from training.data.tables import World
from training.encode import DEFAULT_CACHE
from training.evaluate import auc, gauc, logloss, ndcg_at_k, relevance_score_at_k, request_auc
from training.features import ImpressionFeatures
from training.losses import pwiser, relevance_cross_entropy, semantic_consistency
from training.models import build_model
from training.models.position import PositionTower, position_aware_bce
from training.models.prectr import PRECTR
from training.segments import row_segments, segment_metrics
from training.tower import (
    TowerSettings,
    load_tower_approximator,
    tower_meta,
    train_text_tower,
)

log = logging.getLogger(__name__)
APPROXIMATOR_FILE = "approximator.pt"  # PRECTR runs: the served pair approximator
Array = np.ndarray[Any, Any]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    family: str
    params: dict[str, Any] = Field(default_factory=dict)


class TrainSection(_Section):
    seed: int = 0
    batch_size: int = 2048
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 2
    max_train_rows: int | None = None
    # Share of training rows shown as items the index lacks (ImpressionFeatures.hide_items),
    # so that an unknown candidate scores as "unknown", not as an untrained embedding.
    unknown_item_share: float = Field(0.0, ge=0.0, lt=1.0)
    eval_batch_size: int = 8192
    threads: int | None = None


class PrectrSection(_Section):
    """PRECTR's training scheme (4.3-4.5); the defaults are the paper's alpha, beta, gamma."""

    two_stage: bool = True
    pretrain_epochs: int = 8
    pretrain_lr: float = 1e-3
    rsl_lr_ratio: float = 0.1
    gamma: float = 0.3
    alpha: float = 4.0
    beta: float = 1.0
    approximator: ApproximatorFit = Field(default_factory=ApproximatorFit)


class LossSection(_Section):
    # The relevance levels as an auxiliary task, for models with ``rsl_logits`` other than
    # PRECTR (whose RSL trains in its own stage): the fusion control, WideDeepPair.
    relevance_weight: float = 0.0
    pwiser_weight: float = 0.0
    pwiser_margin_click_only: float = 0.3  # converted vs clicked-only
    pwiser_margin_non_click: float = 0.1  # converted vs non-clicked


class ElecSection(_Section):
    """ELEC's distillation (training.distill); switching a term off gives the ablations."""

    # Up to this many epochs, keeping the best by validation AUC (patience ``mllm_patience``):
    # one epoch over a small world is a few dozen steps, which left the M-LLM near chance.
    mllm_epochs: int = 1
    mllm_patience: int = 2
    mllm_lr: float = 1e-3
    use_clid: bool = True
    use_rep: bool = True
    alpha: float = 1.0
    # Diagnosis switches (docs/EVALUATION.md, ELEC): what the gain network is given. "zero" and
    # "shuffled" (across the rows of a batch) are sanity rows: with them the gain network should
    # match DCNv2 alone. "disjoint": the M-LLM fits the earlier half of the training rows and the
    # gain and vanilla networks the later half, so no vector annotates a row it was fitted on.
    lm_vector: Literal["sample", "zero", "shuffled"] = "sample"
    mllm_rows: Literal["same", "disjoint"] = "same"
    full_text: bool = False  # the sample text with category, brand and query category
    train_vanilla: bool = True  # False: a diagnosis run of the gain network alone (no model.pt)
    # A local model folder, an installed model package or a cached Hugging Face id (offline).
    encoder_path: str | None = None
    cache: str = str(DEFAULT_CACHE)


class ExperimentConfig(_Section):
    name: str
    model: ModelSection
    train: TrainSection = Field(default_factory=TrainSection)
    prectr: PrectrSection = Field(default_factory=PrectrSection)
    loss: LossSection = Field(default_factory=LossSection)
    text_tower: TowerSettings = Field(default_factory=TowerSettings)
    elec: ElecSection = Field(default_factory=ElecSection)


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read a TOML experiment; ``overrides`` maps dotted keys (``train.seed``) to values."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return ExperimentConfig.model_validate(raw)


@dataclass
class RunResult:
    metrics: dict[str, float]
    out_dir: Path
    seconds: float
    model: nn.Module
    history: list[dict[str, float]]


def git_sha() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def request_batches(
    request: Array, rows: Array, batch_size: int, rng: np.random.Generator
) -> list[Array]:
    """Shuffled batches of whole request lists: rows of one request never straddle batches."""
    order = np.argsort(request[rows], kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.r_[True, np.diff(request[sorted_rows]) != 0])
    lists = np.split(sorted_rows, starts[1:])
    per_batch = max(1, round(batch_size * len(lists) / max(len(rows), 1)))
    shuffled = [lists[i] for i in rng.permutation(len(lists))]
    return [np.concatenate(shuffled[i : i + per_batch]) for i in range(0, len(shuffled), per_batch)]


class EarlyStopping:
    """Keeps the best weights of some modules by validation AUC and says when to stop.

    Stops once ``patience`` epochs in a row fail to beat the best; `restore` loads the best,
    and `best_epoch` says which epoch that was (1-based).
    """

    def __init__(self, name: str, patience: int, modules: dict[str, nn.Module]) -> None:
        self.name = name
        self.patience = patience
        self.modules = modules
        self.best_auc = -1.0
        self.best_epoch = 0
        self.history: list[dict[str, float]] = []
        self._best: dict[str, dict[str, torch.Tensor]] = {}
        self._stale = 0

    def end_epoch(self, train_loss: float, valid_auc: float) -> bool:
        """Record an epoch; True when training should stop."""
        self.history.append(
            {"epoch": len(self.history) + 1, "train_loss": train_loss, "valid_auc": valid_auc}
        )
        log.info(
            "%s epoch %d: train loss %.4f, valid AUC %.4f",
            self.name,
            len(self.history),
            train_loss,
            valid_auc,
        )
        if valid_auc > self.best_auc:
            self.best_auc, self._stale = valid_auc, 0
            self.best_epoch = len(self.history)
            self._best = {
                name: {k: v.detach().clone() for k, v in module.state_dict().items()}
                for name, module in self.modules.items()
            }
            return False
        self._stale += 1
        return self._stale >= self.patience

    def restore(self) -> None:
        for name, state in self._best.items():
            self.modules[name].load_state_dict(state)


def _distributed() -> tuple[int, int]:
    """(rank, world size); initializes the process group under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


ScoreFn = Callable[[dict[str, torch.Tensor], Array], torch.Tensor]


def predict(
    model: nn.Module,
    features: ImpressionFeatures,
    rows: Array,
    batch: int,
    score_fn: ScoreFn | None = None,
) -> Array:
    """Scores of rows in eval mode; ``score_fn(batch, rows)`` replaces ``model(batch)["score"]``."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            inputs = features.batch(chunk)
            scores = score_fn(inputs, chunk) if score_fn else model(inputs)["score"]
            out.append(scores.numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros(0)


def evaluate_rows(
    model: nn.Module, features: ImpressionFeatures, rows: Array, world_dir: Path, batch: int
) -> dict[str, float]:
    """AUC, GAUC (by user), LogLoss and Relevance Score@10 (MiniLM vectors) on some rows."""
    return score_metrics(predict(model, features, rows, batch), features, rows, world_dir)


def score_metrics(
    scores: Array, features: ImpressionFeatures, rows: Array, world_dir: Path
) -> dict[str, float]:
    """The offline metrics of given scores of some rows: AUC, GAUC by user, LogLoss, the
    per-request click AUC and NDCG@10 against graded relevance (with the number of requests each
    covers), Relevance Score@10 and the AUC (and NDCG@10) of each segment (training.segments).
    The scores are the model's own, position-free: the function the service ranks by."""
    labels = features.labels
    minilm_queries = np.load(world_dir / "vectors" / "queries.npy", mmap_mode="r")
    minilm_items = np.load(world_dir / "vectors" / "items.npy", mmap_mode="r")
    click, request = labels["click"][rows], labels["request"][rows]
    request_click_auc, auc_requests = request_auc(click, scores, request)
    ndcg, ndcg_requests = ndcg_at_k(labels["relevance"][rows], scores, request, k=10)
    relevance_score, moving, queries = relevance_score_at_k(
        labels["query"][rows],
        features.item_id[rows],
        scores,
        np.asarray(minilm_queries, dtype=np.float32),
        np.asarray(minilm_items, np.float32),
    )
    return {
        "auc": auc(click, scores),
        "gauc": gauc(click, scores, labels["user"][rows]),
        "logloss": logloss(click, scores),
        "request_auc": request_click_auc,
        "request_auc_requests": auc_requests,
        "ndcg_at_10": ndcg,
        "ndcg_requests": ndcg_requests,
        "relevance_score_at_10": relevance_score,
        "relevance_score_queries_moving": moving,
        "relevance_score_queries": queries,
        **segment_metrics(
            scores, click, labels["relevance"][rows], request, row_segments(features.world, rows)
        ),
    }


def _pretrain_rsl(
    model: PRECTR, features: ImpressionFeatures, cfg: ExperimentConfig, rng: np.random.Generator
) -> float:
    """Stage one: the RSL module alone on the relevance levels of training queries' pairs."""
    world = features.world
    imp = world.impressions
    train_queries = np.unique(imp["query_id"][imp["split"] == 0])
    rows = np.flatnonzero(np.isin(world.pairs["query_id"], train_queries))
    v = features.vectors
    q = torch.from_numpy(v.queries[world.pairs["query_id"][rows]].astype(np.float32))
    i = torch.from_numpy(v.items[world.pairs["item_id"][rows]].astype(np.float32))
    p = torch.from_numpy(v.pairs[rows].astype(np.float32))
    relevance = torch.from_numpy(features.pair_dense[rows])
    level = torch.from_numpy(world.pairs["relevance"][rows].astype(np.int64))
    optimizer = torch.optim.Adam(model.rsl_parameters(), lr=cfg.prectr.pretrain_lr)
    loss = torch.zeros(())
    for epoch in range(cfg.prectr.pretrain_epochs):
        order = rng.permutation(len(rows))
        bar = tqdm(
            range(0, len(rows), cfg.train.batch_size),
            leave=False,
            desc=f"RSL pretrain {epoch + 1}/{cfg.prectr.pretrain_epochs}",
        )
        for start in bar:
            b = torch.from_numpy(order[start : start + cfg.train.batch_size])
            optimizer.zero_grad()
            loss = relevance_cross_entropy(model.rsl(q[b], i[b], p[b], relevance[b]), level[b])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    with torch.no_grad():
        accuracy = (model.rsl(q, i, p, relevance).argmax(1) == level).float().mean().item()
    return float(accuracy)


def build_optimizer(
    model: nn.Module, cfg: ExperimentConfig, extra: list[nn.Parameter] | None = None
) -> torch.optim.Optimizer:
    """Adam over the model's and the ``extra`` (position tower) parameters; PRECTR's RSL
    parameters get ``rsl_lr_ratio`` x the base rate after pretraining."""
    base = cfg.train.lr
    extra = extra or []
    if isinstance(model, PRECTR) and cfg.prectr.two_stage:
        rsl_ids = {id(p) for p in model.rsl_parameters()}
        groups = [
            {
                "params": [p for p in model.parameters() if id(p) not in rsl_ids] + extra,
                "lr": base,
                "name": "base",
            },
            {"params": model.rsl_parameters(), "lr": base * cfg.prectr.rsl_lr_ratio, "name": "rsl"},
        ]
        return torch.optim.Adam(groups, weight_decay=cfg.train.weight_decay, fused=True)
    # fused: one kernel over all parameters; 10x faster than the default on CPU for the large
    # embedding tables.
    return torch.optim.Adam(
        [*model.parameters(), *extra], lr=base, weight_decay=cfg.train.weight_decay, fused=True
    )


class WithPositionTower(nn.Module):
    """A model and its training-only position tower as one module (what DDP wraps, so both
    are synchronized): the model's outputs plus ``log_seen`` (B,) of each row's position."""

    def __init__(self, model: nn.Module, tower: PositionTower) -> None:
        super().__init__()
        self.model = model
        self.tower = tower

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs: dict[str, torch.Tensor] = dict(self.model(batch))
        outputs["log_seen"] = self.tower.log_seen(batch["position"])
        return outputs


def training_loss(
    outputs: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    cfg: ExperimentConfig,
    is_prectr: bool,
) -> torch.Tensor:
    """Click BCE of P(seen | position) x the model's probability, plus the listwise terms on the
    model's own (position-free) score: what ranks when served."""
    loss = position_aware_bce(outputs["logit"], outputs["log_seen"], batch["click"])
    if is_prectr and cfg.prectr.gamma > 0:
        loss = loss + cfg.prectr.gamma * semantic_consistency(
            outputs["score"],
            batch["click"],
            batch["relevance"],
            batch["request"],
            cfg.prectr.alpha,
            cfg.prectr.beta,
        )
    if not is_prectr and cfg.loss.relevance_weight > 0:
        loss = loss + cfg.loss.relevance_weight * relevance_cross_entropy(
            outputs["rsl_logits"], batch["relevance"]
        )
    if cfg.loss.pwiser_weight > 0:
        loss = loss + cfg.loss.pwiser_weight * pwiser(
            outputs["score"],
            batch["click"],
            batch["conversion"],
            cfg.loss.pwiser_margin_click_only,
            cfg.loss.pwiser_margin_non_click,
        )
    return loss


def run_training(
    cfg: ExperimentConfig, world_dir: Path, out_dir: Path, spec: FeatureSpec | None = None
) -> RunResult:
    """Train one experiment on one world and write its checkpoint (see the module docstring)."""
    started = time.perf_counter()
    rank, world_size = _distributed()
    torch.set_num_threads(cfg.train.threads or os.cpu_count() or 1)
    seed_everything(cfg.train.seed)
    rng = np.random.default_rng(cfg.train.seed)
    spec = spec or default_feature_spec(cfg.text_tower.output_dim)

    world = World.load(world_dir, mmap=True)
    reduced = train_text_tower(world, world_dir, cfg.text_tower)
    features = ImpressionFeatures(world, reduced, spec)
    train_rows, valid_rows, test_rows = (features.rows_of_split(s) for s in range(3))
    if cfg.train.max_train_rows and len(train_rows) > cfg.train.max_train_rows:
        train_rows = train_rows[-cfg.train.max_train_rows :]  # the most recent traffic

    seed_everything(cfg.train.seed)  # the same initial weights on every rank
    model = build_model(cfg.model.family, spec, cfg.model.params)
    is_prectr = isinstance(model, PRECTR)
    extra: dict[str, Any] = {}
    if is_prectr and cfg.prectr.two_stage:
        assert isinstance(model, PRECTR)
        extra["rsl_pretrain_accuracy"] = _pretrain_rsl(model, features, cfg, rng)
    tower = PositionTower()
    optimizer = build_optimizer(model, cfg, list(tower.parameters()))
    trainable: nn.Module = WithPositionTower(model, tower)
    if world_size > 1:
        trainable = nn.parallel.DistributedDataParallel(trainable)

    stopper = EarlyStopping(cfg.name, cfg.train.patience, {"model": model, "position": tower})
    # Its own stream: a share of 0 leaves the batch order of every earlier run unchanged.
    hiding_rng = np.random.default_rng([cfg.train.seed, 1])
    for epoch in range(cfg.train.epochs):
        batches = request_batches(features.labels["request"], train_rows, cfg.train.batch_size, rng)
        batches = batches[: len(batches) - len(batches) % world_size][rank::world_size]
        bar = tqdm(
            batches, desc=f"{cfg.name} epoch {epoch + 1}/{cfg.train.epochs}", disable=rank != 0
        )
        total = 0.0
        for rows in bar:
            batch = features.batch(rows)
            if cfg.train.unknown_item_share:
                features.hide_items(batch, hiding_rng, cfg.train.unknown_item_share)
            optimizer.zero_grad()
            loss = training_loss(trainable(batch), batch, cfg, is_prectr)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        valid_auc = auc(
            features.labels["click"][valid_rows],
            predict(model, features, valid_rows, cfg.train.eval_batch_size),
        )
        if stopper.end_epoch(total / max(len(batches), 1), valid_auc):
            break
    stopper.restore()
    best_auc, history = stopper.best_auc, stopper.history

    metrics = evaluate_rows(model, features, test_rows, world_dir, cfg.train.eval_batch_size)
    seconds = time.perf_counter() - started
    metrics.update(
        {
            "valid_auc": best_auc,
            "best_epoch": stopper.best_epoch,
            "epochs_run": len(history),
            "train_seconds": seconds,
            **extra,
        }
    )
    record: dict[str, Any] = {}
    if rank == 0 and isinstance(model, PRECTR):
        approximator, record["approximator"] = fit_approximator(
            model,
            load_tower_approximator(world_dir, cfg.text_tower),
            world,
            reduced,
            cfg.prectr.approximator,
            cfg.train.seed,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(approximator.state_dict(), out_dir / APPROXIMATOR_FILE)
    if rank == 0:
        save_checkpoint(
            out_dir,
            model,
            cfg,
            spec,
            world_dir,
            {
                "metrics": metrics,
                "history": history,
                "seconds": seconds,
                "world_size": world_size,
                "position_seen": tower.seen(),  # P(seen | position) the tower learnt
                **record,
            },
        )
    return RunResult(metrics, out_dir, seconds, model, history)


def save_checkpoint(
    out_dir: Path,
    model: nn.Module,
    cfg: ExperimentConfig,
    spec: FeatureSpec,
    world_dir: Path,
    record: dict[str, Any],
) -> None:
    """``model.pt`` + ``meta.json`` (config, contract hash, tower, world, git sha, record) +
    ``metrics.json`` + ``feature_spec.json``."""
    world_meta = json.loads((world_dir / "world.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "model.pt")
    meta = {
        "config": cfg.model_dump(),
        "contract_hash": spec.content_hash,
        "text_tower": tower_meta(world_dir, cfg.text_tower),
        "world": {
            "path": str(world_dir),
            **{k: world_meta.get(k) for k in ("source", "size", "seed")},
        },
        "git_sha": git_sha(),
        **record,
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(record["metrics"], indent=2) + "\n")
    spec.save(out_dir / "feature_spec.json")


@dataclass
class SavedRun:
    """A finished run read back: its model (eval mode), config, contract and meta record."""

    model: nn.Module
    config: ExperimentConfig
    spec: FeatureSpec
    meta: dict[str, Any]
    folder: Path


def load_saved_run(run_dir: Path) -> SavedRun:
    """The model a run saved (``model.pt``), rebuilt from its own config and contract."""
    meta = json.loads((run_dir / "meta.json").read_text())
    cfg = ExperimentConfig.model_validate(meta["config"])
    spec = FeatureSpec.load(run_dir / "feature_spec.json")
    model = build_model(cfg.model.family, spec, cfg.model.params)
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    return SavedRun(model.eval(), cfg, spec, meta, run_dir)


def evaluate_saved_run(run_dir: Path, world_dir: Path) -> dict[str, float]:
    """Test-split metrics of a finished run's weights on a world (writes ``eval.json``)."""
    run = load_saved_run(run_dir)
    cfg, spec, model = run.config, run.spec, run.model
    world = World.load(world_dir, mmap=True)
    features = ImpressionFeatures(world, train_text_tower(world, world_dir, cfg.text_tower), spec)
    metrics = evaluate_rows(
        model, features, features.rows_of_split(2), world_dir, cfg.train.eval_batch_size
    )
    (run_dir / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
