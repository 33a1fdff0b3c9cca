"""The feature store: everything one request needs from the static index, in one fetch.

`FeatureStore` is the protocol; two implementations serve the same snapshot:

- `EmbeddedStore`: the snapshot memory-mapped in-process (the demo; users without a server);
- `RedisStore`: the snapshot loaded into Redis (service/index/loader.py) under a versioned
  namespace, read with redis.asyncio in one round trip per request: a single MGET of the live
  pointer, the version's meta, the user, every candidate the item cache lacks and the query,
  whose record holds its (query, item) pairs (on Redis Cluster: one pipelined MGET per shard).

The query text is resolved before the fetch, in-process, by `QueryMatcher` (exact normalized text,
else the nearest known query by lexical similarity, else none). Anything the index lacks comes back
as defaults with a flag and a miss count, never as an exception.

A RedisStore follows the live pointer: the pointer rides along in every MGET, and when it moves the
store loads the new version's lexical table in the background while it keeps answering from the
version it has (the loader keeps an old version for a grace period after the switch).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, cast

import numpy as np
import numpy.typing as npt
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from service._kernels import pack_keys
from service.contract import ItemTerms, normalize_text
from service.index.connection import PipelinedConnection, Sent
from service.index.keys import DEFAULT_NAMESPACE, KeySchema
from service.index.lexical import QueryMatch, QueryMatcher, deserialize_index
from service.index.record_cache import ItemRecordCache
from service.index.records import (
    RECORD_FORMAT,
    ItemBatch,
    QueryRecord,
    TextColumn,
    decode_items,
    decode_query,
    decode_user,
)
from service.index.snapshot import SNAPSHOT_FORMAT, VECTOR_DTYPE, Snapshot, SnapshotMeta

log = logging.getLogger(__name__)

#: Text vectors as the index stores them (VECTOR_DTYPE): the graph takes them so and widens
#: them itself.
HalfArray = npt.NDArray[np.float16]
IntArray = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]
MissKind = Literal["query", "user", "item", "pair"]
RedisClient = PipelinedConnection | RedisCluster
#: How long the bulk reads (pointer, meta, the lexical table) may take.
BULK_TIMEOUT_S = 30.0


def _redis_unavailable(err: Exception) -> IndexUnavailable:
    """IndexUnavailable for a Redis error, naming its kind but not the server: the reason is
    shown by /readyz, and redis-py's messages carry the host and port (logged here instead)."""
    log.warning("Redis error: %s", err)
    return IndexUnavailable(f"Redis: {type(err).__name__}")


class IndexUnavailable(RuntimeError):
    """No live index: nothing loaded yet, or the store cannot be reached."""


@dataclass(frozen=True)
class QueryFeatures:
    match: QueryMatch
    category: int  # -1 unknown
    vec: HalfArray  # (D,), zeros when the query is empty or unresolved


@dataclass(frozen=True)
class UserFeatures:
    known: bool
    age: int  # -1 unknown, as city_tier and gender
    gender: int
    city_tier: int
    history_query_vec: HalfArray  # (n, D), n <= history length, oldest first
    history_pair_vec: HalfArray  # (n, D)


