"""Export: the served graphs, parity through the service's runner, and the model package."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from export.onnx import input_specs, served_module
from export.package import ExportError, export_run, load_approximator
from export.parity import FP32_BOUND, ParityError, check_parity
from service.inference import DEFAULT_BUCKETS, OnnxRunner, RunnerSettings, check_reference
from service.package import CANDIDATE_AXIS, ModelPackage, PackageError
from training.train import load_saved_run

FAMILIES = ("prectr", "vanilla")


@pytest.mark.parametrize("family", FAMILIES)
def test_parity_passes_at_every_bucket_size_in_both_precisions(
    tiny_exports: dict[str, Any], family: str
) -> None:
    result = tiny_exports[family]
    assert set(result.parity) == {"fp32", "fp16"}
    for precision, parity in result.parity.items():
        assert parity.passed, parity.describe()
        for bucket in DEFAULT_BUCKETS:  # each bucket's full size ran, and a chunked run too
            assert bucket in parity.sizes
        assert max(parity.sizes) > DEFAULT_BUCKETS[-1]
        if precision == "fp32":
            assert max(r["max_abs"] for r in parity.report.values()) <= FP32_BOUND
    expected = {"score", "p_rsl", "p_click_given_rsl", "tau"} if family == "prectr" else {"score"}
    assert set(result.parity["fp32"].report) == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_a_perturbed_weight_fails_parity_and_names_each_output(
    tiny_exports: dict[str, Any], tiny_runs: dict[str, Path], family: str
) -> None:
    package = tiny_exports[family].package
    run = load_saved_run(tiny_runs[family])
    approximator = (
        load_approximator(run, Path(run.meta["world"]["path"])) if family == "prectr" else None
    )
    reference = served_module(family, run.model, approximator)  # type: ignore[arg-type]
    runner = OnnxRunner(package.graph_path("fp32"), RunnerSettings(device="cpu", buckets=(8, 32)))
    assert check_parity(reference, runner, family, run.spec, "fp32", rounds=1).passed  # type: ignore[arg-type]

    with torch.no_grad():  # the bias of the last layer that feeds the score (a single weight
        # may meet an input that is 0 on every parity row: a ReLU unit the tiny model never uses)
        last = [m for m in reference.modules() if isinstance(m, torch.nn.Linear)][-1]
        assert last.bias is not None
        last.bias[0] += 0.5
    result = check_parity(reference, runner, family, run.spec, "fp32", rounds=1)  # type: ignore[arg-type]
    assert not result.passed
    with pytest.raises(ParityError) as err:
        result.raise_if_failed()
    message = str(err.value)
    assert "FAILED" in message
    for output in result.report:
        assert f"{output} max" in message
    assert "mean" in message


@pytest.mark.parametrize("family", FAMILIES)
def test_graph_takes_request_level_inputs_once_and_candidates_on_a_symbolic_axis(
    tiny_exports: dict[str, Any], family: str
) -> None:
    package: ModelPackage = tiny_exports[family].package
    manifest = package.manifest
    for precision in ("fp32", "fp16"):
        runner = OnnxRunner(package.graph_path(precision), RunnerSettings(device="cpu"))
        session_inputs = {i.name: i for i in runner.session.get_inputs()}
        assert tuple(session_inputs) == manifest.input_names
        for spec in manifest.inputs:
            shape = session_inputs[spec.name].shape
            assert (shape[0] == CANDIDATE_AXIS) == spec.per_candidate
            if not spec.per_candidate:
                assert shape[0] == 1
        assert {o.name for o in runner.session.get_outputs()} == set(manifest.output_names)
        # fp16 graphs keep fp32 inputs and outputs: the service feeds both the same arrays
        assert session_inputs["dense"].type == "tensor(float)"
    if family == "prectr":
        request_level = {s.name for s in manifest.inputs if not s.per_candidate}
        assert request_level == {
            "query_vec",
            "history_query_vec",
            "history_pair_vec",
            "history_mask",
        }


@pytest.mark.parametrize("family", FAMILIES)
def test_manifest_records_what_the_service_checks(
    tiny_exports: dict[str, Any], tiny_runs: dict[str, Path], family: str
) -> None:
    package: ModelPackage = tiny_exports[family].package
    m = package.manifest
    run = load_saved_run(tiny_runs[family])
    assert (m.name, m.family, m.version) == (family, family, "1")
    assert m.contract_hash == run.spec.content_hash
    assert m.text_tower_fingerprint == run.meta["text_tower"]["fingerprint"]
    assert m.encoder_fingerprint == run.meta["text_tower"]["encoder_fingerprint"]
    assert m.input_names == tuple(t.name for t in input_specs(family, run.spec))  # type: ignore[arg-type]
    assert m.metrics["auc"] == pytest.approx(run.meta["metrics"]["auc"])
    assert len(m.git_sha) >= 7 and m.created.endswith("Z")
    raw = json.loads((package.folder / "manifest.json").read_text())
    assert raw["inputs"][0]["shape"][0] == CANDIDATE_AXIS
    for precision in ("fp32", "fp16"):
        runner = OnnxRunner(package.graph_path(precision), RunnerSettings(device="cpu"))
        check_reference(runner, package, precision)  # passes on the file as exported


def test_reload_checks_refuse_a_tampered_package(
    tiny_exports: dict[str, Any], tmp_path: Path
) -> None:
    source: ModelPackage = tiny_exports["prectr"].package
    broken = tmp_path / "broken"
    shutil.copytree(source.folder, broken)
    graph = broken / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-16] + b"\0" * 16)
    with pytest.raises(PackageError, match="checksum"):
        ModelPackage(broken)

    moved = tmp_path / "moved"
    shutil.copytree(source.folder, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    stored = manifest["graphs"]["fp32"]["reference_outputs"]["score"]
    scores = np.frombuffer(base64.b64decode(stored["data"]), dtype="<f4") + 0.01
    stored["data"] = base64.b64encode(scores.astype("<f4").tobytes()).decode()
    (moved / "manifest.json").write_text(json.dumps(manifest))
    package = ModelPackage(moved)
    runner = OnnxRunner(package.graph_path("fp32"), RunnerSettings(device="cpu"))
    with pytest.raises(PackageError, match="reference outputs differ"):
        check_reference(runner, package, "fp32")


def test_a_failed_export_leaves_no_package(
    tiny_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import export.parity

    monkeypatch.setitem(export.parity.BOUNDS, "fp32", -1.0)  # no graph can pass this
    with pytest.raises(ParityError):
        export_run(tiny_runs["vanilla"], tmp_path, version="x", fp16=False, parity_rounds=1)
    assert not (tmp_path / "vanilla" / "x").exists()
    assert list((tmp_path / "vanilla").iterdir()) == []  # no staging folder either


def test_packages_are_immutable(tiny_exports: dict[str, Any]) -> None:
    package: ModelPackage = tiny_exports["vanilla"].package
    root = package.folder.parent.parent
    run_dir = Path(package.manifest.training["run_dir"])
    with pytest.raises(ExportError, match="immutable"):
        export_run(run_dir, root, version="1")


def test_the_pair_approximator_is_judged_by_the_relevance_it_implies(
    tiny_exports: dict[str, Any],
) -> None:
    """Cosine hid it (pair vectors share a large common direction): an approximated pair was
    read as far more relevant than its real pair. Export states, for the served PRECTR, how far
    the expected relevance level read from approximated vectors lies from the one read from the
    real vectors, on pairs of queries the approximator was never fitted on, and the mean bias
    there is bounded."""
    report = tiny_exports["prectr"].package.manifest.approximator
    assert report is not None and tiny_exports["vanilla"].package.manifest.approximator is None
    held_out, in_sample = report["held_out"], report["in_sample"]
    print(f"tiny world approximator: held out {held_out}, in sample {in_sample}")
    assert held_out["pairs"] > 0 and in_sample["pairs"] > 0
    assert abs(held_out["level_bias"]) < 0.1  # in relevance levels (0..3)
    assert held_out["level_mean_abs_error"] >= abs(held_out["level_bias"])
    assert held_out["centred_cosine"] < held_out["cosine"]  # the common direction flatters it
