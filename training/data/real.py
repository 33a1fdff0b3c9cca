"""Real data: graded-relevance CSVs with simulated clicks, and Amazon user histories.

- `world_from_relevance` puts simulated users with planted sensitivities on top of real labels
  read by `training.data.graded_csv` (the click model of `training.data.simulate`) and writes
  the same tables as the synthetic world, split by query. Every metric on it is on *simulated
  clicks*.
- `load_amazon_scientific` turns the Amazon "Industrial & Scientific" histories into the same
  tables: each interaction is a click on a list with sampled unclicked items, its query derived
  from the item's category path (the personalized-product-search protocol), leave-one-out split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.contract import HISTORY_LENGTH, normalize_text
from training.data.graded_csv import LabelledCatalogue
from training.data.simulate import (
    ClickModel,
    session_times,
    show_lists,
    simulate_impressions,
    simulate_users,
)
from training.data.tables import Table, World, attach_histories, click_log


def _index(values: Sequence[str]) -> tuple[list[str], np.ndarray[Any, Any]]:
    """Distinct values in first-seen order and each value's position among them."""
    position: dict[str, int] = {}
    codes = np.array([position.setdefault(v, len(position)) for v in values], dtype=np.int64)
    return list(position), codes


def _split_by_group(rng: np.random.Generator, n_groups: int) -> np.ndarray[Any, Any]:
    """0/1/2 per group (train 80%, valid 10%, test 10%), groups shuffled."""
    order = rng.permutation(n_groups)
    split = np.zeros(n_groups, dtype=np.int8)
    split[order[int(0.8 * n_groups) : int(0.9 * n_groups)]] = 1
    split[order[int(0.9 * n_groups) :]] = 2
    return split


def world_from_relevance(
    labels: LabelledCatalogue,
    *,
    seed: int = 0,
    n_users: int = 2_000,
    n_impressions: int = 300_000,
    list_length: int = 10,
    days: int = 30,
    source: str = "csv",
) -> World:
    """Simulated users and clicks on top of real (query, item, level) labels, split by query.
    The catalogue's item keys, categories and brands are kept as they were read."""
    rng = np.random.default_rng(seed)
    model = ClickModel()
    graded = labels.pairs
    query_texts, query_of_row = _index([normalize_text(str(q)) for q in graded["query"]])
    query_of_row = query_of_row + 1  # row 0 is the empty query
    pairs = Table(
        {
            "query_id": query_of_row.astype(np.int32),
            "item_id": graded["item"].astype(np.int32),
            "relevance": graded["level"].astype(np.int8),
        }
    )
    n_items = labels.items.n_rows
    items = Table(
        {
            **{name: labels.items[name] for name in ("item_key", "title", "text")},
            "category": labels.items["category"].astype(np.int16),
            "brand": labels.items["brand"].astype(np.int32),
            "price_bucket": rng.integers(0, 5, n_items).astype(np.int8),
            "quality": rng.normal(0.0, 1.0, n_items).astype(np.float32),
        }
    )
    n_queries = len(query_texts) + 1
    queries = Table(
        {"text": np.array(["", *query_texts]), "category": np.full(n_queries, -1, np.int16)}
    )
    users = simulate_users(rng, n_users, n_departments=1, n_categories=1)

    # Each query's labelled products form its candidate pool (padded with -1).
    pool_size = int(np.bincount(pairs["query_id"]).max())
    pools = np.full((n_queries, pool_size), -1, dtype=np.int64)
    pool_level = np.full((n_queries, pool_size), -1, dtype=np.int64)
    filled = np.zeros(n_queries, dtype=np.int64)
    for q, i, lvl in zip(pairs["query_id"], pairs["item_id"], pairs["relevance"], strict=True):
        pools[q, filled[q]], pool_level[q, filled[q]] = i, lvl
        filled[q] += 1

    n_sessions = n_impressions // list_length
    times, hours = session_times(rng, n_sessions, days)
    activity = users["activity"].astype(np.float64)
    user = rng.choice(n_users, n_sessions, p=activity / activity.sum())
    query = rng.integers(1, n_queries, n_sessions)
    quality = items["quality"].astype(np.float64)
    prior = np.where(
        pools[query] >= 0, 0.9 * pool_level[query] + 0.5 * quality[pools[query]], -np.inf
    )
    shown = show_lists(rng, prior, list_length)
    shown_length = shown.shape[1]  # below list_length when every pool is shorter
    rows = np.arange(n_sessions)[:, None]
    item = pools[query][rows, shown].reshape(-1)
    keep = item >= 0  # short pools show fewer items
    session = np.repeat(np.arange(n_sessions), shown_length)[keep]
    position = np.tile(np.arange(shown_length), n_sessions)[keep]
    item = item[keep]
    relevance = pool_level[query][rows, shown].reshape(-1)[keep]
    user_of = user[session]
    price_gap = np.abs(
        items["price_bucket"][item].astype(np.float64) - users["price_pref"][user_of]
    )
    impressions = simulate_impressions(
        rng,
        model,
        session=session,
        times=times,
        hours=hours,
        user=user_of,
        query=query[session],
        item=item,
        position=position,
        relevance=relevance,
        sensitivity=users["sensitivity"][user_of, 0],
        interest=np.ones(len(item)),
        quality=quality[item],
        price_gap=price_gap,
    )
    impressions["split"] = _split_by_group(rng, n_queries)[query[session]]
    clicks = click_log(impressions)
    attach_histories(impressions, clicks, HISTORY_LENGTH)
    meta = {
        "source": source,
        "seed": seed,
        "clicks": "simulated (ClickModel) on real relevance labels",
        "click_model": model.to_dict(),
        "split": "by query: 80% of queries train, 10% valid, 10% test",
        "config": {
            "n_users": n_users,
            "n_impressions": n_impressions,
            "list_length": list_length,
            "days": days,
        },
    }
    return World(
        items=items,
        queries=queries,
        users=users,
        pairs=pairs,
        impressions=Table(impressions),
        clicks=Table(clicks),
        meta=meta,
    )


