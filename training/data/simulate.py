"""The click simulator: simulated users, the shown lists, and who clicks what.

One click model serves the synthetic world and the real-label simulator, so both plant the same
structure (docs/DATA.md):

    P(click) = P(examine | position) * sigmoid(a)
    P(examine | position) = (1 + position) ** -examination_decay
    a = intercept + s[u, d(q)] * relevance_effect[rel]
        + interest_weight * log(C * interest[u, c(i)])
        + quality_weight * quality[i] - price_weight * |price[i] - price_pref[u]|

where s[u, d] is the user's relevance sensitivity for the query's department (PRECTR 4.5: users
differ, and one user differs by query type), and a recommendation request (no query) has no
relevance term. A conversion follows a click with P = sigmoid(conversion_intercept
+ quality_weight * quality + strong_relevance_bonus * [rel == 3] - price_weight * price gap).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.contract import RELEVANCE_LEVELS
from training.data.tables import Column, Table

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ClickModel:
    """The planted parameters of the click process (see the module docstring)."""

    intercept: float = -1.1
    relevance_effect: tuple[float, float, float, float] = (-2.4, -1.0, 0.3, 1.0)
    interest_weight: float = 0.45
    quality_weight: float = 0.5
    price_weight: float = 0.3
    examination_decay: float = 0.8
    conversion_intercept: float = -1.6
    strong_relevance_bonus: float = 0.6

    def examination(self, position: Column) -> FloatArray:
        return np.power(1.0 + position.astype(np.float64), -self.examination_decay)

    def attraction_logit(
        self,
        relevance: Column,
        sensitivity: Column,
        interest: Column,
        quality: Column,
        price_gap: Column,
    ) -> FloatArray:
        """The logit of P(click | examined); relevance -1 (no query) adds no relevance term."""
        effect = np.asarray(self.relevance_effect)[np.clip(relevance, 0, RELEVANCE_LEVELS - 1)]
        relevance_term = np.where(relevance >= 0, sensitivity * effect, 0.0)
        return (
            self.intercept
            + relevance_term
            + self.interest_weight * np.log(np.maximum(interest, 1e-4))
            + self.quality_weight * quality
            - self.price_weight * price_gap
        )

    def sample(
        self,
        rng: np.random.Generator,
        *,
        relevance: Column,
        sensitivity: Column,
        interest: Column,
        quality: Column,
        price_gap: Column,
        position: Column,
    ) -> tuple[FloatArray, Column, Column]:
        """Draw clicks and conversions; returns (p_click, click, conversion)."""
        logit = self.attraction_logit(relevance, sensitivity, interest, quality, price_gap)
        p_click = self.examination(position) / (1.0 + np.exp(-logit))
        click = rng.random(len(p_click)) < p_click
        conversion_logit = (
            self.conversion_intercept
            + self.quality_weight * quality
            + self.strong_relevance_bonus * (relevance == RELEVANCE_LEVELS - 1)
            - self.price_weight * price_gap
        )
        converts = rng.random(len(p_click)) < 1.0 / (1.0 + np.exp(-conversion_logit))
        return p_click, click.astype(np.int8), (click & converts).astype(np.int8)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ClickModel:
        """The inverse of `to_dict` (a world's meta stores the planted parameters)."""
        fields = {k: float(v) for k, v in values.items() if k != "relevance_effect"}
        a, b, c, d = (float(x) for x in values["relevance_effect"])
        return cls(relevance_effect=(a, b, c, d), **fields)


def simulate_users(
    rng: np.random.Generator, n_users: int, n_departments: int, n_categories: int
) -> Table:
    """Users with demographics, category interests, price taste and relevance sensitivities.

    Interests and sensitivities depend on the demographics (so user features carry signal) plus
    individual noise (so only the user's own history reveals the rest).
    Columns: user_key, age, gender, city_tier, activity, price_pref, interest (U, C) scaled so a
    uniform interest is 1, sensitivity (U, D).
    """
    age = rng.integers(0, 6, n_users)
    gender = rng.integers(1, 3, n_users)
    city_tier = rng.integers(0, 4, n_users)
    # Demographic taste: each (age, gender) cell prefers some categories.
    cell_taste = rng.normal(0.0, 1.0, size=(6, 3, n_categories))
    logits = cell_taste[age, gender] + rng.gumbel(size=(n_users, n_categories)) * 1.2
    interest = np.exp(logits)
    interest = interest / interest.sum(axis=1, keepdims=True) * n_categories
    # Relevance sensitivity: older users a little more exacting, strong individual spread, and a
    # per-department factor so one user weighs relevance differently by query type.
    base = rng.normal(-0.15 + 0.08 * age, 0.6)
    by_department = rng.normal(0.0, 0.6, size=(n_users, n_departments))
    sensitivity = np.exp(base[:, None] + by_department)
    return Table(
        {
            "user_key": np.array([f"u{i}" for i in range(n_users)]),
            "age": age.astype(np.int8),
            "gender": gender.astype(np.int8),
            "city_tier": city_tier.astype(np.int8),
            "activity": rng.lognormal(0.0, 1.0, n_users).astype(np.float32),
            "price_pref": np.clip(city_tier + rng.integers(-1, 2, n_users), 0, 4).astype(np.int8),
            "interest": interest.astype(np.float32),
            "sensitivity": sensitivity.astype(np.float32),
        }
    )


def show_lists(rng: np.random.Generator, prior: FloatArray, list_length: int) -> IntArray:
    """The production ranker's lists: Gumbel top-k over prior scores, shape (S, list_length).

    Rows of ``prior`` hold one request's candidate scores, -inf for padding. The result is the
    column index of each shown item, in display order (position 0 first).
    """
    noisy = prior + rng.gumbel(size=prior.shape)
    return np.argsort(-noisy, axis=1)[:, :list_length]


def session_times(
    rng: np.random.Generator, n_sessions: int, days: int
) -> tuple[IntArray, IntArray]:
    """Sorted session start times (seconds) over ``days`` with a daily traffic curve, and hours."""
    hour_weight = 1.0 + np.sin((np.arange(24) - 9) / 24 * 2 * np.pi) * 0.7
    hour = rng.choice(24, size=n_sessions, p=hour_weight / hour_weight.sum())
    day = rng.integers(0, days, n_sessions)
    time = day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, n_sessions)
    order = np.argsort(time, kind="stable")
    return time[order].astype(np.int64), hour[order].astype(np.int64)


