"""Torch -> ONNX: each family in the form it serves, and the export of that form.

The served form scores one request's N candidates. Inputs that depend only on the request (the
query vector and the user's history) come once, with a leading axis of 1, and the graph
broadcasts them; everything per candidate has the symbolic leading axis ``candidates``.

PRECTR's served form folds in the pair approximator: for a candidate whose (query, item) pair the
index does not hold (``pair_known`` False) the approximator's vector stands in for the pair
vector, inside the graph, so the service never runs a second model.

The text vectors come in as the index stores them, float16, and the graph widens them (its first
Cast nodes): the widening is exact, so the function is the one of fp32 inputs, and it costs the
graph less than numpy's astype costs the service (docs/ARCHITECTURE.md, Decisions). Graphs
exported before this took float32 vectors; the runner still widens for them
(`service.inference`).

The fp16 variant (for GPUs) runs the embeddings and every network in half precision and keeps the
fusion (softmax, sigmoids, Eq. 1, the odds-scaled incentive) in fp32; its inputs and outputs are
those of the fp32 variant, so the service feeds both variants the same arrays.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import torch
from torch import Tensor, nn

from service.contract import HISTORY_LENGTH, RELEVANCE_LEVELS, FeatureSpec
from service.index.snapshot import VECTOR_DTYPE as INDEX_VECTOR_DTYPE
from service.package import CANDIDATE_AXIS, Family, TensorSpec
from training.models.baselines import example_batch
from training.models.elec import VanillaNetwork
from training.models.prectr import PRECTR, fuse
from training.models.text_tower import PairApproximator

log = logging.getLogger(__name__)

OPSET = 18
#: Candidates in the example the exporter traces: not 0 or 1 (specialized) nor any static width.
_TRACE_CANDIDATES = 7
#: The text vectors' input dtype: the index's own, so the service feeds them without a cast.
VECTOR_DTYPE = np.dtype(INDEX_VECTOR_DTYPE).name


def _text_dim(spec: FeatureSpec) -> int:
    return int(next(f.dim for f in spec.select(kind="vector") if f.dim))


def input_specs(family: Family, spec: FeatureSpec) -> tuple[TensorSpec, ...]:
    """The served graph's inputs, in argument order."""
    n = CANDIDATE_AXIS
    tabular = (
        TensorSpec(
            name="categorical", dtype="int64", shape=(n, len(spec.select(kind="categorical")))
        ),
        TensorSpec(name="dense", dtype="float32", shape=(n, len(spec.select(kind="dense")))),
    )
    if family == "vanilla":
        return tabular
    d, length = _text_dim(spec), HISTORY_LENGTH
    return (
        *tabular,
        TensorSpec(name="item_vec", dtype=VECTOR_DTYPE, shape=(n, d)),
        TensorSpec(name="pair_vec", dtype=VECTOR_DTYPE, shape=(n, d)),
        TensorSpec(name="pair_known", dtype="bool", shape=(n,)),
        TensorSpec(name="query_vec", dtype=VECTOR_DTYPE, shape=(1, d)),
        TensorSpec(name="history_query_vec", dtype=VECTOR_DTYPE, shape=(1, length, d)),
        TensorSpec(name="history_pair_vec", dtype=VECTOR_DTYPE, shape=(1, length, d)),
        TensorSpec(name="history_mask", dtype="bool", shape=(1, length)),
    )


def output_specs(family: Family) -> tuple[TensorSpec, ...]:
    n = CANDIDATE_AXIS
    score = TensorSpec(name="score", dtype="float32", shape=(n,))
    if family == "vanilla":
        return (score,)
    return (
        score,
        TensorSpec(name="p_rsl", dtype="float32", shape=(n, RELEVANCE_LEVELS)),
        TensorSpec(name="p_click_given_rsl", dtype="float32", shape=(n, RELEVANCE_LEVELS)),
        TensorSpec(name="tau", dtype="float32", shape=(n,)),
    )


