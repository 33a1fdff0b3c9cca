"""The naive ranking path the benchmark compares the service with.

What a first version assembled from a pile of scripts does: the torch model in the request path
(in its served form, so both paths compute the same scores), one Redis GET per key (user, query,
every item, every pair, one after the other), no candidate buckets, no warm-up. Feature assembly
is the service's own (`service.assemble`), so the comparison is about the fetch and the runtime,
not about a strawman's features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
import torch
from torch import nn

from service.assemble import Assembler
from service.contract import ItemTerms
from service.index.keys import KeySchema
from service.index.lexical import QueryMatcher
from service.index.records import decode_items, decode_pairs, decode_query
from service.store import CandidateFeatures, QueryFeatures, RequestFeatures, user_features


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
        q = QueryFeatures(match, -1, np.zeros(dim, dtype=np.float32))
        if match.row >= 0:
            raw_query = self._get(self.keys.query(v, match.matched_text))
            if raw_query is not None:
                record = decode_query(raw_query, dim)
                q = QueryFeatures(match, record.category, record.vec.astype(np.float32))
        c = CandidateFeatures.unknown(len(item_ids), dim)
        empty = np.zeros(0, dtype=np.uint64)
        title_terms, text_terms = [empty] * len(item_ids), [empty] * len(item_ids)
        titles, texts = [""] * len(item_ids), [""] * len(item_ids)
        for i, item_id in enumerate(item_ids):
            raw_item = self._get(self.keys.item(v, item_id))
            if raw_item is not None:
                item = decode_items([raw_item], dim)
                c.item_known[i] = True
                c.id_hash[i], c.brand_hash[i] = item.id_hash[0], item.brand_hash[0]
                c.category[i], c.brand[i] = item.category[0], item.brand[0]
                c.price_bucket[i], c.item_vec[i] = item.price_bucket[0], item.vec[0]
                titles[i], texts[i] = item.titles[0], item.texts[0]
                title_terms[i], text_terms[i] = item.title_terms, item.text_terms
            if match.row >= 0:
                raw_pair = self._get(self.keys.pair(v, match.matched_text, item_id))
                if raw_pair is not None:
                    c.pair_known[i] = True
                    c.pair_vec[i] = decode_pairs([raw_pair], dim)[0]
        terms = ItemTerms.from_lists(title_terms, text_terms)
        c = replace(c, titles=titles, texts=texts, terms=terms)
        return RequestFeatures(v, q, user, c, {})

    def rank(
        self, user_id: str, query: str, item_ids: Sequence[str], hour: int
    ) -> npt.NDArray[np.float32]:
        features = self.fetch(user_id, query, item_ids)
        inputs = self.assembler.assemble(user_id, query, item_ids, features, hour)
        with torch.no_grad():
            outputs = self.module(
                **{name: torch.from_numpy(inputs[name]) for name in self.input_names}
            )
        scores: npt.NDArray[np.float32] = outputs[0].numpy()
        return scores
