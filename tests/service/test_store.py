"""The FeatureStore contract, run against both implementations over the same snapshot."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import redis

from service.contract import ItemTerms
from service.index.connection import PipelinedConnection
from service.index.keys import KeySchema
from service.index.loader import LoadResult, delete_version, load_snapshot
from service.index.snapshot import Snapshot
from service.store import (
    ARRAY_COLUMNS,
    EmbeddedStore,
    FeatureStore,
    IndexUnavailable,
    RedisStore,
    RequestFeatures,
)


@dataclass(frozen=True)
class Loaded:
    """The tiny snapshot loaded into Redis under the test's own prefix."""

    url: str
    keys: KeySchema
    client: redis.Redis
    first: LoadResult


@pytest.fixture
def loaded(tiny_snapshot: Snapshot, redis_prefix: tuple[str, str]) -> Iterator[Loaded]:
    url, prefix = redis_prefix
    keys, client = KeySchema(prefix), redis.Redis.from_url(url)
    yield Loaded(url, keys, client, load_snapshot(tiny_snapshot, client, keys, grace_s=0))
    client.close()


OpenStore = Callable[..., RedisStore]


@pytest.fixture
async def open_store(loaded: Loaded) -> AsyncIterator[OpenStore]:
    """Opens RedisStores on the loaded snapshot (`RedisStore.from_url`'s keyword options), each
    closed after the test."""
    opened: list[RedisStore] = []

    def open_one(**options: Any) -> RedisStore:
        opened.append(RedisStore.from_url(loaded.url, namespace=loaded.keys.namespace, **options))
        return opened[-1]

    yield open_one
    for redis_store in opened:
        await redis_store.close()


@pytest.fixture(params=["embedded", "redis"])
def store(request: pytest.FixtureRequest, tiny_snapshot: Snapshot) -> FeatureStore:
    if request.param == "embedded":
        return EmbeddedStore(tiny_snapshot)
    open_one: OpenStore = request.getfixturevalue("open_store")
    return open_one()


def _known(s: Snapshot) -> tuple[str, str, int, list[str], list[int]]:
    """A user with history, a query with pairs, and the items of its first pairs."""
    user_row = int(np.argmax(np.diff(s.history_offsets)))
    pair_query = np.asarray(s.pair_query)
    query_row = int(pair_query[np.searchsorted(pair_query, 1)])  # the first non-empty query
    rows = np.flatnonzero(pair_query == query_row)[:5]
    item_rows = [int(s.pair_item[r]) for r in rows]
    return (
        s.user_key[user_row],
        s.query_text[query_row],
        user_row,
        [s.item_key[i] for i in item_rows],
        item_rows,
    )


async def test_known_entities_come_back_exactly_as_the_snapshot_holds_them(
    store: FeatureStore, tiny_snapshot: Snapshot
) -> None:
    s = tiny_snapshot
    user_id, query, user_row, item_ids, item_rows = _known(s)
    features = await store.fetch(user_id, query, item_ids)

    assert features.misses == {"query": 0, "user": 0, "item": 0, "pair": 0}
    assert features.query.match.kind == "exact"
    query_row = features.query.match.row
    np.testing.assert_array_equal(features.query.vec, s.query_vec[query_row])
    assert features.query.category == int(s.query_category[query_row])

    history_query, history_pair = s.user_history(user_row)
    assert features.user.known and features.user.age == int(s.user_age[user_row])
    np.testing.assert_array_equal(features.user.history_query_vec, history_query)
    np.testing.assert_array_equal(features.user.history_pair_vec, history_pair)

    c = features.candidates
    assert c.item_known.all() and c.pair_known.all()
    np.testing.assert_array_equal(c.item_vec, s.item_vec[item_rows])
    np.testing.assert_array_equal(c.category, s.item_category[item_rows])
    assert list(c.titles) == [s.item_title[r] for r in item_rows]
    pair_rows = s.pair_rows(query_row, np.asarray(item_rows))
    np.testing.assert_array_equal(c.pair_vec, s.pair_vec[pair_rows])
    # as the index holds them: the graph widens them, the request path never does
    vectors = (features.query.vec, features.user.history_query_vec, c.item_vec, c.pair_vec)
    assert {v.dtype for v in vectors} == {np.dtype(np.float16)}


async def test_unknown_items_and_pairs_are_defaults_with_flags_never_errors(
    store: FeatureStore, tiny_snapshot: Snapshot
) -> None:
    user_id, query, _, item_ids, _ = _known(tiny_snapshot)
    unpaired = next(  # a known item that has no labelled pair with this query
        k
        for k in tiny_snapshot.item_key.to_list()
        if not tiny_snapshot.pair_rows(
            int(tiny_snapshot.rows("query", [query])[0]), tiny_snapshot.rows("item", [k])
        )[0]
        >= 0
    )
    ids = [item_ids[0], "no-such-item", unpaired, "also-missing"]
    features = await store.fetch(user_id, query, ids)
    c = features.candidates
    assert c.item_known.tolist() == [True, False, True, False]
    assert c.pair_known.tolist() == [True, False, False, False]
    assert features.misses["item"] == 2 and features.misses["pair"] == 1
    assert not c.item_vec[1].any() and not c.pair_vec[2].any()
    assert c.category[1] == -1 and c.titles[1] == ""


