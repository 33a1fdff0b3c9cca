"""Paired comparisons of runs over seeds: the only ground on which a report may say "beats".

Every report compares a model with its base (or an ablation with full PRECTR) by the difference
of a metric within each seed, where a seed fixes everything random of both runs (initialization,
batch order, the text tower, and the generated world where the report varies it). The 95%
interval is the paired t-interval over seeds:

    mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n),   d_s = metric(model, s) - metric(base, s)

A verdict is printed only when the interval excludes 0; otherwise "no difference shown". The
t-interval assumes the seed-to-seed differences are roughly normal; with 5 seeds it is wide, on
purpose: a difference it cannot separate from 0 is not claimed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Two-sided 95% quantiles of Student's t by degrees of freedom (beyond 30: the normal's).
_T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
NO_DIFFERENCE = "no difference shown"


def t_quantile_975(degrees: int) -> float:
    """t_{0.975, degrees}.

    >>> t_quantile_975(4)
    2.776
    """
    if degrees < 1:
        raise ValueError("a t-interval needs at least two paired values")
    return _T_975[degrees - 1] if degrees <= len(_T_975) else 1.96


@dataclass(frozen=True)
class PairedDifference:
    """The mean paired difference (model - base) and its 95% t-interval over ``n`` seeds."""

    mean: float
    low: float
    high: float
    n: int

    def verdict(self, higher_is_better: bool = True, better: str = "better") -> str:
        """``better`` / "worse" when the interval excludes 0, else "no difference shown"."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return NO_DIFFERENCE
        if self.low > 0:
            return better if higher_is_better else "worse"
        if self.high < 0:
            return "worse" if higher_is_better else better
        return NO_DIFFERENCE

    def describe(self, digits: int = 4) -> str:
        """``+0.0021 [+0.0004, +0.0038]``."""
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def paired_difference(values: Sequence[float], base: Sequence[float]) -> PairedDifference:
    """The paired t-interval of ``values - base`` (same seeds, same order).

    >>> d = paired_difference([0.71, 0.72, 0.73], [0.70, 0.70, 0.70])
    >>> round(d.mean, 4), round(d.low, 4), round(d.high, 4), d.verdict()
    (0.02, -0.0048, 0.0448, 'no difference shown')
    >>> paired_difference([0.71, 0.72, 0.73], [0.70, 0.71, 0.72]).verdict()
    'better'
    """
    if len(values) != len(base):
        raise ValueError(f"paired values differ in length: {len(values)} and {len(base)}")
    diffs = [v - b for v, b in zip(values, base, strict=True)]
    n = len(diffs)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0)
    mean = sum(diffs) / n
    if n == 1:
        return PairedDifference(mean, math.nan, math.nan, 1)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n)
