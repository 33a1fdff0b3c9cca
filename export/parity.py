"""Parity: does the exported graph, run by the service's own runner, compute the torch model?

Random request batches of every size class the runner pads to (the smallest and largest count of
each candidate bucket, one in between, and one past the largest bucket so chunking is covered)
run through `service.inference.OnnxRunner` and through the fp32 torch model in its served form.
The result lists the max and mean absolute difference per output; it passes when every max is
within the bound (fp32: 1e-5; fp16: `FP16_BOUND`, measured against the fp32 torch model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from export.onnx import random_inputs, torch_outputs
from service.contract import FeatureSpec
from service.inference import OnnxRunner, describe_report, max_abs_diff
from service.package import Family, Precision

FP32_BOUND = 1e-5
#: Half precision keeps ~3 significant digits through the networks; scores are probabilities
#: and tau is near 1, so 2e-3 absolute is a few units in the last place of fp16.
FP16_BOUND = 2e-3
BOUNDS: dict[Precision, float] = {"fp32": FP32_BOUND, "fp16": FP16_BOUND}


class ParityError(AssertionError):
    """The exported graph does not compute the torch model within the bound."""


@dataclass
class ParityResult:
    precision: Precision
    bound: float
    sizes: list[int]
    report: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r["max_abs"] <= self.bound for r in self.report.values())

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"{self.precision} parity {verdict} (bound {self.bound:g}, {len(self.sizes)} batches, "
            f"sizes {min(self.sizes)}..{max(self.sizes)}): {describe_report(self.report)}"
        )

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise ParityError(self.describe())


def batch_sizes(buckets: tuple[int, ...], rng: np.random.Generator) -> list[int]:
    """Candidate counts that exercise every bucket: its bounds, a random count inside, and one
    count past the largest bucket (a chunked run)."""
    sizes: list[int] = []
    low = 1
    for bucket in buckets:
        sizes += [low, int(rng.integers(low, bucket + 1)), bucket]
        low = bucket + 1
    sizes.append(buckets[-1] + int(rng.integers(1, buckets[0] + 1)))
    return sizes


def check_parity(
    reference: nn.Module,
    runner: OnnxRunner,
    family: Family,
    spec: FeatureSpec,
    precision: Precision,
    *,
    rounds: int = 2,
    seed: int = 0,
) -> ParityResult:
    """Compare ``runner`` against the fp32 torch ``reference`` over ``rounds`` x every size."""
    rng = np.random.default_rng(seed)
    result = ParityResult(precision, BOUNDS[precision], sizes=[])
    totals: dict[str, list[float]] = {}
    for _ in range(rounds):
        for n in batch_sizes(runner.settings.buckets, rng):
            inputs = random_inputs(family, spec, n, seed=int(rng.integers(2**31)))
            report = max_abs_diff(runner.run(inputs), torch_outputs(reference, family, inputs))
            result.sizes.append(n)
            for name, r in report.items():
                worst = result.report.setdefault(name, {"max_abs": 0.0, "mean_abs": 0.0})
                worst["max_abs"] = max(worst["max_abs"], r["max_abs"])
                totals.setdefault(name, []).append(r["mean_abs"] * n)
    for name, weighted in totals.items():
        result.report[name]["mean_abs"] = float(sum(weighted) / sum(result.sizes))
    return result