@dataclass(frozen=True)
class CandidateFeatures:
    item_known: BoolArray  # (N,)
    id_hash: npt.NDArray[np.uint64]  # (N,) contract.item_hashes, 0 for unknown items
    brand_hash: npt.NDArray[np.uint64]  # (N,) 0 without a brand
    category: IntArray  # (N,), -1 unknown, as brand and price_bucket
    brand: IntArray
    price_bucket: IntArray
    item_vec: HalfArray  # (N, D), zeros for unknown items
    titles: TextColumn  # '' for unknown items (decoded only where read)
    texts: TextColumn
    pair_known: BoolArray  # (N,) True where the index holds the (query, item) pair vector
    pair_vec: HalfArray  # (N, D), zeros where unknown
    terms: ItemTerms  # term hashes of titles and texts (none for unknown items)

    @classmethod
    def unknown(cls, n: int, dim: int) -> CandidateFeatures:
        return cls(
            item_known=np.zeros(n, dtype=bool),
            id_hash=np.zeros(n, dtype=np.uint64),
            brand_hash=np.zeros(n, dtype=np.uint64),
            category=np.full(n, -1, dtype=np.int32),
            brand=np.full(n, -1, dtype=np.int32),
            price_bucket=np.full(n, -1, dtype=np.int32),
            item_vec=np.zeros((n, dim), dtype=VECTOR_DTYPE),
            titles=TextColumn.empty(n),
            texts=TextColumn.empty(n),
            pair_known=np.zeros(n, dtype=bool),
            pair_vec=np.zeros((n, dim), dtype=VECTOR_DTYPE),
            terms=ItemTerms.none(n),
        )

    @classmethod
    def of_items(cls, items: ItemBatch) -> CandidateFeatures:
        """Candidates that are all these index records, in order (no pair vector yet)."""
        k, dim = items.vec.shape
        return cls(
            item_known=np.ones(k, dtype=bool),
            id_hash=items.id_hash,
            brand_hash=items.brand_hash,
            category=items.category,
            brand=items.brand,
            price_bucket=items.price_bucket,
            item_vec=items.vec,
            titles=items.titles,
            texts=items.texts,
            pair_known=np.zeros(k, dtype=bool),
            pair_vec=np.zeros((k, dim), dtype=VECTOR_DTYPE),
            terms=items.terms,
        )

    def scatter(self, n: int, rows: npt.NDArray[np.int64]) -> CandidateFeatures:
        """These candidates at ``rows`` (increasing) of N whose other rows are unknown items."""
        out = CandidateFeatures.unknown(n, self.item_vec.shape[1])
        for name in ARRAY_COLUMNS:
            getattr(out, name)[rows] = getattr(self, name)
        return replace(
            out,
            titles=self.titles.scatter(n, rows),
            texts=self.texts.scatter(n, rows),
            terms=self.terms.scatter(n, rows),
        )


#: The candidates' per-item arrays (titles, texts and terms are the columns that are not).
ARRAY_COLUMNS = (
    "item_known",
    "id_hash",
    "brand_hash",
    "category",
    "brand",
    "price_bucket",
    "item_vec",
    "pair_known",
    "pair_vec",
)


@dataclass(frozen=True)
class RequestFeatures:
    """What the index says about one request; ``misses`` counts what it did not know."""

    index_version: str
    query: QueryFeatures
    user: UserFeatures
    candidates: CandidateFeatures
    misses: dict[MissKind, int] = field(default_factory=dict)
    cached_items: int = 0  # item records the in-process cache answered (RedisStore)
    read_bytes: int = 0  # bytes of the Redis reply


def unavailable_features(query: str, n: int, dim: int) -> RequestFeatures:
    """What a request gets when the store cannot answer: every entity unknown."""
    text = normalize_text(query)
    match = QueryMatch(text, "none" if text else "empty", -1, "", 0.0)
    user, candidates = unknown_user(dim), CandidateFeatures.unknown(n, dim)
    query_features = QueryFeatures(match, -1, np.zeros(dim, dtype=VECTOR_DTYPE))
    return RequestFeatures("", query_features, user, candidates, _misses(match, user, candidates))


def user_features(raw: bytes | None, dim: int) -> UserFeatures:
    """A user record from the index (or the unknown user when there is none)."""
    if raw is None:
        return unknown_user(dim)
    u = decode_user(raw, dim)
    return UserFeatures(True, u.age, u.gender, u.city_tier, u.history_query_vec, u.history_pair_vec)


def unknown_user(dim: int) -> UserFeatures:
    empty = np.zeros((0, dim), dtype=VECTOR_DTYPE)
    return UserFeatures(False, -1, -1, -1, empty, empty)


def _misses(query: QueryMatch, user: UserFeatures, c: CandidateFeatures) -> dict[MissKind, int]:
    # count_nonzero, not sum: a bool sum goes through add.reduce's casting loop (~5x slower)
    n, known = len(c.item_known), int(np.count_nonzero(c.item_known))
    if query.row < 0:
        pair_misses = 0
    elif known == n:  # the usual case: no mask to build
        pair_misses = n - int(np.count_nonzero(c.pair_known))
    else:
        pair_misses = known - int(np.count_nonzero(c.item_known & c.pair_known))
    return {
        "query": int(query.kind == "none"),
        "user": int(not user.known),
        "item": n - known,
        "pair": pair_misses,
    }