AMAZON_ROOT_CATEGORY = "Industrial & Scientific"


def _parse_amazon_text(line: str) -> tuple[str, str, str]:
    """'title. category path. brand. ' -> (title, category path without the root, brand)."""
    parts = line.strip().rstrip(".").rsplit(". ", 2)
    title, path, brand = parts + [""] * (3 - len(parts))
    return title.strip(), path.removeprefix(AMAZON_ROOT_CATEGORY).strip(), brand.strip()


def derived_query(category_path: str, title: str, terms: int = 3) -> str:
    """The query of an interaction: the last terms of the item's category path (its leaf).

    Items without a category path fall back to the first terms of their title.

    >>> derived_query("Tapes, Adhesives & Sealants Adhesive Tapes Duct Tape", "x")
    'tapes duct tape'
    """
    words = normalize_text(category_path).split() or normalize_text(title).split()
    return " ".join(words[-terms:] if category_path else words[:terms])


def _path_relevance(query_terms: frozenset[str], item_path: str) -> int:
    """Level of an item of another category for a derived query: overlap with its path."""
    path_terms = frozenset(normalize_text(item_path).split())
    overlap = len(query_terms & path_terms) / max(len(query_terms), 1)
    return 2 if overlap >= 0.5 else 1 if overlap > 0 else 0


