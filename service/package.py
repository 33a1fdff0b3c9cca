"""The model package: what `ranker export onnx` writes and the service loads.

A package is a folder ``artifacts/<model>/<version>/`` holding

- ``model.onnx`` (fp32) and optionally ``model.fp16.onnx`` (the GPU variant);
- ``feature_spec.json``: the feature contract the model was trained on (its hash is in the
  manifest), from which the service assembles the model's inputs;
- ``manifest.json``: the `Manifest` below: input and output names, dtypes and symbolic dims, the
  contract hash, the encoder and text-tower fingerprints the index must match, the training
  metrics, reference inputs and outputs (so a reload can prove the file computes what the exporter
  measured), the parity results, when and from which commit it was made;
- ``manifest.sig`` where the exporter had a package key: the HMAC-SHA256 of ``manifest.json``.

The manifest holds every graph's and the contract's checksum, so the manifest's own digest or
signature covers the whole package. Checksums alone prove a package consistent, not authentic: a
package whose weights were changed and whose manifest was rewritten to match is consistent. A
service with a package key refuses anything not signed with it, and a reload may pin the
manifest's SHA-256 (what `ranker export onnx` prints).

This module owns the format and its validation; it imports no torch, so the service reads
packages with it and `export/` writes them with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from service.contract import FeatureSpec

MANIFEST_FORMAT = 1
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
SPEC_FILE = "feature_spec.json"
#: The symbolic name of the candidate axis in every exported graph.
CANDIDATE_AXIS = "candidates"
Precision = Literal["fp32", "fp16"]
Family = Literal["prectr", "vanilla"]


class PackageError(ValueError):
    """A package that is missing, malformed or inconsistent with itself."""


class TensorSpec(BaseModel):
    """One graph input or output: its name, numpy dtype name and shape (ints or axis names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @property
    def per_candidate(self) -> bool:
        """True when the leading axis is the candidate axis (padded to a bucket)."""
        return bool(self.shape) and self.shape[0] == CANDIDATE_AXIS


class StoredArray(BaseModel):
    """A numpy array kept exactly in JSON: dtype, shape and base64 of its little-endian bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: str
    shape: tuple[int, ...]
    data: str

    @classmethod
    def of(cls, array: npt.NDArray[Any]) -> StoredArray:
        contiguous = np.ascontiguousarray(array)
        little = contiguous.astype(contiguous.dtype.newbyteorder("<"), copy=False)
        return cls(
            dtype=str(contiguous.dtype),
            shape=tuple(int(d) for d in contiguous.shape),
            data=base64.b64encode(little.tobytes()).decode("ascii"),
        )

    def array(self) -> npt.NDArray[Any]:
        raw = base64.b64decode(self.data)
        dtype = np.dtype(self.dtype).newbyteorder("<")
        return np.frombuffer(raw, dtype=dtype).astype(self.dtype).reshape(self.shape)


class GraphFile(BaseModel):
    """One ONNX file of the package, its checksum, and its reference outputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    sha256: str
    #: The largest abs difference to the torch model the exporter accepted for this precision.
    parity_bound: float
    #: What parity measured: {output: {"max_abs": .., "mean_abs": ..}}.
    parity: dict[str, dict[str, float]] = Field(default_factory=dict)
    reference_outputs: dict[str, StoredArray]


class Manifest(BaseModel):
    """Everything the service needs to know about a package before it runs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = MANIFEST_FORMAT
    name: str
    family: Family
    version: str
    created: str
    git_sha: str
    contract_hash: str
    text_dim: int
    encoder_fingerprint: str
    text_tower_fingerprint: str
    history_length: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    graphs: dict[Precision, GraphFile]
    reference_inputs: dict[str, StoredArray]
    metrics: dict[str, float] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    #: Share of training impressions without a query (recommendation requests); 0 means the
    #: model never saw an empty query and the service says so when it gets one.
    empty_query_share: float | None = None
    #: PRECTR: the pair approximator judged by the relevance the served RSL reads from its
    #: vectors (training.approximator): on the pairs it was fitted on ("in_sample") and on the
    #: pairs of queries kept out of its fit ("held_out"); level bias, mean absolute error,
    #: label errors, cosines.
    approximator: dict[str, dict[str, float]] | None = None

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def manifest_signature(manifest: bytes, key: bytes) -> str:
    """HMAC-SHA256 of a manifest's bytes under the package key, hex."""
    return hmac.new(key, manifest, hashlib.sha256).hexdigest()


def sign_package(folder: Path, key: bytes) -> Path:
    """Write ``manifest.sig`` for the package's manifest as it is now."""
    path = folder / SIGNATURE_FILE
    path.write_text(manifest_signature((folder / MANIFEST_FILE).read_bytes(), key) + "\n")
    return path


class ModelPackage:
    """A package folder, read and checked: the manifest parses and every graph file matches its
    checksum; with ``key``, the manifest carries that key's signature; with ``pin``, the
    manifest's SHA-256 is the pinned one. Running the reference inputs is the caller's job (it
    owns the runner)."""

    def __init__(self, folder: Path, *, key: bytes | None = None, pin: str | None = None) -> None:
        self.folder = folder
        path = folder / MANIFEST_FILE
        if not path.is_file():
            raise PackageError(f"{folder}: no {MANIFEST_FILE}")
        raw = path.read_bytes()  # checked and parsed from the same bytes
        self.manifest_sha256 = hashlib.sha256(raw).hexdigest()
        if pin is not None and not hmac.compare_digest(self.manifest_sha256, pin.lower()):
            raise PackageError(f"{path}: SHA-256 {self.manifest_sha256} is not the pinned {pin}")
        if key is not None:
            self._check_signature(raw, key)
        try:
            self.manifest = Manifest.model_validate_json(raw)
        except ValueError as err:
            raise PackageError(f"{path}: invalid manifest: {err}") from err
        if self.manifest.format != MANIFEST_FORMAT:
            raise PackageError(
                f"{path}: manifest format {self.manifest.format}, this service reads "
                f"{MANIFEST_FORMAT}"
            )
        try:
            self.spec = FeatureSpec.load(folder / SPEC_FILE)
        except (OSError, ValueError) as err:
            raise PackageError(f"{folder}: unreadable {SPEC_FILE}: {err}") from err
        if self.spec.content_hash != self.manifest.contract_hash:
            raise PackageError(f"{folder}: {SPEC_FILE} is not the contract the manifest names")
        for precision, graph in self.manifest.graphs.items():
            file = folder / graph.file
            if not file.is_file():
                raise PackageError(f"{folder}: {precision} graph {graph.file} is missing")
            if file_sha256(file) != graph.sha256:
                raise PackageError(f"{file}: checksum does not match the manifest")

    def _check_signature(self, manifest: bytes, key: bytes) -> None:
        path = self.folder / SIGNATURE_FILE
        try:
            signature = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise PackageError(f"{self.folder}: not signed (no readable {SIGNATURE_FILE})") from err
        if not hmac.compare_digest(signature, manifest_signature(manifest, key)):
            raise PackageError(f"{self.folder}: not signed with the configured package key")

    def graph_path(self, precision: Precision) -> Path:
        graph = self.manifest.graphs.get(precision)
        if graph is None:
            raise PackageError(
                f"{self.folder}: no {precision} graph (has {sorted(self.manifest.graphs)})"
            )
        return self.folder / graph.file

    def __repr__(self) -> str:
        m = self.manifest
        return f"ModelPackage({m.name}@{m.version}, {self.folder})"


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` (sorted keys, so two exports of one model diff cleanly)."""
    path = folder / MANIFEST_FILE
    body = json.loads(manifest.model_dump_json())
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