class FeatureStore(Protocol):
    """One request's features from the static index."""

    def prefetch(self, user_id: str, query: str, item_ids: Sequence[str]) -> Prefetch | None:
        """Start `fetch`'s read now, if the store reads over a network (else None)."""
        ...

    async def fetch(
        self,
        user_id: str,
        query: str,
        item_ids: Sequence[str],
        prefetched: Prefetch | None = None,
    ) -> RequestFeatures:
        """Features of ``user_id``, ``query`` and each of ``item_ids`` (in order); the read
        `prefetch` started for the same arguments, if given."""
        ...

    async def meta(self) -> tuple[str, SnapshotMeta]:
        """The live index version and its meta (raises `IndexUnavailable` without one)."""
        ...

    async def check(self) -> tuple[str, SnapshotMeta]:
        """Like `meta`, but asks the backend now (readiness): reachable, live, which version."""
        ...

    async def close(self) -> None: ...


class EmbeddedStore:
    """A snapshot memory-mapped in-process; its version is the snapshot folder's name."""

    def __init__(self, snapshot: Snapshot, match_threshold: float | None = None) -> None:
        self.snapshot = snapshot
        self.version = snapshot.folder.name
        self.dim = snapshot.meta.text_dim
        self.matcher = snapshot.query_matcher(match_threshold)

    async def meta(self) -> tuple[str, SnapshotMeta]:
        return self.version, self.snapshot.meta

    async def check(self) -> tuple[str, SnapshotMeta]:
        return self.version, self.snapshot.meta

    async def close(self) -> None:
        return None

    def prefetch(self, user_id: str, query: str, item_ids: Sequence[str]) -> Prefetch | None:
        return None  # nothing to wait for: `fetch` reads memory

    async def fetch(
        self,
        user_id: str,
        query: str,
        item_ids: Sequence[str],
        prefetched: Prefetch | None = None,
    ) -> RequestFeatures:
        return self.fetch_now(user_id, query, item_ids)

    def fetch_now(self, user_id: str, query: str, item_ids: Sequence[str]) -> RequestFeatures:
        """`fetch` without the event loop (it never waits on anything)."""
        s = self.snapshot
        match = self.matcher.match(query)
        if match.row >= 0:
            q = QueryFeatures(match, int(s.query_category[match.row]), s.query_vec[match.row])
        else:
            q = QueryFeatures(match, -1, np.zeros(self.dim, dtype=VECTOR_DTYPE))

        user_row = int(s.rows("user", [user_id])[0])
        user = unknown_user(self.dim)
        if user_row >= 0:
            history_query, history_pair = s.user_history(user_row)
            user = UserFeatures(
                True,
                int(s.user_age[user_row]),
                int(s.user_gender[user_row]),
                int(s.user_city_tier[user_row]),
                history_query,
                history_pair,
            )

        rows = s.rows("item", list(item_ids))
        known = rows >= 0
        at = np.maximum(rows, 0)
        c = CandidateFeatures.unknown(len(item_ids), self.dim)
        c.item_known[:] = known
        for column, source in (
            (c.id_hash, s.item_id_hash),
            (c.brand_hash, s.item_brand_hash),
            (c.category, s.item_category),
            (c.brand, s.item_brand),
            (c.price_bucket, s.item_price_bucket),
        ):
            column[known] = source[at[known]]
        c.item_vec[known] = s.item_vec[at[known]]
        pair_rows = s.pair_rows(match.row, rows)
        c.pair_known[:] = pair_rows >= 0
        c.pair_vec[c.pair_known] = s.pair_vec[pair_rows[c.pair_known]]
        c = replace(
            c,
            titles=s.item_title.take(rows),
            texts=s.item_text.take(rows),
            terms=s.item_terms(rows),
        )
        return RequestFeatures(self.version, q, user, c, _misses(match, user, c))


@dataclass(frozen=True)
class _LiveVersion:
    version: str
    meta: SnapshotMeta
    matcher: QueryMatcher
    #: Query record keys by known query text, made once each (a key hashes its text): bounded
    #: by the version's known queries, as only a matched text is looked up.
    query_keys: dict[str, str] = field(default_factory=dict)

    def query_key(self, keys: KeySchema, known_text: str) -> str:
        key = self.query_keys.get(known_text)
        if key is None:
            key = self.query_keys[known_text] = keys.query(self.version, known_text)
        return key


