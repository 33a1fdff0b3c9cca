"""The synthetic world: a small e-commerce search engine with planted, learnable structure.

The generative model is documented in docs/DATA.md. In short: items are written from their
category's concepts (with synonyms), queries name 1-2 concepts plus an optional attribute or brand,
relevance follows from which query slots the item carries, each query has a fixed candidate pool
(which bounds the pairs to encode), users search and browse by their interests, and clicks follow
`ClickModel` with a position bias and a per-user, per-department relevance sensitivity.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from service.contract import EMPTY_QUERY_ID, HISTORY_LENGTH, normalize_text
from training.data.simulate import (
    ClickModel,
    IntArray,
    pick_rows,
    session_times,
    show_lists,
    simulate_impressions,
    simulate_users,
)
from training.data.tables import Table, World, attach_histories, click_log, time_split
from training.data.vocabulary import ATTRIBUTES, CATEGORIES, DEPARTMENTS, department_brands

Size = Literal["tiny", "default", "large"]
WorldKind = Literal["synthetic", "longtail"]

#: Words a language model can read as quality (the long-tail world writes 0-2 of them into an
#: item's text), with their planted effect on the item's quality. None of them is an attribute a
#: query can ask for, so they move clicks, not relevance.
QUALITY_WORDS: tuple[tuple[str, float], ...] = (
    ("handcrafted", 0.9),
    ("durable", 0.7),
    ("award winning", 0.9),
    ("reinforced", 0.6),
    ("flimsy", -0.9),
    ("imitation", -0.8),
    ("poorly finished", -0.9),
    ("fragile", -0.6),
)


@dataclass(frozen=True)
class WorldConfig:
    """How big the world is. Distinct texts to encode: queries + items + queries * pool_size."""

    queries_per_category: int
    items_per_category: int
    pool_size: int
    n_users: int
    n_impressions: int
    list_length: int = 10
    days: int = 30
    search_share: float = 0.85
    brands_per_department: int = 12
    # The long-tail world (`of_kind("longtail", ...)`); the defaults keep the plain world, whose
    # random draws stay exactly as they were.
    item_exposure_zipf: float = 0.0  # an item's exposure weight: (its rank in its category) ** -s
    cold_item_share: float = 0.0  # items first shown in the test period
    cold_query_share: float = 0.0  # queries first searched in the test period
    worded_quality_sd: float = 0.0  # 0: quality is latent only; else the latent part's sd

    @classmethod
    def of_size(cls, size: Size) -> WorldConfig:
        return _SIZES[size]

    @classmethod
    def of_kind(cls, kind: WorldKind, size: Size) -> WorldConfig:
        """The plain synthetic world, or the long-tail one: a smaller, Zipf-exposed catalogue
        with cold items and queries and a part of quality written in words (docs/DATA.md)."""
        if kind == "synthetic":
            return _SIZES[size]
        return replace(
            _LONGTAIL_SIZES[size],
            item_exposure_zipf=1.2,
            cold_item_share=0.1,
            cold_query_share=0.1,
            worded_quality_sd=0.6,
        )


_SIZES: dict[str, WorldConfig] = {
    "tiny": WorldConfig(
        queries_per_category=6,
        items_per_category=30,
        pool_size=16,
        n_users=400,
        n_impressions=40_000,
    ),
    "default": WorldConfig(
        queries_per_category=80,
        items_per_category=400,
        pool_size=24,
        n_users=12_000,
        n_impressions=1_200_000,
    ),
    "large": WorldConfig(
        queries_per_category=250,
        items_per_category=2_000,
        pool_size=32,
        n_users=150_000,
        n_impressions=12_000_000,
    ),
}


_LONGTAIL_SIZES: dict[str, WorldConfig] = {
    "tiny": _SIZES["tiny"],
    # Few impressions per item (100k over 7,500 items, Zipf-exposed) so ids learn slowly; few
    # distinct texts so five worlds encode in minutes, and a report of five worlds fits in two
    # hours here.
    "default": WorldConfig(
        queries_per_category=40,
        items_per_category=250,
        pool_size=24,
        n_users=3_000,
        n_impressions=100_000,
    ),
    "large": WorldConfig(
        queries_per_category=80,
        items_per_category=1_000,
        pool_size=24,
        n_users=30_000,
        n_impressions=1_200_000,
    ),
}


@dataclass(frozen=True)
class _Product:
    category: int
    brand: int
    concepts: tuple[int, ...]
    attributes: tuple[int, ...]


@dataclass(frozen=True)
class _QueryIntent:
    category: int
    concepts: tuple[int, ...]
    attribute: int  # -1: none
    brand: int  # -1: none


def relevance_level(query: _QueryIntent, item: _Product, department: tuple[int, ...]) -> int:
    """The planted relevance: which of the query's slots the item carries, and where it sits.

    Same category: 3 when every slot matches, 2 when the main concept and at least half the slots
    match, else 1. Another category of the same department: 1 when any slot matches, else 0.
    Another department: 0.
    """
    slots = len(query.concepts) + (query.attribute >= 0) + (query.brand >= 0)
    matched = (
        sum(c in item.concepts for c in query.concepts)
        + (query.attribute in item.attributes)
        + (query.brand == item.brand)
    )
    if query.category == item.category:
        if matched == slots:
            return 3
        if query.concepts[0] in item.concepts and 2 * matched >= slots:
            return 2
        return 1
    if department[query.category] == department[item.category] and matched > 0:
        return 1
    return 0


def generate_world(size: Size = "tiny", seed: int = 0, kind: WorldKind = "synthetic") -> World:
    """Generate a whole world, deterministically from ``seed``."""
    return _Generator(WorldConfig.of_kind(kind, size), seed, size, kind).run()


class _Generator:
    def __init__(self, config: WorldConfig, seed: int, size: str, kind: str = "synthetic") -> None:
        self.config = config
        self.seed = seed
        self.size = size
        self.kind = kind
        self.rng = np.random.default_rng(seed)
        # In the long-tail world quality weighs twice as much, so what the text says of it counts.
        self.click_model = ClickModel(quality_weight=1.0 if kind == "longtail" else 0.5)
        self.department = tuple(DEPARTMENTS.index(c.department) for c in CATEGORIES)
        self.brands = [
            department_brands(d, config.brands_per_department) for d in range(len(DEPARTMENTS))
        ]

    def run(self) -> World:
        started = time.perf_counter()
        products, items = self._items()
        intents, queries = self._queries()
        items = self._long_tail(items, queries.n_rows)
        pairs, pools, pool_relevance = self._pools(intents, products)
        self._cold_items(pools)
        users = simulate_users(self.rng, self.config.n_users, len(DEPARTMENTS), len(CATEGORIES))
        impressions = self._impressions(items, queries, users, pools, pool_relevance)
        clicks = click_log(impressions)
        attach_histories(impressions, clicks, HISTORY_LENGTH)
        impressions["split"] = time_split(impressions["time"])
        meta: dict[str, Any] = {
            "source": "synthetic",
            "world": self.kind,
            "size": self.size,
            "seed": self.seed,
            "config": asdict(self.config),
            "click_model": self.click_model.to_dict(),
            "categories": [c.name for c in CATEGORIES],
            "brand_names": [name for brands in self.brands for name in brands],
            "category_department": list(self.department),
            "departments": list(DEPARTMENTS),
            "split": "time-ordered: first 80% of traffic train, next 10% valid, last 10% test",
            "generated_seconds": round(time.perf_counter() - started, 2),
        }
        if self.kind != "synthetic":
            meta["long_tail"] = {
                "cold_items": int(self.cold_items.sum()),
                "cold_queries": int(self.cold_queries.sum()),
                "cold_item_ids": [int(i) for i in np.flatnonzero(self.cold_items)],
                "cold_query_ids": [int(q) for q in np.flatnonzero(self.cold_queries)],
                "quality_words": dict(QUALITY_WORDS),
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

    # --- catalogue -----------------------------------------------------------------------------

    def _form(self, category: int, concept: int, avoid: str | None = None) -> str:
        forms = CATEGORIES[category].concepts[concept].forms
        choices = [f for f in forms if f != avoid] or list(forms)
        return str(choices[self.rng.integers(len(choices))])

    def _items(self) -> tuple[list[_Product], Table]:
        rng, cfg = self.rng, self.config
        products: list[_Product] = []
        titles: list[str] = []
        texts: list[str] = []
        for c, category in enumerate(CATEGORIES):
            n_concepts = len(category.concepts)
            brands = self.brands[self.department[c]]
            for _ in range(cfg.items_per_category):
                main = int(rng.integers(n_concepts))
                extra = int(rng.integers(n_concepts)) if rng.random() < 0.5 else main
                concepts = (main,) if extra == main else (main, extra)
                attributes = tuple(
                    int(a) for a in rng.choice(len(ATTRIBUTES), 1 + (rng.random() < 0.5), False)
                )
                brand = int(rng.integers(len(brands)))
                product = _Product(c, brand, concepts, attributes)
                main_form = self._form(c, main)
                title = f"{brands[brand]} {ATTRIBUTES[attributes[0]]} {main_form}"
                if len(concepts) > 1:
                    title += f" with {self._form(c, concepts[1])}"
                described = " and ".join(ATTRIBUTES[a] for a in attributes)
                text = (
                    f"A {described} {self._form(c, main, avoid=main_form)} from {brands[brand]}. "
                    f"Part of our {category.name} range."
                )
                products.append(product)
                titles.append(title)
                texts.append(text)
        n = len(products)
        return products, Table(
            {
                "item_key": np.array([f"i{i}" for i in range(n)]),
                "title": np.array(titles),
                "text": np.array(texts),
                "category": np.array([p.category for p in products], dtype=np.int16),
                "brand": np.array(
                    [
                        self.department[p.category] * cfg.brands_per_department + p.brand
                        for p in products
                    ],
                    dtype=np.int32,
                ),
                "price_bucket": rng.integers(0, 5, n).astype(np.int8),
                "quality": rng.normal(0.0, 1.0, n).astype(np.float32),
            }
        )

    def _queries(self) -> tuple[list[_QueryIntent], Table]:
        """Distinct query texts per category; row 0 is the empty (recommendation) query."""
        rng, cfg = self.rng, self.config
        intents = [_QueryIntent(-1, (), -1, -1)]
        texts = [""]
        seen = {""}
        for c, category in enumerate(CATEGORIES):
            brands = self.brands[self.department[c]]
            made = 0
            for _ in range(cfg.queries_per_category * 200):
                if made == cfg.queries_per_category:
                    break
                main = int(rng.integers(len(category.concepts)))
                concepts = [main]
                if rng.random() < 0.2:
                    concepts.append(int(rng.integers(len(category.concepts))))
                attribute = int(rng.integers(len(ATTRIBUTES))) if rng.random() < 0.45 else -1
                brand = int(rng.integers(len(brands))) if rng.random() < 0.15 else -1
                words = [self._form(c, k) for k in dict.fromkeys(concepts)]
                if attribute >= 0:
                    words.insert(0, ATTRIBUTES[attribute])
                if brand >= 0:
                    words.insert(0, brands[brand])
                text = normalize_text(" ".join(words))
                if text in seen or len(text.split()) > 4:
                    continue
                seen.add(text)
                intents.append(_QueryIntent(c, tuple(dict.fromkeys(concepts)), attribute, brand))
                texts.append(text)
                made += 1
            if made < cfg.queries_per_category:
                raise RuntimeError(f"category {category.name}: only {made} distinct queries")
        return intents, Table(
            {
                "text": np.array(texts),
                "category": np.array([q.category for q in intents], dtype=np.int16),
            }
        )

    def _long_tail(self, items: Table, n_queries: int) -> Table:
        """The long-tail world's draws (none for the plain world, whose draws stay as they were):
        exposure weights, cold items and queries, and the worded part of quality, written into
        the items' text and added to their quality."""
        cfg, n_items = self.config, items.n_rows
        self.exposure = np.ones(n_items)
        self.cold_items = np.zeros(n_items, dtype=bool)
        self.cold_queries = np.zeros(n_queries, dtype=bool)
        if self.kind == "synthetic":
            return items
        rng, per_category = self.rng, cfg.items_per_category
        zipf = np.arange(1, per_category + 1, dtype=np.float64) ** -cfg.item_exposure_zipf
        for c in range(len(CATEGORIES)):
            self.exposure[c * per_category : (c + 1) * per_category] = rng.permutation(zipf)
        self.cold_queries = rng.random(n_queries) < cfg.cold_query_share
        self.cold_queries[EMPTY_QUERY_ID] = False
        words, effects = zip(*QUALITY_WORDS, strict=True)
        worded = np.zeros(n_items)
        texts = list(items["text"])
        for i in range(n_items):
            chosen = rng.choice(len(words), int(rng.choice(3, p=[0.3, 0.5, 0.2])), replace=False)
            if len(chosen):
                worded[i] = sum(effects[k] for k in chosen)
                sentence = " and ".join(words[k] for k in chosen)
                texts[i] = f"{texts[i]} {sentence[0].upper()}{sentence[1:]}."
        latent = items["quality"].astype(np.float64) * cfg.worded_quality_sd
        return Table(
            {
                **items,
                "text": np.array(texts),
                "quality": (latent + worded).astype(np.float32),
                "worded_quality": worded.astype(np.float32),
            }
        )

    def _cold_items(self, pools: IntArray) -> None:
        """Mark ``cold_item_share`` of the items cold, in a random order, skipping an item where
        a pool holding it would be left with fewer than a list's length of items to show
        before the test period."""
        if self.kind == "synthetic":
            return
        cfg = self.config
        target = round(cfg.cold_item_share * len(self.cold_items))
        room = cfg.pool_size - cfg.list_length
        cold_in_pool = np.zeros(len(pools), dtype=np.int64)
        marked = 0
        for item in self.rng.permutation(len(self.cold_items)):
            if marked == target:
                break
            holding = np.flatnonzero((pools == item).any(axis=1))
            if np.all(cold_in_pool[holding] < room):
                self.cold_items[item] = True
                cold_in_pool[holding] += 1
                marked += 1

    def _choose(self, group: IntArray, take: int) -> list[int]:
        """``take`` distinct items of ``group``, by exposure weight in the long-tail world."""
        if self.kind == "synthetic":
            return [int(i) for i in self.rng.choice(group, take, replace=False)]
        if take == 0:
            return []
        weights = self.exposure[group.astype(np.int64)]
        return [
            int(i) for i in self.rng.choice(group, take, replace=False, p=weights / weights.sum())
        ]

    def _pools(
        self, intents: list[_QueryIntent], products: list[_Product]
    ) -> tuple[Table, IntArray, IntArray]:
        """Each query's fixed candidate pool: mostly on-topic, some near misses, some noise."""
        rng, cfg = self.rng, self.config
        per_category = cfg.items_per_category
        n_items = len(products)
        by_concept: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(products):
            for k in p.concepts:
                by_concept.setdefault((p.category, k), []).append(i)
        pools = np.zeros((len(intents), cfg.pool_size), dtype=np.int64)
        relevance = np.full((len(intents), cfg.pool_size), -1, dtype=np.int64)
        for q, intent in enumerate(intents[1:], start=1):
            on_topic = np.array(by_concept.get((intent.category, intent.concepts[0]), []))
            same_category = np.arange(per_category) + intent.category * per_category
            department = self.department[intent.category]
            siblings = [c for c, d in enumerate(self.department) if d == department]
            same_department = np.concatenate(
                [np.arange(per_category) + c * per_category for c in siblings]
            )
            chosen: list[int] = []
            for group, share in ((on_topic, 0.4), (same_category, 0.25), (same_department, 0.15)):
                fresh = np.setdiff1d(group, chosen) if len(group) else group
                take = min(len(fresh), round(share * cfg.pool_size))
                chosen += self._choose(fresh, take)
            while len(chosen) < cfg.pool_size:
                candidate = (
                    int(rng.integers(n_items))
                    if self.kind == "synthetic"
                    else self._choose(np.arange(n_items), 1)[0]
                )
                if candidate not in chosen:
                    chosen.append(candidate)
            pools[q] = chosen
            relevance[q] = [relevance_level(intent, products[i], self.department) for i in chosen]
        pairs = Table(
            {
                "query_id": np.repeat(np.arange(1, len(intents)), cfg.pool_size).astype(np.int32),
                "item_id": pools[1:].reshape(-1).astype(np.int32),
                "relevance": relevance[1:].reshape(-1).astype(np.int8),
            }
        )
        return pairs, pools, relevance

    # --- traffic -------------------------------------------------------------------------------

    def _impressions(
        self,
        items: Table,
        queries: Table,
        users: Table,
        pools: IntArray,
        pool_relevance: IntArray,
    ) -> dict[str, Any]:
        rng, cfg = self.rng, self.config
        n_sessions = cfg.n_impressions // cfg.list_length
        times, hours = session_times(rng, n_sessions, cfg.days)
        activity = users["activity"].astype(np.float64)
        user = rng.choice(len(activity), n_sessions, p=activity / activity.sum())
        interest = users["interest"].astype(np.float64)
        is_search = rng.random(n_sessions) < cfg.search_share
        # Searches follow interests with some exploration; browsing follows interests alone.
        taste = interest[user] + np.where(is_search, 0.25, 0.0)[:, None]
        category = pick_rows(rng, taste)
        popularity = 1.0 / np.arange(1, cfg.queries_per_category + 1) ** 0.8
        query_weights = np.broadcast_to(popularity, (n_sessions, len(popularity)))
        # Long-tail world: cold queries and items exist only from the test period on.
        before_test = time_split(np.repeat(times, cfg.list_length))[:: cfg.list_length] < 2
        if self.cold_queries.any():
            cold = self.cold_queries[1:].reshape(len(CATEGORIES), cfg.queries_per_category)
            query_weights = popularity * ~(cold[category] & before_test[:, None])
        rank_in_category = pick_rows(rng, query_weights)
        query = np.where(
            is_search, 1 + category * cfg.queries_per_category + rank_in_category, EMPTY_QUERY_ID
        )
        # Candidates: the query's pool for a search, random items of the category when browsing
        # (by exposure weight in the long-tail world).
        if self.kind == "synthetic":
            browse_rank = rng.integers(0, cfg.items_per_category, size=(n_sessions, cfg.pool_size))
        else:
            browse_rank = np.zeros((n_sessions, cfg.pool_size), dtype=np.int64)
            by_category = zip(
                self.exposure.reshape(len(CATEGORIES), -1),
                self.cold_items.reshape(len(CATEGORIES), -1),
                strict=True,
            )
            for c, (exposure, cold) in enumerate(by_category):
                for period, weights in ((before_test, exposure * ~cold), (~before_test, exposure)):
                    rows = (category == c) & period
                    browse_rank[rows] = rng.choice(
                        len(weights), (int(rows.sum()), cfg.pool_size), p=weights / weights.sum()
                    )
        browse = category[:, None] * cfg.items_per_category + browse_rank
        candidates = np.where(is_search[:, None], pools[query], browse)
        candidate_relevance = np.where(is_search[:, None], pool_relevance[query], -1)
        quality = items["quality"].astype(np.float64)
        prior = 0.9 * np.maximum(candidate_relevance, 0) + 0.5 * quality[candidates]
        prior[self.cold_items[candidates] & before_test[:, None]] = -np.inf
        shown = show_lists(rng, prior, cfg.list_length)

        rows = np.arange(n_sessions)[:, None]
        item = candidates[rows, shown].reshape(-1)
        relevance = candidate_relevance[rows, shown].reshape(-1)
        session = np.repeat(np.arange(n_sessions), cfg.list_length)
        position = np.tile(np.arange(cfg.list_length), n_sessions)
        user_of = user[session]
        query_of = query[session]
        item_category = items["category"].astype(np.int64)[item]
        department = np.asarray(self.department)
        query_category = queries["category"].astype(np.int64)[query_of]
        sensitivity = users["sensitivity"][user_of, department[np.maximum(query_category, 0)]]
        price_gap = np.abs(
            items["price_bucket"].astype(np.float64)[item] - users["price_pref"][user_of]
        )
        return simulate_impressions(
            rng,
            self.click_model,
            session=session,
            times=times,
            hours=hours,
            user=user_of,
            query=query_of,
            item=item,
            position=position,
            relevance=relevance,
            sensitivity=sensitivity,
            interest=interest[user_of, item_category],
            quality=quality[item],
            price_gap=price_gap,
        )
