"""The requests a bench sends: pools drawn from a snapshot, and what each one makes the
service read and run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from service.assemble import Assembler
from service.index.keys import KeySchema
from service.index.lexical import QueryMatcher
from service.index.snapshot import Snapshot

Body = dict[str, Any]
JSON_HEADERS = {"content-type": "application/json"}


def request_pool(snapshot: Snapshot, count: int, size: int, seed: int) -> list[Body]:
    """``size`` distinct requests of ``count`` candidates: a known query's labelled items first,
    then other catalogue items (their pairs unseen: the approximator's case), varied users."""
    rng = np.random.default_rng(seed + count)
    pair_query = np.asarray(snapshot.pair_query)
    pair_item = np.asarray(snapshot.pair_item)
    n_items, n_users = len(snapshot.item_key), len(snapshot.user_key)
    bodies = []
    for _ in range(size):
        query_row = int(pair_query[rng.integers(len(pair_query))])
        labelled = pair_item[pair_query == query_row]
        others = rng.choice(n_items, size=min(count + len(labelled), n_items), replace=False)
        rows = list(dict.fromkeys([*labelled.tolist(), *others.tolist()]))[:count]
        bodies.append(
            {
                "user_id": snapshot.user_key[int(rng.integers(n_users))],
                "query": snapshot.query_text[query_row],
                "candidates": [{"item_id": snapshot.item_key[int(r)]} for r in rows],
                "context": {"hour": int(rng.integers(24))},
            }
        )
    return bodies


def model_inputs(
    bodies: list[Body], fetch: Callable[[Body], Any], assembler: Assembler
) -> list[dict[str, npt.NDArray[Any]]]:
    """The arrays the service would feed the graph for each body (fetched and assembled once)."""
    return [
        assembler.assemble(
            b["user_id"], b["query"], [c["item_id"] for c in b["candidates"]], fetch(b), 12
        )
        for b in bodies
    ]


def fetch_keys(body: Body, keys: KeySchema, version: str, matcher: QueryMatcher) -> list[str]:
    """The keys the Redis store reads for a body (the same list, in one MGET)."""
    items = [c["item_id"] for c in body["candidates"]]
    wanted = [keys.live, keys.meta(version), keys.user(version, body["user_id"])]
    wanted += [keys.item(version, i) for i in items]
    match = matcher.match(body["query"])
    if match.row >= 0:  # the query's record holds its pairs
        wanted.append(keys.query(version, match.matched_text))
    return wanted


def open_loop_mix(snapshot: Snapshot, seed: int, model: str | None) -> list[Body]:
    """48 requests of 100-700 candidates (uniform), for ``model`` (None: the service's
    default): the open loop's mix."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(100, 701, size=48)
    bodies = [request_pool(snapshot, int(c), 1, seed + i)[0] for i, c in enumerate(counts)]
    if model is not None:
        for body in bodies:
            body["model"] = model
    return bodies
