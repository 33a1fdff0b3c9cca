"""The ONNX runner: buckets, chunking, input checks, IOBinding and the device choice."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from export.onnx import random_inputs
from service.inference import InferenceError, OnnxRunner, RunnerSettings, runner_for
from service.package import ModelPackage


@pytest.fixture(scope="module")
def prectr(tiny_exports: dict[str, Any]) -> ModelPackage:
    package: ModelPackage = tiny_exports["prectr"].package
    return package


def _spec(tiny_runs: Any) -> Any:
    from training.train import load_saved_run

    return load_saved_run(tiny_runs["prectr"]).spec


def test_padding_and_chunking_do_not_change_any_score(prectr: ModelPackage, tiny_runs: Any) -> None:
    spec = _spec(tiny_runs)
    inputs = random_inputs("prectr", spec, 45, seed=3)
    exact = OnnxRunner(prectr.graph_path("fp32"), RunnerSettings(device="cpu", buckets=(45,)))
    padded = OnnxRunner(prectr.graph_path("fp32"), RunnerSettings(device="cpu", buckets=(8, 64)))
    chunked = OnnxRunner(prectr.graph_path("fp32"), RunnerSettings(device="cpu", buckets=(4, 16)))
    assert padded.bucket_for(45) == 64 and chunked.bucket_for(45) == 16
    want = exact.run(inputs)
    for runner in (padded, chunked):
        got = runner.run(inputs)
        for name, values in want.items():
            assert got[name].shape == values.shape
            np.testing.assert_allclose(got[name], values, atol=1e-6)


def test_a_prepared_run_is_the_run_in_two_steps(prectr: ModelPackage, tiny_runs: Any) -> None:
    """`prepare` pads each chunk to its bucket (the service does it on the event loop),
    `execute` runs them: together exactly `run`."""
    inputs = random_inputs("prectr", _spec(tiny_runs), 45, seed=5)
    runner = OnnxRunner(prectr.graph_path("fp32"), RunnerSettings(device="cpu", buckets=(4, 16)))
    prepared = runner.prepare(inputs)
    assert prepared.count == 45
    assert [n for n, _ in prepared.chunks] == [16, 16, 13]
    for _, feed in prepared.chunks:
        assert len(feed["item_vec"]) == 16 and len(feed["query_vec"]) == 1
    got, want = runner.execute(prepared), runner.run(inputs)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_io_binding_gives_the_same_outputs(prectr: ModelPackage, tiny_runs: Any) -> None:
    spec = _spec(tiny_runs)
    plain = OnnxRunner(prectr.graph_path("fp32"), RunnerSettings(device="cpu"))
    bound = OnnxRunner(prectr.graph_path("fp32"), RunnerSettings(device="cpu", io_binding=True))
    for n in (3, 16, 3, 200):  # the same bucket twice: its buffers are updated in place
        inputs = random_inputs("prectr", spec, n, seed=n)
        want, got = plain.run(inputs), bound.run(inputs)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x: x.pop("dense"), "missing"),
        (lambda x: x.update(extra=np.zeros(3)), "extra"),
        (lambda x: x.update(dense=x["dense"].astype(np.float64)), "dtype"),
        # float32 vectors into a graph that takes float16 ones would be narrowed: refused
        (lambda x: x.update(item_vec=x["item_vec"].astype(np.float32)), "dtype"),
        (lambda x: x.update(dense=x["dense"][:2]), "disagree"),
        (lambda x: x.update(query_vec=np.repeat(x["query_vec"], 2, axis=0)), "leading size 1"),
        (lambda x: x.update(item_vec=x["item_vec"][:, :3]), "does not fit"),
    ],
)
def test_inputs_that_do_not_fit_the_graph_are_refused(
    prectr: ModelPackage, tiny_runs: Any, change: Any, message: str
) -> None:
    runner = OnnxRunner(prectr.graph_path("fp32"), RunnerSettings(device="cpu"))
    inputs = random_inputs("prectr", _spec(tiny_runs), 5, seed=0)
    change(inputs)
    with pytest.raises(InferenceError, match=message):
        runner.run(inputs)


def test_a_graph_that_takes_float32_vectors_is_fed_the_same_vectors_widened(
    prectr: ModelPackage, tiny_runs: Any, tmp_path: Path
) -> None:
    """Packages exported before the graphs took float16 vectors keep serving: the runner
    widens the service's float16 vectors (exactly) into their float32 inputs."""
    graph = onnx.load(str(prectr.graph_path("fp32")))
    vectors = [i for i in graph.graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT16]
    assert {i.name for i in vectors} >= {"item_vec", "pair_vec", "query_vec"}
    for tensor in vectors:  # the graph's own Cast to float32 becomes float32 -> float32
        tensor.type.tensor_type.elem_type = TensorProto.FLOAT
    old_path = tmp_path / "float32_inputs.onnx"
    onnx.save(graph, str(old_path))
    current = OnnxRunner(prectr.graph_path("fp32"), RunnerSettings(device="cpu"))
    old = OnnxRunner(old_path, RunnerSettings(device="cpu"))
    assert {i.dtype for i in old.inputs if i.name in {v.name for v in vectors}} == {
        np.dtype(np.float32)
    }
    for n in (5, 300):  # one bucket, and chunks
        inputs = random_inputs("prectr", _spec(tiny_runs), n, seed=n)
        want = current.run(inputs)
        widened = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in inputs.items()}
        for fed in (inputs, widened):
            got = old.run(fed)
            for name, values in want.items():
                np.testing.assert_array_equal(got[name], values, err_msg=name)