class ServedPrectr(nn.Module):
    """PRECTR for one request: N candidates, request-level inputs once, approximator folded in.

    Shapes:
        categorical (N, F) int64, dense (N, Dd) fp32, item_vec (N, D), pair_vec (N, D),
        pair_known (N,) bool, query_vec (1, D), history_query_vec (1, L, D),
        history_pair_vec (1, L, D), history_mask (1, L) bool; vectors fp16
        -> score (N,), p_rsl (N, 4), p_click_given_rsl (N, 4), tau (N,); all fp32.
    """

    def __init__(self, model: PRECTR, approximator: PairApproximator, half: bool = False) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        self.approximator = copy.deepcopy(approximator).eval()
        self.dtype = torch.float16 if half else torch.float32
        if half:
            self.model.half()
            self.approximator.half()

    def forward(
        self,
        categorical: Tensor,
        dense: Tensor,
        item_vec: Tensor,
        pair_vec: Tensor,
        pair_known: Tensor,
        query_vec: Tensor,
        history_query_vec: Tensor,
        history_pair_vec: Tensor,
        history_mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        dt = self.dtype
        n = categorical.shape[0]
        item, query = item_vec.to(dt), query_vec.to(dt)
        approximated = self.approximator(query.expand(n, -1), item)  # (N, D)
        pair = torch.where(pair_known.unsqueeze(1), pair_vec.to(dt), approximated)
        batch = {
            "categorical": categorical,
            "dense": dense.to(dt),
            "item_vec": item,
            "pair_vec": pair,
            "request_index": torch.zeros_like(categorical[:, 0]),  # (N,): all in request 0
            "query_vec": query,
            "history_query_vec": history_query_vec.to(dt),
            "history_pair_vec": history_pair_vec.to(dt),
            "history_mask": history_mask,
        }
        rsl_logits, click_logits, log_tau = self.model.arch_logits(batch)
        out = fuse(rsl_logits.float(), click_logits.float(), log_tau.float())  # fp32 fusion
        return out["score"], out["p_rsl"], out["p_click_given_rsl"], out["tau"]


class ServedVanilla(nn.Module):
    """ELEC's vanilla network as served.

    Shapes:
        categorical (N, F) int64, dense (N, Dd) -> score (N,) fp32.
    """

    def __init__(self, model: VanillaNetwork, half: bool = False) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        self.dtype = torch.float16 if half else torch.float32
        if half:
            self.model.half()

    def forward(self, categorical: Tensor, dense: Tensor) -> tuple[Tensor]:
        out = self.model({"categorical": categorical, "dense": dense.to(self.dtype)})
        return (torch.sigmoid(out["logit"].float()),)


def served_module(
    family: Family, model: nn.Module, approximator: PairApproximator | None, half: bool = False
) -> nn.Module:
    """The served form of a trained model (PRECTR needs its world's pair approximator)."""
    if family == "prectr":
        if not isinstance(model, PRECTR) or approximator is None:
            raise TypeError("prectr export needs a PRECTR model and its pair approximator")
        return ServedPrectr(model, approximator, half)
    if not isinstance(model, VanillaNetwork):
        raise TypeError(f"vanilla export needs a VanillaNetwork, got {type(model).__name__}")
    return ServedVanilla(model, half)


def random_inputs(
    family: Family, spec: FeatureSpec, n: int, seed: int
) -> dict[str, npt.NDArray[Any]]:
    """Valid random inputs for ``n`` candidates of one request, as the service would feed them."""
    batch = example_batch(spec, n, history=HISTORY_LENGTH, seed=seed, requests=1)
    rng = np.random.default_rng(seed)
    arrays: dict[str, npt.NDArray[Any]] = {k: v.numpy() for k, v in batch.items()}
    arrays["pair_known"] = rng.random(n) < 0.7
    out: dict[str, npt.NDArray[Any]] = {}
    for tensor in input_specs(family, spec):
        out[tensor.name] = np.ascontiguousarray(arrays[tensor.name].astype(tensor.dtype))
    return out


def torch_outputs(
    module: nn.Module, family: Family, inputs: dict[str, npt.NDArray[Any]]
) -> dict[str, npt.NDArray[Any]]:
    """Run the served torch module on numpy inputs; outputs by name."""
    names = [t.name for t in output_specs(family)]
    with torch.no_grad():
        values = module(**{name: torch.from_numpy(a) for name, a in inputs.items()})
    return {name: v.numpy() for name, v in zip(names, values, strict=True)}


def export_graph(
    module: nn.Module, family: Family, spec: FeatureSpec, path: Path, seed: int = 0
) -> Path:
    """Export a served module to ``path`` (one self-contained file) and check it."""
    inputs = input_specs(family, spec)
    example = random_inputs(family, spec, _TRACE_CANDIDATES, seed)
    candidates = torch.export.Dim(CANDIDATE_AXIS, min=1, max=65_536)
    dynamic = {t.name: ({0: candidates} if t.per_candidate else None) for t in inputs}
    # The exporter's registry logs a warning per missing torchvision op: not ours to act on.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(record=True) as caught:
        # The exporter warns about its own internals (dim renaming, deprecations); they are
        # logged, not raised, so a torch upgrade's new notice does not fail an export.
        warnings.simplefilter("always")
        torch.onnx.export(
            module.eval(),
            tuple(torch.from_numpy(example[t.name]) for t in inputs),
            str(path),
            input_names=[t.name for t in inputs],
            output_names=[t.name for t in output_specs(family)],
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            external_data=False,
            dynamo=True,
            verbose=False,
        )
    for warning in caught:
        log.debug("torch.onnx: %s", warning.message)
    onnx.checker.check_model(str(path), full_check=True)
    return path
