"""Which model answers a request: named by the request, else an A/B arm, else the default.

Arms split users by the MD5 of the user id, as PRECTR's online test split traffic: a user's
hash, read as a number in [0, 1), falls into one arm's share of the cumulative shares, so a user
always sees the same arm and the shares hold over many users.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass


def user_fraction(user_id: str) -> float:
    """The user's position in [0, 1): the first 8 bytes of MD5(user_id), big-endian.

    >>> 0.0 <= user_fraction("u1") < 1.0, user_fraction("u1") == user_fraction("u1")
    (True, True)
    """
    digest = hashlib.md5(user_id.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Route:
    model: str
    arm: str  # the arm's model name, "request" when the request named it, or "default"


class Router:
    """Arms {model name: share}; shares are normalized to sum to 1."""

    def __init__(self, arms: dict[str, float], default: str) -> None:
        total = sum(arms.values())
        self.arms = {name: share / total for name, share in arms.items() if share > 0}
        self.default = default
        self._names = list(self.arms)
        bounds, cumulative = [], 0.0
        for name in self._names:
            cumulative += self.arms[name]
            bounds.append(cumulative)
        self._bounds = bounds

    def route(self, user_id: str, requested: str | None) -> Route:
        if requested is not None:
            return Route(requested, "request")
        if not self._names:
            return Route(self.default, "default")
        at = bisect.bisect_right(self._bounds, user_fraction(user_id))
        name = self._names[min(at, len(self._names) - 1)]
        return Route(name, name)
