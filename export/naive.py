"""The naive ranking path the benchmark compares the service with.

What a first version assembled from a pile of scripts does: the torch model in the request path
(in its served form, so both paths compute the same scores), one Redis GET per key (user, query
with its pairs, every item, one after the other), no candidate buckets, no warm-up. Feature
assembly is the service's own (`service.assemble`), so the comparison is about the fetch and the
runtime, not about a strawman's features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
import torch
from torch import nn

from service.assemble import Assembler
from service.index.keys import KeySchema
from service.index.lexical import QueryMatcher
from service.index.records import decode_query
from service.index.snapshot import VECTOR_DTYPE
from service.store import (
    QueryFeatures,
    RequestFeatures,
    candidate_features,
    place_pairs,
    user_features,
)


class NaiveRanker:
    """Scores one request the naive way (see the module docstring)."""

    def __init__(
        self,
        module: nn.Module,
        input_names: Sequence[str],
        assembler: Assembler,
        client: redis.Redis,
        keys: KeySchema,
        version: str,
        matcher: QueryMatcher,
        dim: int,
    ) -> None:
        self.module, self.input_names = module.eval(), tuple(input_names)
        self.assembler, self.client, self.keys = assembler, client, keys
        self.version, self.matcher, self.dim = version, matcher, dim

    def _get(self, key: str) -> Any:
        return self.client.get(key)

    def fetch(self, user_id: str, query: str, item_ids: Sequence[str]) -> RequestFeatures:
        v, dim = self.version, self.dim
        match = self.matcher.match(query)
        user = user_features(self._get(self.keys.user(v, user_id)), dim)
        q = QueryFeatures(match, -1, np.zeros(dim, dtype=VECTOR_DTYPE))
        raw_query = self._get(self.keys.query(v, match.matched_text)) if match.row >= 0 else None
        record = decode_query(raw_query, dim) if raw_query is not None else None
        if record is not None:
            q = QueryFeatures(match, record.category, record.vec)
        c = candidate_features([self._get(self.keys.item(v, item_id)) for item_id in item_ids], dim)
        if record is not None:
            place_pairs(c, record)
        return RequestFeatures(v, q, user, c, {})

    def rank(
        self, user_id: str, query: str, item_ids: Sequence[str], hour: int
    ) -> npt.NDArray[np.float32]:
        features = self.fetch(user_id, query, item_ids)
        inputs = self.assembler.assemble(user_id, query, item_ids, features, hour)
        with torch.no_grad():
            # torch.tensor copies: some vectors are read-only views of the records Redis returned
            outputs = self.module(**{name: torch.tensor(inputs[name]) for name in self.input_names})
        scores: npt.NDArray[np.float32] = outputs[0].numpy()
        return scores
