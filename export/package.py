"""Build a model package from a finished training run (see service/package.py for the format).

Steps: rebuild the run's model; for PRECTR load the pair approximator the run fitted to it;
export the fp32 graph (and the fp16 GPU variant); hold each graph to parity through the service's
runner; run the reference inputs; write ``manifest.json``. Everything is written into a temporary
folder that is renamed into place only when every step passed, so a failed export leaves no
package behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from export.onnx import export_graph, input_specs, output_specs, random_inputs, served_module
from export.parity import BOUNDS, ParityResult, check_parity
from service.contract import EMPTY_QUERY_ID, HISTORY_LENGTH
from service.inference import OnnxRunner, RunnerSettings
from service.package import (
    SPEC_FILE,
    Family,
    GraphFile,
    Manifest,
    ModelPackage,
    Precision,
    StoredArray,
    file_sha256,
    sign_package,
    write_manifest,
)
from training.approximator import PairInputs, approximator_report, held_out_queries
from training.data.tables import World
from training.models.prectr import PRECTR
from training.models.text_tower import PairApproximator
from training.tower import load_reduced, load_tower_approximator, tower_folder
from training.train import APPROXIMATOR_FILE, SavedRun, git_sha, load_saved_run

log = logging.getLogger(__name__)

GRAPH_FILES: dict[Precision, str] = {"fp32": "model.onnx", "fp16": "model.fp16.onnx"}
#: Candidates in the reference inputs every load runs (they live in the manifest: ~0.2 MB).
REFERENCE_CANDIDATES = 64


class ExportError(RuntimeError):
    """The run cannot be exported (wrong family, missing tower, failed parity)."""


@dataclass
class ExportResult:
    package: ModelPackage
    parity: dict[Precision, ParityResult]
    seconds: float


def family_of(run: SavedRun) -> Family:
    family = run.config.model.family
    if family not in ("prectr", "vanilla"):
        raise ExportError(f"family {family!r} is not served; export prectr or vanilla runs")
    return cast(Family, family)


def load_approximator(run: SavedRun, world_dir: Path) -> PairApproximator:
    """The pair approximator a PRECTR run fitted to its model (training.approximator); for a run
    saved before that fit, the one trained with the run's text tower, checked by fingerprint."""
    folder = tower_folder(world_dir, run.config.text_tower)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise ExportError(f"{world_dir}: no text tower at {folder}; train on this world first")
    tower = json.loads(meta_path.read_text())
    if tower["fingerprint"] != run.meta["text_tower"]["fingerprint"]:
        raise ExportError(
            f"{folder}: text tower {tower['fingerprint'][:12]} is not the run's "
            f"{run.meta['text_tower']['fingerprint'][:12]}"
        )
    fitted = run.folder / APPROXIMATOR_FILE
    if not fitted.is_file():
        return load_tower_approximator(world_dir, run.config.text_tower)
    approximator = PairApproximator(int(tower["config"]["output_dim"]))
    approximator.load_state_dict(torch.load(fitted, weights_only=True))
    return approximator.eval()


def empty_query_share(world: World) -> float:
    """The share of the world's training impressions that are recommendation requests."""
    impressions = world.impressions
    train = impressions["split"] == 0
    return float(np.mean(impressions["query_id"][train] == EMPTY_QUERY_ID)) if train.any() else 0.0