async def test_unknown_user_gets_defaults(store: FeatureStore, tiny_snapshot: Snapshot) -> None:
    _, query, _, item_ids, _ = _known(tiny_snapshot)
    features = await store.fetch("nobody-knows-me", query, item_ids)
    assert not features.user.known and features.misses["user"] == 1
    assert features.user.history_query_vec.shape == (0, tiny_snapshot.meta.text_dim)
    assert features.user.age == -1


async def test_unseen_query_text_borrows_the_nearest_known_query(
    store: FeatureStore, tiny_snapshot: Snapshot
) -> None:
    user_id, query, _, item_ids, _ = _known(tiny_snapshot)
    variant = query.upper() + "s"  # normalizes to a text the index does not hold
    features = await store.fetch(user_id, variant, item_ids)
    assert features.query.match.kind == "nearest"
    assert features.query.match.matched_text == query
    assert features.query.match.similarity >= tiny_snapshot.meta.lexical["threshold"]
    exact = await store.fetch(user_id, query, item_ids)
    np.testing.assert_array_equal(features.query.vec, exact.query.vec)
    np.testing.assert_array_equal(features.candidates.pair_vec, exact.candidates.pair_vec)


async def test_unrelated_query_text_is_unresolved_with_zeros(
    store: FeatureStore, tiny_snapshot: Snapshot
) -> None:
    user_id, _, _, item_ids, _ = _known(tiny_snapshot)
    features = await store.fetch(user_id, "qxz vvkj wqpt", item_ids)
    assert features.query.match.kind == "none" and features.misses["query"] == 1
    assert not features.query.vec.any() and features.query.category == -1
    assert not features.candidates.pair_known.any() and features.misses["pair"] == 0


async def test_empty_query_is_a_recommendation_request(
    store: FeatureStore, tiny_snapshot: Snapshot
) -> None:
    user_id, _, _, item_ids, _ = _known(tiny_snapshot)
    features = await store.fetch(user_id, "   ", item_ids)
    assert features.query.match.kind == "empty"
    assert features.misses == {"query": 0, "user": 0, "item": 0, "pair": 0}
    assert features.candidates.item_known.all() and not features.candidates.pair_known.any()


async def test_meta_names_the_version_and_the_text_tower(
    store: FeatureStore, tiny_snapshot: Snapshot
) -> None:
    version, meta = await store.meta()
    assert version
    assert meta.text_tower_fingerprint == tiny_snapshot.meta.text_tower_fingerprint
    assert meta.counts == tiny_snapshot.meta.counts


@pytest.mark.parametrize("cache_bytes", [0, 20_000, 1 << 24])
async def test_both_stores_answer_a_mixed_request_identically(
    tiny_snapshot: Snapshot, open_store: OpenStore, cache_bytes: int
) -> None:
    """Also with the Redis store's item cache, none, evicting (20 KB: ~15 records) or
    holding all: the requests draw from 80 items, so later ones find earlier records cached."""
    embedded = EmbeddedStore(tiny_snapshot)
    remote = open_store(item_cache_bytes=cache_bytes)
    rng = np.random.default_rng(0)
    keys = tiny_snapshot.item_key.to_list()[:80]
    cached = 0
    for query in [tiny_snapshot.query_text[q] for q in (1, 2, 3, 1)] + ["", "zzz"]:
        ids = [keys[i] for i in rng.choice(len(keys), 50, replace=False)]
        ids = [*ids[:20], "missing", *ids[20:], "also-missing"]  # gaps inside and at the end
        user = tiny_snapshot.user_key[int(rng.integers(len(tiny_snapshot.user_key)))]
        a, b = await embedded.fetch(user, query, ids), await remote.fetch(user, query, ids)
        cached += b.cached_items
        assert a.misses == b.misses and a.query.match == b.query.match
        for name in ARRAY_COLUMNS:
            np.testing.assert_array_equal(getattr(a.candidates, name), getattr(b.candidates, name))
        np.testing.assert_array_equal(a.user.history_pair_vec, b.user.history_pair_vec)
        assert a.candidates.texts == b.candidates.texts
        assert a.candidates.titles == b.candidates.titles
        ta, tb = a.candidates.terms, b.candidates.terms
        np.testing.assert_array_equal(ta.title_counts, tb.title_counts)
        for i in range(len(ids)):
            run_a = ta.hashes[ta.offsets[i] : ta.offsets[i + 1]]
            np.testing.assert_array_equal(run_a, tb.hashes[tb.offsets[i] : tb.offsets[i + 1]])
    assert remote.item_cache.held_bytes <= cache_bytes
    assert (cached > 0) == (cache_bytes > 0)


