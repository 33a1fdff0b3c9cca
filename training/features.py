"""Offline feature assembly: a world's impressions as the model inputs the contract defines.

`ImpressionFeatures` precomputes per-entity buckets and per-pair relevance features once, then
gathers any batch of impressions into the named input groups every model takes. Inputs that
depend only on the request (the query and the user's history) come once per request, R of them,
and ``request_index`` maps each of the B candidate rows to its request: the models compute
request-level work R times, not B times, in training exactly as in serving (where R = 1).

    categorical        (B, F) int64   the contract's categorical fields, in contract order
    dense              (B, Dd) float  the contract's dense fields, in contract order
    item_vec           (B, D)         reduced text vectors
    pair_vec           (B, D)         zeros when the impression has no query
    request_index      (B,) int64     the row's request among the R
    query_vec          (R, D)         zeros for the empty query
    history_query_vec  (R, L, D)      the user's last L search clicks before the request
    history_pair_vec   (R, L, D)
    history_mask       (R, L) bool    True on real history entries

plus labels: click, relevance (-1 without a query), conversion, and the request/user/query ids
the list losses and grouped metrics need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from service.contract import (
    EMPTY_QUERY_ID,
    HISTORY_LENGTH,
    MISSING_BUCKET,
    FeatureSpec,
    relevance_features,
    tokenize,
)
from training.data.tables import World

Array = npt.NDArray[Any]
#: The inputs that come once per request (leading dimension R), gathered by ``request_index``.
REQUEST_INPUTS: tuple[str, ...] = (
    "query_vec",
    "history_query_vec",
    "history_pair_vec",
    "history_mask",
)
Batch = dict[str, Tensor]


@dataclass(frozen=True)
class ReducedVectors:
    """The text tower's output for a world's queries, items and pairs (rows align with tables)."""

    queries: Array
    items: Array
    pairs: Array

    @property
    def dim(self) -> int:
        return int(self.queries.shape[1])


def find_pairs(world: World, query_id: Array, item_id: Array) -> Array:
    """The pairs-table row of each (query, item), -1 where the pair has no row."""
    n_items = world.items.n_rows
    keys = world.pairs["query_id"].astype(np.int64) * n_items + world.pairs["item_id"]
    wanted = query_id.astype(np.int64) * n_items + item_id
    if len(keys) == 0:
        return np.full(len(wanted), -1, dtype=np.int64)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    at = np.clip(np.searchsorted(sorted_keys, wanted), 0, len(keys) - 1)
    return np.where(sorted_keys[at] == wanted, order[at], -1)


def pair_relevance_features(world: World) -> npt.NDArray[np.float32]:
    """The contract's derived relevance features of every labelled pair, shape (P, 5)."""
    pairs = world.pairs
    out = np.zeros((pairs.n_rows, 5), dtype=np.float32)
    titles, texts = world.items["title"], world.items["text"]
    categories = world.items["category"].astype(np.int64)
    query_text, query_category = world.queries["text"], world.queries["category"]
    order = np.argsort(pairs["query_id"], kind="stable")
    bounds = np.flatnonzero(np.diff(pairs["query_id"][order])) + 1
    for rows in np.split(order, bounds):
        if len(rows) == 0:
            continue
        q = int(pairs["query_id"][rows[0]])
        items = pairs["item_id"][rows]
        out[rows] = relevance_features(
            str(query_text[q]),
            int(query_category[q]),
            [str(t) for t in titles[items]],
            [str(t) for t in texts[items]],
            categories[items],
        )
    return out


