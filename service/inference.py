"""The ONNX runner: one exported graph on ONNX Runtime, candidate counts padded to fixed buckets.

Everything that runs a package's graph goes through `OnnxRunner`: the service, the exporter's
parity check and the reload check, so what parity measured is what serves.

- Providers: ``device="auto"`` asks for CUDA when this onnxruntime build offers it, then believes
  only ``session.get_providers()``: a CUDA request that silently fell back to CPU is reported as
  CPU. ``device="cuda"`` refuses to fall back.
- Buckets: per-candidate inputs (leading axis ``candidates``) are zero-padded to the smallest
  bucket that holds them, so the runtime sees a handful of shapes, each warmed once by `warm`;
  more candidates than the largest bucket run in chunks of it (the graphs score every candidate
  independently, request-level inputs are shared by the chunks).
- IOBinding: on CUDA the inputs of each bucket live in preallocated device buffers updated in
  place, and outputs are bound to host memory, so a request costs one copy each way.
- Threads: intra- and inter-op thread counts are explicit, never "all cores per worker".
- Dtypes: an input must come in the graph's dtype, except a float that converts exactly
  (float16 vectors into a graph exported when the graphs still took float32 ones: widened here,
  so packages of either export serve the same arrays).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.package import CANDIDATE_AXIS, ModelPackage, PackageError, Precision

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
Arrays = dict[str, npt.NDArray[Any]]
#: Close enough that padding wastes little (at most 25 % above 128 candidates: inference time is
#: linear in the padded count), few enough that warming every shape takes a second.
DEFAULT_BUCKETS: tuple[int, ...] = (
    16,
    32,
    48,
    64,
    96,
    128,
    160,
    192,
    224,
    256,
    320,
    384,
    448,
    512,
    640,
    768,
    896,
    1024,
)
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


class InferenceError(RuntimeError):
    """Inputs that do not fit the graph, or a device that is not there."""


@dataclass(frozen=True)
class RunnerSettings:
    """How a graph is run (the service fills these from its settings)."""

    device: Device = "auto"
    buckets: tuple[int, ...] = DEFAULT_BUCKETS
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    #: Use IOBinding on CPU too (it always is on CUDA); tests exercise the CUDA code path with it.
    io_binding: bool = False


@dataclass(frozen=True)
class _Input:
    name: str
    dtype: np.dtype[Any]
    per_candidate: bool
    tail: tuple[int, ...]  # the shape after the leading axis


def _providers(device: Device) -> list[str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return [_CPU]
    if _CUDA in available:
        # onnxruntime-gpu on a machine without CUDA libraries logs an error per session before
        # falling back; the fallback is reported once, by `providers`, at warning level.
        ort.set_default_logger_severity(4 if device == "auto" else 2)
        return [_CUDA, _CPU]
    if device == "cuda":
        raise InferenceError(f"device=cuda but this onnxruntime offers only {available}")
    return [_CPU]


@functools.cache
def _warn_cpu_fallback_once() -> None:
    log.warning("CUDA is in this onnxruntime build but did not start here; running on CPU")


def _widens(given: np.dtype[Any], taken: np.dtype[Any]) -> bool:
    """Whether a float input of dtype ``given`` converts exactly to a graph's ``taken`` float
    (float16 vectors into a graph exported before the graphs took them as float16)."""
    return given.kind == taken.kind == "f" and np.can_cast(given, taken, "safe")


@dataclass(frozen=True)
class PreparedRun:
    """Inputs checked and padded for `OnnxRunner.execute`: N candidates in chunks of at most
    the largest bucket, each (its candidate count, its feed padded to its bucket)."""

    count: int
    chunks: tuple[tuple[int, Arrays], ...]


class OnnxRunner:
    """One ONNX graph ready to score candidates.

    Shapes:
        inputs: per-candidate arrays (N, ...) and request-level arrays (1, ...), by name ->
        outputs (N, ...) by name, N any positive count.
    """

    def __init__(self, path: Path, settings: RunnerSettings | None = None) -> None:
        self.path = path
        self.settings = settings = settings or RunnerSettings()
        if not settings.buckets or list(settings.buckets) != sorted(set(settings.buckets)):
            raise InferenceError(f"buckets must be increasing and distinct: {settings.buckets}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = settings.inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # a missing CUDA library is reported by `providers`
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=_providers(settings.device)
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise InferenceError(f"{path}: onnxruntime could not load the graph: {err}") from err
        self.providers: tuple[str, ...] = tuple(self.session.get_providers())
        if settings.device == "cuda" and not self.on_gpu:
            raise InferenceError(f"device=cuda but the session runs on {self.providers}")
        if settings.device == "auto" and _CUDA in ort.get_available_providers() and not self.on_gpu:
            _warn_cpu_fallback_once()
        self.inputs = tuple(self._describe(i) for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        if not any(i.per_candidate for i in self.inputs):
            raise InferenceError(f"{path}: no input has the {CANDIDATE_AXIS!r} axis")
        self._use_binding = self.on_gpu or settings.io_binding
        self._device_buffers: dict[int, dict[str, ort.OrtValue]] = {}
        self._lock = threading.Lock()  # an IOBinding is not safe to share between threads
        log.info("loaded %s on %s (buckets %s)", path.name, self.providers, settings.buckets)

    @staticmethod
    def _describe(node: Any) -> _Input:
        dtype = _ORT_TYPES.get(node.type)
        if dtype is None:
            raise InferenceError(f"input {node.name}: unsupported type {node.type}")
        shape = tuple(node.shape)
        per_candidate = bool(shape) and shape[0] == CANDIDATE_AXIS
        tail = tuple(int(d) if isinstance(d, int) else -1 for d in shape[1:])
        return _Input(node.name, np.dtype(dtype), per_candidate, tail)

    @property
    def on_gpu(self) -> bool:
        return _CUDA in self.providers

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    def bucket_for(self, n: int) -> int:
        """The padded size that ``n`` candidates run at (the largest bucket for chunked runs)."""
        for bucket in self.settings.buckets:
            if n <= bucket:
                return bucket
        return self.settings.buckets[-1]

    def _check(self, inputs: Mapping[str, npt.NDArray[Any]]) -> int:
        missing = [i.name for i in self.inputs if i.name not in inputs]
        extra = sorted(set(inputs) - set(self.input_names))
        if missing or extra:
            raise InferenceError(f"inputs do not match the graph: missing {missing}, extra {extra}")
        counts: set[int] = set()
        for spec in self.inputs:
            array = inputs[spec.name]
            if array.dtype != spec.dtype and not _widens(array.dtype, spec.dtype):
                raise InferenceError(
                    f"{spec.name}: dtype {array.dtype}, the graph takes {spec.dtype}"
                )
            fixed = all(t in (-1, a) for t, a in zip(spec.tail, array.shape[1:], strict=False))
            if array.ndim != len(spec.tail) + 1 or not fixed:
                raise InferenceError(f"{spec.name}: shape {array.shape} does not fit {spec.tail}")
            if spec.per_candidate:
                counts.add(int(array.shape[0]))
            elif array.shape[0] != 1:
                raise InferenceError(f"{spec.name}: a request-level input has leading size 1")
        if len(counts) != 1 or 0 in counts:
            raise InferenceError(
                f"per-candidate inputs disagree on the count or are empty: {counts}"
            )
        return counts.pop()

    def run(self, inputs: Mapping[str, npt.NDArray[Any]]) -> Arrays:
        """Score N candidates: pad to a bucket (or chunk), run, and cut the padding off."""
        return self.execute(self.prepare(inputs))

    def prepare(self, inputs: Mapping[str, npt.NDArray[Any]]) -> PreparedRun:
        """The checks and the padding of `run`, without running the graph: what holds the GIL.

        The service prepares on its event loop and executes on the inference thread, so that
        thread, the worker's bottleneck under load, spends its time in ONNX Runtime (which
        releases the GIL) and not in numpy copies that take the GIL back from the loop."""
        n = self._check(inputs)
        largest = self.settings.buckets[-1]
        chunks = [(start, min(start + largest, n)) for start in range(0, n, largest)]
        return PreparedRun(n, tuple(self._padded(inputs, start, stop) for start, stop in chunks))

    def execute(self, prepared: PreparedRun) -> Arrays:
        """Run prepared feeds and cut the padding off: outputs (N, ...) by name."""
        parts = [self._run_feed(n, feed) for n, feed in prepared.chunks]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def _padded(
        self, inputs: Mapping[str, npt.NDArray[Any]], start: int, stop: int
    ) -> tuple[int, Arrays]:
        """Candidates ``start:stop`` padded with zeros to their bucket, request-level inputs as
        they are, each in the graph's dtype: (the chunk's candidate count, the feed)."""
        n = stop - start
        bucket = self.bucket_for(n)
        feed: Arrays = {}
        for spec in self.inputs:
            array = inputs[spec.name]
            if spec.per_candidate:
                padded = np.zeros((bucket, *array.shape[1:]), dtype=spec.dtype)
                padded[:n] = array[start:stop]
                array = padded
            feed[spec.name] = np.ascontiguousarray(array, dtype=spec.dtype)
        return n, feed

    def _run_feed(self, n: int, feed: Arrays) -> Arrays:
        if self._use_binding:
            bucket = next(len(feed[i.name]) for i in self.inputs if i.per_candidate)
            outputs = self._run_bound(bucket, feed)
        else:
            outputs = self.session.run(list(self.output_names), feed)
        return {name: out[:n] for name, out in zip(self.output_names, outputs, strict=True)}

    def _run_bound(self, bucket: int, feed: Arrays) -> list[npt.NDArray[Any]]:
        device = "cuda" if self.on_gpu else "cpu"
        with self._lock:
            buffers = self._device_buffers.get(bucket)
            if buffers is None:
                buffers = {
                    name: ort.OrtValue.ortvalue_from_numpy(array, device, 0)
                    for name, array in feed.items()
                }
                self._device_buffers[bucket] = buffers
            binding = self.session.io_binding()
            for name, array in feed.items():
                value = buffers[name]
                if tuple(value.shape()) != array.shape:  # request-level shapes can differ
                    value = buffers[name] = ort.OrtValue.ortvalue_from_numpy(array, device, 0)
                else:
                    value.update_inplace(array)
                binding.bind_ortvalue_input(name, value)
            for name in self.output_names:
                binding.bind_output(name, "cpu")
            self.session.run_with_iobinding(binding)
            return list(binding.copy_outputs_to_cpu())

    def zero_inputs(self, n: int) -> Arrays:
        """Inputs of ``n`` all-default candidates (for warming and smoke checks)."""
        return {
            spec.name: np.zeros(
                (n if spec.per_candidate else 1, *(max(d, 1) for d in spec.tail)),
                dtype=spec.dtype,
            )
            for spec in self.inputs
        }

    def warm(self, rounds: int = 2) -> None:
        """Run every bucket so each shape's kernels and buffers exist before traffic arrives."""
        for bucket in self.settings.buckets:
            inputs = self.zero_inputs(bucket)
            for _ in range(rounds):
                self.run(inputs)