def default_version() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def export_run(
    run_dir: Path,
    out_root: Path,
    *,
    name: str | None = None,
    version: str | None = None,
    world_dir: Path | None = None,
    fp16: bool = True,
    runner_settings: RunnerSettings | None = None,
    parity_rounds: int = 2,
    seed: int = 0,
    key: bytes | None = None,
) -> ExportResult:
    """Export a run to ``out_root/<name>/<version>/`` (signed with ``key`` where given); raises
    `ExportError` or `ParityError`."""
    started = time.perf_counter()
    run = load_saved_run(run_dir)
    family = family_of(run)
    name, version = name or family, version or default_version()
    world_dir = world_dir or Path(run.meta["world"]["path"])
    approximator = load_approximator(run, world_dir) if family == "prectr" else None
    settings = runner_settings or RunnerSettings(device="cpu")
    final = out_root / name / version
    if final.exists():
        raise ExportError(f"{final} exists; packages are immutable, pick another --version")
    staging = final.parent / f".{version}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        reference = served_module(family, run.model, approximator)
        reference_inputs = random_inputs(family, run.spec, REFERENCE_CANDIDATES, seed)
        graphs: dict[Precision, GraphFile] = {}
        parity: dict[Precision, ParityResult] = {}
        for precision in ("fp32", "fp16") if fp16 else ("fp32",):
            module: nn.Module = served_module(
                family, run.model, approximator, half=precision == "fp16"
            )
            path = export_graph(module, family, run.spec, staging / GRAPH_FILES[precision], seed)
            runner = OnnxRunner(path, settings)
            result = check_parity(
                reference, runner, family, run.spec, precision, rounds=parity_rounds, seed=seed
            )
            log.info("%s: %s", name, result.describe())
            result.raise_if_failed()
            parity[precision] = result
            outputs = runner.run(reference_inputs)
            graphs[precision] = GraphFile(
                file=path.name,
                sha256=file_sha256(path),
                parity_bound=BOUNDS[precision],
                parity=result.report,
                reference_outputs={k: StoredArray.of(v) for k, v in outputs.items()},
            )
        run.spec.save(staging / SPEC_FILE)
        manifest = _manifest(run_dir, run, family, name, version, graphs, reference_inputs)
        world = World.load(world_dir, mmap=True)
        checks: dict[str, Any] = {"empty_query_share": empty_query_share(world)}
        if approximator is not None:
            assert isinstance(run.model, PRECTR)  # family_of and served_module checked it
            reduced = load_reduced(tower_folder(world_dir, run.config.text_tower))
            held_out = held_out_queries(
                world, run.config.prectr.approximator.held_out_share, run.config.train.seed
            )
            inputs = PairInputs(world, reduced)
            checks["approximator"] = approximator_report(
                run.model, approximator, world, inputs, held_out
            )
            log.info("%s: pair approximator %s", name, checks["approximator"])
        manifest = manifest.model_copy(update=checks)
        write_manifest(staging, manifest)
        if key is not None:
            sign_package(staging, key)
        ModelPackage(staging, key=key)  # read back what was written: the service's checks
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(ModelPackage(final), parity, time.perf_counter() - started)


def _manifest(
    run_dir: Path,
    run: SavedRun,
    family: Family,
    name: str,
    version: str,
    graphs: dict[Precision, GraphFile],
    reference_inputs: dict[str, Any],
) -> Manifest:
    tower = run.meta["text_tower"]
    metrics = {
        k: float(v) for k, v in run.meta.get("metrics", {}).items() if isinstance(v, int | float)
    }
    return Manifest(
        name=name,
        family=family,
        version=version,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        git_sha=git_sha(),
        contract_hash=run.spec.content_hash,
        text_dim=int(tower["config"]["output_dim"]),
        encoder_fingerprint=str(tower["encoder_fingerprint"]),
        text_tower_fingerprint=str(tower["fingerprint"]),
        history_length=HISTORY_LENGTH,
        inputs=input_specs(family, run.spec),
        outputs=output_specs(family),
        graphs=graphs,
        reference_inputs={k: StoredArray.of(v) for k, v in reference_inputs.items()},
        metrics=metrics,
        training={
            "run_dir": str(run_dir),
            "config": run.config.model_dump(),
            "world": run.meta.get("world", {}),
            "training_git_sha": run.meta.get("git_sha", ""),
        },
    )


def recheck_package(
    folder: Path,
    *,
    run_dir: Path | None = None,
    world_dir: Path | None = None,
    runner_settings: RunnerSettings | None = None,
    rounds: int = 2,
    seed: int = 1,
) -> list[ParityResult]:
    """Parity of an existing package's graphs against the run it was exported from."""
    package = ModelPackage(folder)
    manifest = package.manifest
    run_dir = run_dir or Path(str(manifest.training.get("run_dir", "")))
    run = load_saved_run(run_dir)
    if run.spec.content_hash != manifest.contract_hash:
        raise ExportError(f"{run_dir} was trained on another contract than {folder}")
    family = family_of(run)
    world_dir = world_dir or Path(run.meta["world"]["path"])
    approximator = load_approximator(run, world_dir) if family == "prectr" else None
    reference = served_module(family, run.model, approximator)
    settings = runner_settings or RunnerSettings(device="cpu")
    return [
        check_parity(
            reference,
            OnnxRunner(package.graph_path(precision), settings),
            family,
            run.spec,
            precision,
            rounds=rounds,
            seed=seed,
        )
        for precision in manifest.graphs
    ]