class ImpressionFeatures:
    """Model-ready inputs for any rows of a world's impressions (see the module docstring)."""

    def __init__(self, world: World, vectors: ReducedVectors, spec: FeatureSpec) -> None:
        self.spec = spec
        self.world = world
        imp = world.impressions
        users, items, queries = world.users, world.items, world.queries
        self.n_rows = imp.n_rows
        self.categorical_names = tuple(f.name for f in spec.select(kind="categorical"))
        self.dense_names = tuple(f.name for f in spec.select(kind="dense"))

        user, item, query = imp["user_id"], imp["item_id"], imp["query_id"]
        is_search = (query != EMPTY_QUERY_ID).astype(np.int64)
        columns: dict[str, Array] = {
            "user_id": spec["user_id"].encode(users["user_key"].tolist())[user],
            "user_age": spec["user_age"].encode(users["age"].tolist())[user],
            "user_gender": spec["user_gender"].encode(users["gender"].tolist())[user],
            "user_city_tier": spec["user_city_tier"].encode(users["city_tier"].tolist())[user],
            "query_id": spec["query_id"].encode(queries["text"].tolist())[query],
            "query_category": spec["query_category"].encode(queries["category"].tolist())[query],
            "item_id": spec["item_id"].encode(items["item_key"].tolist())[item],
            "item_category": spec["item_category"].encode(items["category"].tolist())[item],
            "item_brand": spec["item_brand"].encode(
                [None if b < 0 else int(b) for b in items["brand"]]
            )[item],
            "item_price_bucket": spec["item_price_bucket"].encode(items["price_bucket"].tolist())[
                item
            ],
            "is_search": spec["is_search"].encode(is_search.tolist()),
            "hour": spec["hour"].encode(imp["hour"].tolist()),
        }
        self.categorical = np.stack([columns[n] for n in self.categorical_names], axis=1).astype(
            np.int32
        )

        self.pair_row = find_pairs(world, query, item)
        self.pair_dense = pair_relevance_features(world)  # (P, 5), also RSL pretraining's input
        pair_dense = self.pair_dense
        query_terms = np.array([len(tokenize(str(t))) for t in queries["text"]], np.float32)
        dense: dict[str, Array] = {
            "history_length": imp["hist_len"].astype(np.float32) / HISTORY_LENGTH,
            "query_length": query_terms[query] / 4.0,
        }
        has_pair = self.pair_row >= 0
        for k, name in enumerate(spec.relevance_features):
            dense[name] = np.where(has_pair, pair_dense[np.maximum(self.pair_row, 0), k], 0.0)
        self.dense = np.stack([dense[n] for n in self.dense_names], axis=1).astype(np.float32)

        self.vectors = vectors
        self.query_id = query.astype(np.int64)
        self.item_id = item.astype(np.int64)
        self.hist_end = imp["hist_end"].astype(np.int64)
        self.hist_len = imp["hist_len"].astype(np.int64)
        clicks = world.clicks
        self.click_query = clicks["query_id"].astype(np.int64)
        self.click_pair_row = find_pairs(world, clicks["query_id"], clicks["item_id"])
        self.labels: dict[str, Array] = {
            "click": imp["click"].astype(np.float32),
            "relevance": imp["relevance"].astype(np.int64),
            "conversion": imp["conversion"].astype(np.float32),
            "request": imp["request_id"].astype(np.int64),
            "user": imp["user_id"].astype(np.int64),
            "query": query.astype(np.int64),
            # training-only: the position tower's input, never a model's (see models/position.py)
            "position": imp["position"].astype(np.int64),
        }

    def _pair_vectors(self, rows: Array) -> Array:
        vec = self.vectors.pairs[np.maximum(rows, 0)].astype(np.float32)
        vec[rows < 0] = 0.0
        return vec

    def batch(self, rows: Array) -> Batch:
        """Inputs and labels of the given impression rows, as tensors."""
        v = self.vectors
        _, first, request_index = np.unique(
            self.labels["request"][rows], return_index=True, return_inverse=True
        )
        heads = rows[first]  # one row per request: its query and history stand for all
        steps = np.arange(HISTORY_LENGTH)
        length = self.hist_len[heads]
        mask = steps[None, :] < length[:, None]  # (R, L)
        index = np.where(mask, self.hist_end[heads, None] - length[:, None] + steps[None, :], 0)
        history_query = v.queries[self.click_query[index]].astype(np.float32)  # (B, L, D)
        history_pair = self._pair_vectors(self.click_pair_row[index].reshape(-1)).reshape(
            history_query.shape
        )
        history_query[~mask] = 0.0
        history_pair[~mask] = 0.0
        out: Batch = {
            "categorical": torch.from_numpy(self.categorical[rows].astype(np.int64)),
            "dense": torch.from_numpy(self.dense[rows]),
            "request_index": torch.from_numpy(request_index.astype(np.int64)),
            "query_vec": torch.from_numpy(v.queries[self.query_id[heads]].astype(np.float32)),
            "item_vec": torch.from_numpy(v.items[self.item_id[rows]].astype(np.float32)),
            "pair_vec": torch.from_numpy(self._pair_vectors(self.pair_row[rows])),
            "history_query_vec": torch.from_numpy(history_query),
            "history_pair_vec": torch.from_numpy(history_pair),
            "history_mask": torch.from_numpy(mask),
        }
        for name, values in self.labels.items():
            out[name] = torch.from_numpy(values[rows])
        return out

    def rows_of_split(self, split: int) -> Array:
        return np.flatnonzero(self.world.impressions["split"] == split)

    def hide_items(self, batch: Batch, rng: np.random.Generator, share: float) -> int:
        """Show ``share`` of the batch's rows to the model as the service shows an item its
        index lacks, in place; returns how many.

        The service gives such an item the missing id bucket, no item vector and no pair
        vector (the index holds neither). Half of the hidden rows keep what a request may
        supply for an unknown item (category, brand, price bucket, and the lexical features
        of its title and text); the other half lose those too, as an unknown item sent with
        no features. Trained this way, the missing bucket means "unknown", a calibrated
        guess, instead of an embedding no row ever updated (an unknown item without features
        outranked relevant known ones)."""
        n = batch["categorical"].shape[0]
        hidden = rng.random(n) < share
        bare = hidden & (rng.random(n) < 0.5)
        columns = {name: k for k, name in enumerate(self.categorical_names)}
        rows, bare_rows = (
            torch.from_numpy(np.flatnonzero(hidden)),
            torch.from_numpy(np.flatnonzero(bare)),
        )
        batch["categorical"][rows, columns["item_id"]] = MISSING_BUCKET
        for name in ("item_brand", "item_category", "item_price_bucket"):
            batch["categorical"][bare_rows, columns[name]] = MISSING_BUCKET
        relevance = [self.dense_names.index(name) for name in self.spec.relevance_features]
        batch["dense"][bare_rows[:, None], torch.tensor(relevance)[None, :]] = 0.0
        batch["item_vec"][rows] = 0.0
        batch["pair_vec"][rows] = 0.0
        return int(hidden.sum())