def test_warm_runs_every_bucket_and_providers_are_the_sessions(prectr: ModelPackage) -> None:
    runner = OnnxRunner(prectr.graph_path("fp32"), RunnerSettings(device="cpu", buckets=(4, 8)))
    runner.warm(rounds=1)
    assert runner.providers == ("CPUExecutionProvider",)
    assert not runner.on_gpu


def test_auto_precision_serves_fp32_without_a_gpu(prectr: ModelPackage) -> None:
    runner, precision = runner_for(prectr, RunnerSettings(device="auto"), "auto")
    if runner.on_gpu:
        assert precision == "fp16"
    else:
        assert precision == "fp32" and runner.path.name == "model.onnx"


def test_cuda_is_refused_where_it_cannot_start(prectr: ModelPackage) -> None:
    probe = OnnxRunner(prectr.graph_path("fp32"), RunnerSettings(device="auto"))
    if probe.on_gpu:
        pytest.skip("a GPU is usable here")
    assert "CPUExecutionProvider" in ort.get_available_providers()
    with pytest.raises(InferenceError, match="cuda"):
        OnnxRunner(prectr.graph_path("fp32"), RunnerSettings(device="cuda"))


def test_bad_buckets_are_refused(prectr: ModelPackage) -> None:
    with pytest.raises(InferenceError, match="increasing"):
        OnnxRunner(prectr.graph_path("fp32"), RunnerSettings(buckets=(64, 16)))


def test_inference_goes_to_its_thread_only_where_another_request_could_overlap_it(
    prectr: ModelPackage, tiny_runs: Any
) -> None:
    """A ranking alone in flight is inferred on the event loop (the hand-off would buy
    nothing) while no two have overlapped for `OVERLAP_MEMORY_S`; with another ranking in
    flight, an inference already on the pool, a recent overlap, or off the response path (a
    shadow score), its graph runs on the inference thread, prepared on the loop."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from service.settings import Settings
    from service.state import OVERLAP_MEMORY_S, ServiceState

    threads: list[str] = []
    preparing: list[str] = []

    class Recording(OnnxRunner):
        def prepare(self, inputs: Any) -> Any:
            preparing.append(threading.current_thread().name)
            return super().prepare(inputs)

        def execute(self, prepared: Any) -> Any:
            threads.append(threading.current_thread().name)
            return super().execute(prepared)

    runner = Recording(prectr.graph_path("fp32"), RunnerSettings(device="cpu"))
    model = SimpleNamespace(name="prectr", runner=runner)
    inputs = random_inputs("prectr", _spec(tiny_runs), 5, seed=0)
    state = ServiceState(Settings(store="redis"))
    state.inference_pool = ThreadPoolExecutor(1, "inference")

    async def scenarios() -> None:
        state.in_flight = 1
        await state.infer(model, inputs)  # type: ignore[arg-type]
        await state.infer(model, inputs, answering=False)  # type: ignore[arg-type]
        state.in_flight = 2
        await state.infer(model, inputs)  # type: ignore[arg-type]
        state.in_flight = 1  # alone again, but just after an overlap: under load
        await state.infer(model, inputs)  # type: ignore[arg-type]
        state.last_overlap = time.perf_counter() - OVERLAP_MEMORY_S - 0.1  # the load is gone
        await state.infer(model, inputs)  # type: ignore[arg-type]
        state.pool_runs = 1
        await state.infer(model, inputs)  # type: ignore[arg-type]

    try:
        asyncio.run(scenarios())
    finally:
        state.inference_pool.shutdown()
    loop_thread = threading.current_thread().name
    on_pool = [name.startswith("inference") for name in threads]
    assert on_pool == [False, True, True, True, False, True], threads
    # the checks and the padding stay on the loop: the thread only runs the graph
    assert preparing == [loop_thread] * 6
    assert state.pool_runs == 1  # the counter was set by hand above; infer leaves it as found
