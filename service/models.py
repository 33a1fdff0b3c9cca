"""Loaded models and the registry that swaps them atomically.

Loading a package = read and checksum it (`ModelPackage`), open its graph for this device
(`runner_for`), run its reference inputs (`check_reference`), warm every bucket. Only a model that
passed all four enters the registry. The registry's table is replaced, never mutated, so a
request that took a model keeps it to the end while the next request sees the new one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.assemble import Assembler
from service.inference import OnnxRunner, RunnerSettings, check_reference, runner_for
from service.package import ModelPackage, Precision
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    package: ModelPackage
    runner: OnnxRunner
    precision: Precision
    assembler: Assembler
    loaded_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.package.manifest.name

    @property
    def version(self) -> str:
        return self.package.manifest.version

    @property
    def family(self) -> str:
        return self.package.manifest.family

    def describe(self, with_path: bool = False) -> dict[str, Any]:
        """What /models shows; the package's path on the host only when ``with_path``."""
        m = self.package.manifest
        described = {
            "name": m.name,
            "version": m.version,
            "family": m.family,
            "precision": self.precision,
            "providers": list(self.runner.providers),
            "buckets": list(self.runner.settings.buckets),
            "contract_hash": m.contract_hash,
            "manifest_sha256": self.package.manifest_sha256,
            "text_tower_fingerprint": m.text_tower_fingerprint,
            "metrics": m.metrics,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
        }
        if with_path:
            described["path"] = str(self.package.folder)
        return described


def runner_settings(settings: Settings) -> RunnerSettings:
    return RunnerSettings(
        device=settings.device,
        buckets=settings.buckets,
        intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
    )


def package_key(settings: Settings) -> bytes | None:
    key = settings.package_key
    return key.get_secret_value().encode() if key is not None else None


def load_model(path: Path, settings: Settings, pin: str | None = None) -> LoadedModel:
    """Load, verify (signature where a key is set, ``pin``: the manifest's SHA-256) and warm
    one package (raises PackageError / InferenceError)."""
    started = time.perf_counter()
    package = ModelPackage(path, key=package_key(settings), pin=pin)
    runner, precision = runner_for(package, runner_settings(settings), settings.precision)
    check_reference(runner, package, precision)
    runner.warm()
    model = LoadedModel(package, runner, precision, Assembler(package.spec))
    log.info(
        "model %s@%s ready on %s (%s) in %.2fs",
        model.name,
        model.version,
        runner.providers[0],
        precision,
        time.perf_counter() - started,
    )
    return model


class ModelRegistry:
    """Models by name; `swap` replaces one atomically."""

    def __init__(self) -> None:
        self._models: dict[str, LoadedModel] = {}

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Make ``model`` the one served under its name; returns the one it replaced."""
        previous = self._models.get(model.name)
        self._models = {**self._models, model.name: model}  # one reference assignment
        return previous

    def get(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self._models)

    def all(self) -> list[LoadedModel]:
        return [self._models[name] for name in self.names]