def pick_rows(rng: np.random.Generator, weights: FloatArray) -> IntArray:
    """One column per row of a (S, K) non-negative weight matrix, drawn by inverse CDF."""
    cdf = np.cumsum(weights, axis=1)
    draw = rng.random(len(weights)) * cdf[:, -1]
    column = np.minimum((cdf < draw[:, None]).sum(axis=1), weights.shape[1] - 1)
    return np.asarray(column, dtype=np.int64)


def simulate_impressions(
    rng: np.random.Generator,
    model: ClickModel,
    *,
    session: IntArray,
    times: IntArray,
    hours: IntArray,
    user: Column,
    query: Column,
    item: Column,
    position: Column,
    relevance: Column,
    sensitivity: Column,
    interest: Column,
    quality: Column,
    price_gap: Column,
) -> dict[str, Column]:
    """Clicks and conversions of shown rows, as the impression columns every world writes.

    ``session`` gives each row's request; ``times`` and ``hours`` are per request; the rest are
    per row.
    """
    p_click, click, conversion = model.sample(
        rng,
        relevance=relevance,
        sensitivity=sensitivity.astype(np.float64),
        interest=interest,
        quality=quality,
        price_gap=price_gap,
        position=position,
    )
    return {
        "request_id": session.astype(np.int64),
        "time": times[session],
        "hour": hours[session].astype(np.int8),
        "user_id": user.astype(np.int32),
        "query_id": query.astype(np.int32),
        "item_id": item.astype(np.int32),
        "position": position.astype(np.int8),
        "relevance": relevance.astype(np.int8),
        "click": click,
        "conversion": conversion,
        "p_click": p_click.astype(np.float32),
    }