def max_abs_diff(
    got: Mapping[str, npt.NDArray[Any]], want: Mapping[str, npt.NDArray[Any]]
) -> dict[str, dict[str, float]]:
    """Per output: the max and mean absolute difference (inf where shapes differ)."""
    report: dict[str, dict[str, float]] = {}
    for name, expected in want.items():
        actual = got.get(name)
        if actual is None or actual.shape != expected.shape:
            report[name] = {"max_abs": float("inf"), "mean_abs": float("inf")}
            continue
        diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        report[name] = {"max_abs": float(diff.max(initial=0.0)), "mean_abs": float(diff.mean())}
    return report


def check_reference(runner: OnnxRunner, package: ModelPackage, precision: Precision) -> None:
    """Run the manifest's reference inputs; refuse the package if the outputs moved beyond the
    bound parity was held to (a corrupted file, a wrong runtime, a wrong device)."""
    manifest = package.manifest
    graph = manifest.graphs[precision]
    inputs = {name: stored.array() for name, stored in manifest.reference_inputs.items()}
    outputs = runner.run(inputs)
    want = {name: stored.array() for name, stored in graph.reference_outputs.items()}
    report = max_abs_diff(outputs, want)
    failed = {name: r for name, r in report.items() if not r["max_abs"] <= graph.parity_bound}
    if failed:
        raise PackageError(
            f"{package.folder}: {precision} reference outputs differ beyond "
            f"{graph.parity_bound:g}: {describe_report(failed)}"
        )


def describe_report(report: Mapping[str, Mapping[str, float]]) -> str:
    """'score max 1e-07 mean 2e-08, ...' for messages."""
    return ", ".join(
        f"{name} max {r['max_abs']:.3g} mean {r['mean_abs']:.3g}" for name, r in report.items()
    )


def runner_for(
    package: ModelPackage, settings: RunnerSettings, precision: Precision | Literal["auto"]
) -> tuple[OnnxRunner, Precision]:
    """The package's graph for this device: fp16 only on a GPU (and only when asked or auto)."""
    if precision == "fp16":
        return OnnxRunner(package.graph_path("fp16"), settings), "fp16"
    runner = OnnxRunner(package.graph_path("fp32"), settings)
    # Only a session knows whether CUDA really came up: on a CPU fp32 is faster and exact, so
    # the fp16 graph is opened only when the fp32 one landed on a GPU.
    if precision == "auto" and runner.on_gpu and "fp16" in package.manifest.graphs:
        return OnnxRunner(package.graph_path("fp16"), settings), "fp16"
    return runner, "fp32"
