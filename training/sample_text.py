"""ELEC's view of a sample as text (ELEC 2.2.1) and its language-model vectors.

A sample is written as ``"<field> is <value>."`` sentences plus the item's own text, in four
parts: the user, the query, the item and the context. With ``full_text`` the parts also carry
every tabular field ELEC's template names that a world has: the item's category and brand and
the query's category (by name where the world records names).

The default world has 1.2M impressions but only a few thousand distinct parts, so each distinct part
is encoded once (through the encoding cache) and a sample's vector is **composed from its parts**:
the mean of the part vectors weighted by their word counts. That is what mean pooling over the
concatenated text gives when the parts do not attend to each other; the online path (`sample_texts`
+ the language model) encodes the whole text instead, which is what ELEC's gain network would have
to do per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.contract import EMPTY_QUERY_ID, tokenize
from training.data.tables import World
from training.encode import EncodingCache, TextEncoder, encode_texts

Array = npt.NDArray[Any]
N_HOURS = 24


def _value(v: int) -> str:
    return "unknown" if v < 0 else str(v)


def user_part(age: int, gender: int, city_tier: int) -> str:
    """>>> user_part(3, 1, -1)
    'User age group is 3. User gender is 1. User city tier is unknown.'
    """
    return (
        f"User age group is {_value(age)}. User gender is {_value(gender)}. "
        f"User city tier is {_value(city_tier)}."
    )


def query_part(query: str, category: str | None = None) -> str:
    """>>> query_part("red sofa", "sofas")
    'Query is red sofa. Query category is sofas.'
    """
    if not query:
        return "No query: a recommendation request."
    return f"Query is {query}." + (f" Query category is {category}." if category else "")


def item_part(
    title: str,
    text: str,
    price_bucket: int,
    category: str | None = None,
    brand: str | None = None,
) -> str:
    """>>> item_part("Veltor couch", "A sofa.", 2, "sofas", "Veltor")
    'Item is Veltor couch. A sofa. Price level is 2. Category is sofas. Brand is Veltor.'
    """
    named = (("Category", category), ("Brand", brand))
    fields = "".join(f" {name} is {value}." for name, value in named if value)
    return f"Item is {title}. {text} Price level is {_value(price_bucket)}.{fields}".replace(
        "  ", " "
    )


def context_part(hour: int) -> str:
    # No display position: the served ranking cannot know it, and a teacher whose vector carried
    # it would distil position effects into a student that never sees them.
    return f"Hour is {hour}."


@dataclass(frozen=True)
class SampleVectors:
    """Part vectors and word counts; `compose` gives the (B, dim) vectors of impressions."""

    users: Array  # (U, dim) one per user
    queries: Array  # (Q, dim)
    items: Array  # (I, dim)
    contexts: Array  # (24, dim), row hour
    user_words: Array
    query_words: Array
    item_words: Array
    context_words: Array
    world: World

    def compose(self, rows: Array) -> npt.NDArray[np.float32]:
        imp = self.world.impressions
        user, query, item = imp["user_id"][rows], imp["query_id"][rows], imp["item_id"][rows]
        context = imp["hour"][rows].astype(np.int64)
        parts = (
            (self.users[user], self.user_words[user]),
            (self.queries[query], self.query_words[query]),
            (self.items[item], self.item_words[item]),
            (self.contexts[context], self.context_words[context]),
        )
        total = sum(w for _, w in parts)
        mixed = sum(v.astype(np.float32) * (w / total)[:, None] for v, w in parts)
        return np.asarray(mixed, dtype=np.float32)


@dataclass(frozen=True)
class _FieldNames:
    """The names the full template writes: per item its category and brand, per query its
    category (None where the world has no such field, or ``full_text`` is off)."""

    item_category: list[str | None]
    item_brand: list[str | None]
    query_category: list[str | None]

    @classmethod
    def of(cls, world: World, full_text: bool) -> _FieldNames:
        items, queries = world.items, world.queries
        if not full_text:
            return cls([None] * items.n_rows, [None] * items.n_rows, [None] * queries.n_rows)
        categories: list[str] = list(world.meta.get("categories", []))
        brands: list[str] = list(world.meta.get("brand_names", []))

        def category(c: int) -> str | None:
            return None if c < 0 else categories[c] if c < len(categories) else f"category {c}"

        def brand(b: int) -> str | None:
            return None if b < 0 else brands[b] if b < len(brands) else f"brand {b}"

        return cls(
            [category(int(c)) for c in items["category"]],
            [brand(int(b)) for b in items["brand"]],
            [category(int(c)) for c in queries["category"]],
        )


def _texts_of(world: World, full_text: bool) -> dict[str, list[str]]:
    users, items, queries = world.users, world.items, world.queries
    names = _FieldNames.of(world, full_text)
    return {
        "users": [
            user_part(int(a), int(g), int(c))
            for a, g, c in zip(users["age"], users["gender"], users["city_tier"], strict=True)
        ],
        "queries": [
            query_part(str(q), c)
            for q, c in zip(queries["text"], names.query_category, strict=True)
        ],
        "items": [
            item_part(str(t), str(x), int(p), c, b)
            for t, x, p, c, b in zip(
                items["title"],
                items["text"],
                items["price_bucket"],
                names.item_category,
                names.item_brand,
                strict=True,
            )
        ],
        "contexts": [context_part(h) for h in range(N_HOURS)],
    }


def sample_vectors(
    world: World,
    encoder: TextEncoder,
    cache: EncodingCache,
    *,
    full_text: bool = False,
    progress: bool = True,
) -> SampleVectors:
    """Encode every distinct part once (cached) and return the composer."""
    vectors: dict[str, Array] = {}
    words: dict[str, Array] = {}
    for name, texts in _texts_of(world, full_text).items():
        vectors[name], _ = encode_texts(
            encoder, cache, texts, label=f"sample {name}", progress=progress
        )
        words[name] = np.array([len(tokenize(t)) for t in texts], dtype=np.float32)
    return SampleVectors(
        users=vectors["users"],
        queries=vectors["queries"],
        items=vectors["items"],
        contexts=vectors["contexts"],
        user_words=words["users"],
        query_words=words["queries"],
        item_words=words["items"],
        context_words=words["contexts"],
        world=world,
    )


def sample_texts(world: World, rows: Array, *, full_text: bool = False) -> list[str]:
    """The whole text of each impression, as an online language model would read it."""
    imp, users, items, queries = world.impressions, world.users, world.items, world.queries
    names = _FieldNames.of(world, full_text)
    out = []
    for row in rows:
        u, i, q = int(imp["user_id"][row]), int(imp["item_id"][row]), int(imp["query_id"][row])
        out.append(
            " ".join(
                (
                    user_part(
                        int(users["age"][u]), int(users["gender"][u]), int(users["city_tier"][u])
                    ),
                    query_part(
                        str(queries["text"][q]) if q != EMPTY_QUERY_ID else "",
                        names.query_category[q],
                    ),
                    item_part(
                        str(items["title"][i]),
                        str(items["text"][i]),
                        int(items["price_bucket"][i]),
                        names.item_category[i],
                        names.item_brand[i],
                    ),
                    context_part(int(imp["hour"][row])),
                )
            )
        )
    return out