#: Keys in the order an MGET reads them: a key, or a (prefix, ids) group of prefix + each id.
KeySegments = list[str | tuple[str, list[str]]]


@dataclass(frozen=True)
class _ReadPlan:
    """One request's read: the keys of its MGET, and where each candidate's record comes from
    (``cached``: the item cache's record, None where it is read)."""

    live: _LiveVersion
    match: QueryMatch
    item_ids: list[str]
    cached: list[bytes | None]
    unread_ids: list[str]
    segments: KeySegments

    @property
    def keys(self) -> list[str]:
        """Every key, spelled out (the read that is not sent packed: a cluster's, a first's)."""
        keys: list[str] = []
        for segment in self.segments:
            if isinstance(segment, str):
                keys.append(segment)
            else:
                keys += map(segment[0].__add__, segment[1])
        return keys


@dataclass(frozen=True)
class Prefetch:
    """A `RedisStore` read already sent (`RedisStore.prefetch`)."""

    plan: _ReadPlan
    sent: Sent

    def cancel(self) -> None:
        """The request will not read it: the reply is dropped when it comes."""
        self.sent.cancel()


class RedisStore:
    """The static index in Redis (single server or cluster), one round trip per request."""

    def __init__(
        self,
        client: RedisClient,
        namespace: str = DEFAULT_NAMESPACE,
        match_threshold: float | None = None,
        bulk: RedisClient | None = None,
        item_cache_bytes: int = 0,
    ) -> None:
        self.client = client  # the request path's reads
        self.item_cache = ItemRecordCache(item_cache_bytes)
        # Reads of the pointer, meta and lexical table (megabytes for a large index): on a
        # connection of their own, so no request queues behind a bulk transfer.
        self.bulk = bulk or client
        self.keys = KeySchema(namespace)
        self.match_threshold = match_threshold
        self._live: _LiveVersion | None = None
        self._refreshing: asyncio.Task[_LiveVersion] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        cluster: bool = False,
        timeout_s: float = 0.5,
        match_threshold: float | None = None,
        item_cache_bytes: int = 0,
    ) -> RedisStore:
        """A store on a redis:// URL; ``cluster`` for Redis Cluster (any node's URL);
        ``item_cache_bytes`` bounds the in-process item record cache (0: none)."""
        if cluster:
            options: dict[str, Any] = {
                "socket_timeout": timeout_s,
                "socket_connect_timeout": timeout_s,
                # A 200-candidate reply is ~100 KB: read it in one go, not in 64 KB slices.
                "socket_read_size": 1 << 20,
            }
            return cls(
                RedisCluster.from_url(url, **options),
                namespace,
                match_threshold,
                item_cache_bytes=item_cache_bytes,
            )
        return cls(
            PipelinedConnection.from_url(url, timeout_s),
            namespace,
            match_threshold,
            bulk=PipelinedConnection.from_url(url, max(timeout_s, BULK_TIMEOUT_S)),
            item_cache_bytes=item_cache_bytes,
        )

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        await self.client.aclose()
        if self.bulk is not self.client:
            await self.bulk.aclose()

    async def _mget(self, keys: list[str], client: RedisClient | None = None) -> list[bytes | None]:
        client = client or self.client
        if isinstance(client, RedisCluster):
            return list(await client.mget_nonatomic(keys))
        return await client.mget(keys)

    async def refresh(self) -> _LiveVersion:
        """Read the live pointer and that version's meta and lexical table."""
        try:
            raw_version = await self.bulk.get(self.keys.live)
            if raw_version is None:
                raise IndexUnavailable(f"no live index under {self.keys.namespace!r}")
            version = raw_version.decode() if isinstance(raw_version, bytes) else raw_version
            meta_raw, index_blob, texts_raw = await self._mget(
                [
                    self.keys.meta(version),
                    self.keys.lexical_index(version),
                    self.keys.lexical_texts(version),
                ],
                self.bulk,
            )
        except RedisError as err:
            raise _redis_unavailable(err) from err
        if meta_raw is None or index_blob is None or texts_raw is None:
            raise IndexUnavailable(f"index version {version} is incomplete or was removed")
        try:
            body = json.loads(meta_raw)
            snapshot = body["snapshot"]
            if snapshot.get("format") != SNAPSHOT_FORMAT:
                raise IndexUnavailable(
                    f"index version {version} is snapshot format {snapshot.get('format')}; "
                    f"this service reads format {SNAPSHOT_FORMAT}: load a snapshot exported by it"
                )
            meta = SnapshotMeta(**snapshot)
            if body.get("records", 1) != RECORD_FORMAT:  # 1: a loader before the field
                raise IndexUnavailable(
                    f"index version {version} holds records of format {body.get('records', 1)}; "
                    f"this service reads format {RECORD_FORMAT}: load the snapshot again with "
                    "this build's `ranker index load`"
                )
            texts = texts_raw.decode("utf-8").split("\n") if texts_raw else []
            threshold = self.match_threshold
            if threshold is None:
                threshold = float(meta.lexical["threshold"])
            matcher = QueryMatcher(
                texts, deserialize_index(index_blob), threshold, int(meta.lexical["dim"])
            )
        except IndexUnavailable:
            raise
        except Exception as err:  # any unreadable part: not served, and /readyz says why
            raise IndexUnavailable(
                f"index version {version} is unreadable ({type(err).__name__}: {err})"
            ) from err
        self._live = _LiveVersion(version, meta, matcher)
        log.info("index version %s is live (%s)", version, meta.counts)
        return self._live

    async def _current(self) -> _LiveVersion:
        return self._live if self._live is not None else await self.refresh()

    def _refresh_in_background(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self.refresh())
            self._refreshing.add_done_callback(_log_failure)

    async def meta(self) -> tuple[str, SnapshotMeta]:
        live = await self._current()
        return live.version, live.meta

    async def check(self) -> tuple[str, SnapshotMeta]:
        try:
            pointer = await self.bulk.get(self.keys.live)
        except RedisError as err:
            raise _redis_unavailable(err) from err
        if pointer is None:
            raise IndexUnavailable(f"no live index under {self.keys.namespace!r}")
        version = pointer.decode() if isinstance(pointer, bytes) else pointer
        live = self._live
        if live is None or live.version != version:
            live = await self.refresh()
        return live.version, live.meta

    def prefetch(self, user_id: str, query: str, item_ids: Sequence[str]) -> Prefetch | None:
        """Send the request's MGET now, without yielding, so the caller can work while Redis
        does (None: no live version known yet, a cluster, or the connection not open: `fetch`
        reads as usual). Pass it to `fetch`, or `cancel` it."""
        live, client = self._live, self.client
        if live is None or not isinstance(client, PipelinedConnection) or not client.is_open:
            return None  # (checked before planning: `fetch` would plan again)
        plan = self._plan(live, user_id, query, item_ids)
        # Packed in C, keys and all: building 2N key strings for hiredis to pack cost more.
        sent = client.send_packed_now(pack_keys("MGET", plan.segments))
        return None if sent is None else Prefetch(plan, sent)

    async def fetch(
        self,
        user_id: str,
        query: str,
        item_ids: Sequence[str],
        prefetched: Prefetch | None = None,
    ) -> RequestFeatures:
        if prefetched is not None:
            values = await self._fetch_values(prefetched.plan, prefetched.sent)
        else:
            values = await self._fetch_values(
                self._plan(await self._current(), user_id, query, item_ids)
            )
        if values is None:  # the version was removed under us: follow the pointer, once
            live = await self.refresh()
            values = await self._fetch_values(self._plan(live, user_id, query, item_ids))
            if values is None:
                raise IndexUnavailable(f"index version {live.version} vanished during a fetch")
        return values

    def _plan(
        self, live: _LiveVersion, user_id: str, query: str, item_ids: Sequence[str]
    ) -> _ReadPlan:
        v, keys = live.version, self.keys
        item_ids = item_ids if isinstance(item_ids, list) else list(item_ids)  # pack_keys' form
        match = live.matcher.match(query)
        cached = self.item_cache.lookup(v, item_ids)  # None: read it from Redis
        if cached.count(None) == len(cached):  # nothing cached (or no cache): read every item
            unread_ids = item_ids
        else:
            unread_ids = [item_ids[k] for k, raw in enumerate(cached) if raw is None]
        segments: KeySegments = [
            keys.live,
            keys.meta(v),
            keys.user(v, user_id),
            (keys.item(v, ""), unread_ids),
        ]
        if match.row >= 0:  # the query's record holds its pairs
            segments.append(live.query_key(keys, match.matched_text))
        return _ReadPlan(live, match, item_ids, cached, unread_ids, segments)

    async def _fetch_values(
        self, plan: _ReadPlan, sent: Sent | None = None
    ) -> RequestFeatures | None:
        live, item_ids, unread_ids = plan.live, plan.item_ids, plan.unread_ids
        v = live.version
        try:
            if sent is not None:
                values: list[bytes | None] = await sent.result()
            else:
                values = await self._mget(plan.keys)  # the one round trip
        except RedisError as err:
            raise _redis_unavailable(err) from err
        read = values[3 : 3 + len(unread_ids)]
        self.item_cache.store(v, unread_ids, read)
        if unread_ids is item_ids:
            items = read
        else:
            fill = iter(read)
            items = [raw if raw is not None else next(fill) for raw in plan.cached]
        rest = values[3 + len(unread_ids) :]
        cached_items = len(item_ids) - len(unread_ids)
        read_bytes = sum(map(len, filter(None, values)))
        try:
            return self._decode(live, plan.match, values[:3], items, rest, cached_items, read_bytes)
        except (ValueError, struct.error, KeyError) as err:  # a record not of this format
            raise IndexUnavailable(f"index version {v}: undecodable record: {err}") from err

    def _decode(
        self,
        live: _LiveVersion,
        match: QueryMatch,
        head: list[bytes | None],
        item_values: list[bytes | None],
        rest: list[bytes | None],
        cached_items: int,
        read_bytes: int,
    ) -> RequestFeatures | None:
        """Decode the reply: ``head`` = pointer, meta, user; one record (or None) per
        candidate; ``rest`` = the query record, with its pairs (known queries), or nothing;
        ``cached_items`` of the candidates came from the item cache, ``read_bytes`` from Redis.
        None: the version is gone."""
        v, dim = live.version, live.meta.text_dim
        pointer, meta_raw, user_raw = head
        if meta_raw is None:
            return None
        if pointer is not None and pointer.decode() != v:
            self._refresh_in_background()  # this request is answered from the version it knew

        record = decode_query(rest[0], dim) if match.row >= 0 and rest[0] is not None else None
        if record is not None:
            q = QueryFeatures(match, record.category, record.vec)
        else:
            q = QueryFeatures(match, -1, np.zeros(dim, dtype=VECTOR_DTYPE))

        user = user_features(user_raw, dim)

        c = candidate_features(item_values, dim)
        if record is not None:
            place_pairs(c, record)
        misses = _misses(match, user, c)
        return RequestFeatures(v, q, user, c, misses, cached_items, read_bytes)


def place_pairs(c: CandidateFeatures, record: QueryRecord) -> None:
    """Give the candidates the pair vectors ``record``'s query holds for them (in place: ``c``
    is fresh from `candidate_features`, no pair known yet)."""
    paired, vectors = record.pairs_of(c.id_hash, c.item_known)
    c.pair_known[:] = paired
    c.pair_vec[paired] = vectors


def _present(values: list[bytes | None]) -> list[int]:
    """The positions of the values the MGET found (None: the key is not in the index)."""
    return [i for i, raw in enumerate(values) if raw is not None]


def candidate_features(item_values: list[bytes | None], dim: int) -> CandidateFeatures:
    """Candidate features from item records as Redis returned them (None: not in the index)."""
    n = len(item_values)
    if None in item_values:
        found = [raw for raw in item_values if raw is not None]
    else:  # every candidate in the index (the common case): the list as it is
        found = cast("list[bytes]", item_values)
    if not found:
        return CandidateFeatures.unknown(n, dim)
    c = CandidateFeatures.of_items(decode_items(found, dim))
    return c if len(found) == n else c.scatter(n, np.array(_present(item_values)))


def _log_failure(task: asyncio.Task[_LiveVersion]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("index refresh failed: %s", task.exception())