def load_amazon_scientific(
    folder: Path, *, seed: int = 0, negatives: int = 9, same_category_negatives: int = 5
) -> World:
    """Real histories as clicked impressions with sampled unclicked ones (see module docstring).

    Each interaction becomes one request: its query derived from the clicked item's category
    path, the clicked item plus ``negatives`` sampled items (some from the same category path)
    at shuffled positions. Interactions of a user are one day apart, in order; the user's last
    interaction is the test split, the one before it validation, the rest training (the
    leave-one-out protocol of the source files).
    """
    rng = np.random.default_rng(seed)
    item_index = dict(_read_pairs(folder / "Scientific.item2index"))
    user_keys = [
        k for k, _ in sorted(_read_pairs(folder / "Scientific.user2index"), key=lambda kv: kv[1])
    ]
    n_items = len(item_index)
    titles, paths, brands = [""] * n_items, [""] * n_items, [""] * n_items
    with (folder / "Scientific.text").open(encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            key, _, text = line.rstrip("\n").partition("\t")
            if key in item_index:
                titles[item_index[key]], paths[item_index[key]], brands[item_index[key]] = (
                    _parse_amazon_text(text)
                )
    path_names, category = _index(paths)
    brand_names, brand = _index(brands)
    item_queries = [derived_query(p, t) for p, t in zip(paths, titles, strict=True)]
    query_texts, query_of_item = _index(item_queries)
    query_of_item = query_of_item + 1
    query_category = np.full(len(query_texts) + 1, -1, dtype=np.int16)
    query_category[query_of_item] = category  # a derived query names its item's category

    sequences: list[list[int]] = [[] for _ in user_keys]
    with (folder / "Scientific.test.inter").open(encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            user_field, history, last = line.rstrip("\n").split("\t")
            sequences[int(user_field)] = [int(i) for i in history.split()] + [int(last)]

    by_category: dict[int, np.ndarray[Any, Any]] = {
        c: np.flatnonzero(category == c) for c in range(len(path_names))
    }
    query_terms = [frozenset(q.split()) for q in ["", *query_texts]]
    columns: dict[str, list[int]] = {
        k: []
        for k in (
            "request_id",
            "time",
            "user_id",
            "query_id",
            "item_id",
            "position",
            "relevance",
            "click",
            "split",
        )
    }
    pair_level: dict[tuple[int, int], int] = {}
    request = 0
    for user, sequence in enumerate(sequences):
        for step, clicked in enumerate(sequence):
            q = int(query_of_item[clicked])
            same = by_category[int(category[clicked])]
            same = same[same != clicked]
            shown = [clicked]
            shown += [
                int(i)
                for i in rng.choice(same, min(len(same), same_category_negatives), replace=False)
            ]
            while len(shown) < negatives + 1:
                other = int(rng.integers(n_items))
                if other not in shown:
                    shown.append(other)
            split = 2 if step == len(sequence) - 1 else 1 if step == len(sequence) - 2 else 0
            for position, slot in enumerate(rng.permutation(len(shown))):
                item = shown[slot]
                level = (
                    3
                    if category[item] == category[clicked]
                    else _path_relevance(query_terms[q], paths[item])
                )
                pair_level.setdefault((q, item), level)
                row = {
                    "request_id": request,
                    "time": (step + 1) * 86_400 + user,
                    "user_id": user,
                    "query_id": q,
                    "item_id": item,
                    "position": position,
                    "relevance": level,
                    "click": int(item == clicked),
                    "split": split,
                }
                for name, value in row.items():
                    columns[name].append(value)
            request += 1
    dtypes = {
        "request_id": np.int64,
        "time": np.int64,
        "user_id": np.int32,
        "query_id": np.int32,
        "item_id": np.int32,
        "position": np.int8,
        "relevance": np.int8,
        "click": np.int8,
        "split": np.int8,
    }
    impressions: dict[str, Any] = {k: np.array(v, dtype=dtypes[k]) for k, v in columns.items()}
    n_rows = len(impressions["click"])
    impressions["hour"] = ((impressions["time"] // 3_600) % 24).astype(np.int8)
    impressions["conversion"] = np.zeros(n_rows, dtype=np.int8)
    impressions["p_click"] = np.full(n_rows, np.nan, dtype=np.float32)
    clicks = click_log(impressions)
    attach_histories(impressions, clicks, HISTORY_LENGTH)
    n_users = len(user_keys)
    unknown = np.full(n_users, -1, dtype=np.int8)
    keys = list(pair_level)
    return World(
        items=Table(
            {
                "item_key": np.array(sorted(item_index, key=item_index.__getitem__)),
                "title": np.array(titles),
                "text": np.array(
                    [f"{p}. {b}".strip(". ") for p, b in zip(paths, brands, strict=True)]
                ),
                "category": category.astype(np.int16),
                "brand": np.where(np.array(brands) == "", -1, brand).astype(np.int32),
                "price_bucket": np.full(n_items, -1, dtype=np.int8),
                "quality": np.full(n_items, np.nan, dtype=np.float32),
            }
        ),
        queries=Table({"text": np.array(["", *query_texts]), "category": query_category}),
        users=Table(
            {
                "user_key": np.array(user_keys),
                "age": unknown,
                "gender": unknown,
                "city_tier": unknown,
            }
        ),
        pairs=Table(
            {
                "query_id": np.array([q for q, _ in keys], dtype=np.int32),
                "item_id": np.array([i for _, i in keys], dtype=np.int32),
                "relevance": np.array([pair_level[k] for k in keys], dtype=np.int8),
            }
        ),
        impressions=Table(impressions),
        clicks=Table(clicks),
        meta={
            "source": "amazon_scientific",
            "seed": seed,
            "clicks": "real interactions; unclicked items sampled",
            "queries": "derived from the clicked item's category path (last 3 terms)",
            "relevance": "3 same category path, 2 half the query terms in the path, 1 some, 0 none",
            "split": "leave-one-out per user: last interaction test, the one before valid",
            "categories": path_names,
            "brands": len(brand_names),
            "brand_names": brand_names,
        },
    )


def _read_pairs(path: Path) -> list[tuple[str, int]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            key, value = line.rstrip("\n").split("\t")
            rows.append((key, int(value)))
    return rows