async def test_the_item_cache_saves_reads_and_empties_when_the_version_moves(
    tiny_snapshot: Snapshot, loaded: Loaded, open_store: OpenStore
) -> None:
    store = open_store(item_cache_bytes=1 << 24)
    user, query, _, items, _ = _known(tiny_snapshot)
    ids = [*items, *tiny_snapshot.item_key.to_list()[:40], "not-in-the-index"]
    cold = await store.fetch(user, query, ids)
    warm = await store.fetch(user, query, ids)
    assert (cold.cached_items, warm.cached_items) == (0, len(ids) - 1)  # not the unknown id
    assert warm.read_bytes < cold.read_bytes / 2
    np.testing.assert_array_equal(cold.candidates.item_vec, warm.candidates.item_vec)
    second = load_snapshot(tiny_snapshot, loaded.client, loaded.keys, grace_s=0)
    assert second.version != loaded.first.version
    moved = await store.fetch(user, query, ids)
    assert moved.index_version == second.version and moved.cached_items == 0
    np.testing.assert_array_equal(cold.candidates.item_vec, moved.candidates.item_vec)


async def test_a_record_not_of_this_layout_makes_the_index_unavailable_not_a_crash(
    tiny_snapshot: Snapshot, loaded: Loaded, open_store: OpenStore
) -> None:
    client = loaded.client
    user_id, query, _, item_ids, _ = _known(tiny_snapshot)
    store = open_store()
    await store.fetch(user_id, query, item_ids)  # whole: fine
    key = loaded.keys.item(loaded.first.version, item_ids[1])
    client.set(key, client.get(key)[:-3])  # type: ignore[index]
    with pytest.raises(IndexUnavailable, match="undecodable"):
        await store.fetch(user_id, query, item_ids)


def _same_features(a: RequestFeatures, b: RequestFeatures) -> None:
    assert (a.index_version, a.misses, a.user.known) == (b.index_version, b.misses, b.user.known)
    np.testing.assert_array_equal(a.query.vec, b.query.vec)
    for name in ("item_known", "id_hash", "category", "item_vec", "pair_known", "pair_vec"):
        np.testing.assert_array_equal(getattr(a.candidates, name), getattr(b.candidates, name))


async def test_a_prefetched_read_is_the_read_fetch_makes(
    tiny_snapshot: Snapshot, open_store: OpenStore
) -> None:
    store = open_store()
    user, query, _, items, _ = _known(tiny_snapshot)
    ids = [*items, "not-in-the-index"]
    # A new store knows no live version and has no connection yet: fetch reads as usual.
    assert store.prefetch(user, query, ids) is None
    await store.refresh()  # the live version known (on the bulk connection), none open yet
    assert isinstance(store.client, PipelinedConnection) and not store.client.is_open
    assert store.prefetch(user, query, ids) is None
    plain = await store.fetch(user, query, ids)
    assert store.client.is_open
    prefetched = store.prefetch(user, query, ids)
    assert prefetched is not None
    _same_features(await store.fetch(user, query, ids, prefetched), plain)
    # A prefetch nobody reads: its reply is dropped, and the replies after it stay in step.
    for _ in range(3):
        abandoned = store.prefetch(user, query, ids[1:])
        assert abandoned is not None
        abandoned.cancel()
    other = tiny_snapshot.user_key[1]
    _same_features(await store.fetch(other, query, ids), await store.fetch(other, query, ids))
    _same_features(await store.fetch(user, query, ids), plain)


async def test_a_prefetched_read_of_a_removed_version_follows_the_pointer(
    tiny_snapshot: Snapshot, loaded: Loaded, open_store: OpenStore
) -> None:
    client, keys = loaded.client, loaded.keys
    store = open_store()
    user, query, _, items, _ = _known(tiny_snapshot)
    await store.fetch(user, query, items)
    second = load_snapshot(tiny_snapshot, client, keys, grace_s=0)
    delete_version(client, keys, loaded.first.version)
    prefetched = store.prefetch(user, query, items)  # still of the version the store knew
    assert prefetched is not None
    features = await store.fetch(user, query, items, prefetched)
    assert features.index_version == second.version
    assert features.candidates.item_known.all()


def test_the_snapshots_gathers_are_its_row_by_row_reads(tiny_snapshot: Snapshot) -> None:
    s = tiny_snapshot
    keys = [*s.item_key.to_list()[:30], "not-in-the-index", s.item_key[3]]
    rows = s.rows("item", keys)
    assert rows[-2] == -1 and rows[-1] == rows[3]
    row_of = {key: row for row, key in enumerate(s.item_key.to_list())}
    assert rows.tolist() == [row_of.get(key, -1) for key in keys]
    assert rows.tolist() == s.rows("item", keys).tolist()  # again, through the memo
    terms = s.item_terms(rows)
    runs = [s.item_term_hashes(int(row)) for row in rows]
    expected = ItemTerms.from_lists([r[0] for r in runs], [r[1] for r in runs])
    np.testing.assert_array_equal(terms.hashes, expected.hashes)
    np.testing.assert_array_equal(terms.offsets, expected.offsets)
    np.testing.assert_array_equal(terms.title_counts, expected.title_counts)
    assert s.item_terms(np.zeros(0, dtype=np.int64)).offsets.tolist() == [0]
