"""ELEC's view of a sample as text (ELEC 2.2.1) and its language-model vectors.

A sample is written as ``"<field> is <value>."`` sentences plus the item's own text, in four
parts: the user, the query, the item and the context. The default world has 1.2M impressions but
only a few thousand distinct parts, so each distinct part is encoded once (through the encoding
cache) and a sample's vector is **composed from its parts**: the mean of the part vectors weighted
by their word counts. That is what mean pooling over the concatenated text gives when the parts
do not attend to each other; the online path (`sample_texts` + the language model) encodes the
whole text instead, which is what ELEC's gain network would have to do per request.
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


def query_part(query: str) -> str:
    return f"Query is {query}." if query else "No query: a recommendation request."


def item_part(title: str, text: str, price_bucket: int) -> str:
    return f"Item is {title}. {text} Price level is {_value(price_bucket)}.".replace("  ", " ")


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


def _texts_of(world: World) -> dict[str, list[str]]:
    users, items, queries = world.users, world.items, world.queries
    return {
        "users": [
            user_part(int(a), int(g), int(c))
            for a, g, c in zip(users["age"], users["gender"], users["city_tier"], strict=True)
        ],
        "queries": [query_part(str(q)) for q in queries["text"]],
        "items": [
            item_part(str(t), str(x), int(p))
            for t, x, p in zip(items["title"], items["text"], items["price_bucket"], strict=True)
        ],
        "contexts": [context_part(h) for h in range(N_HOURS)],
    }


def sample_vectors(
    world: World, encoder: TextEncoder, cache: EncodingCache, *, progress: bool = True
) -> SampleVectors:
    """Encode every distinct part once (cached) and return the composer."""
    vectors: dict[str, Array] = {}
    words: dict[str, Array] = {}
    for name, texts in _texts_of(world).items():
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


def sample_texts(world: World, rows: Array) -> list[str]:
    """The whole text of each impression, as an online language model would read it."""
    imp, users, items, queries = world.impressions, world.users, world.items, world.queries
    out = []
    for row in rows:
        u, i, q = int(imp["user_id"][row]), int(imp["item_id"][row]), int(imp["query_id"][row])
        out.append(
            " ".join(
                (
                    user_part(
                        int(users["age"][u]), int(users["gender"][u]), int(users["city_tier"][u])
                    ),
                    query_part(str(queries["text"][q]) if q != EMPTY_QUERY_ID else ""),
                    item_part(
                        str(items["title"][i]), str(items["text"][i]), int(items["price_bucket"][i])
                    ),
                    context_part(int(imp["hour"][row])),
                )
            )
        )
    return out
