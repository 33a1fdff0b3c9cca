"""`ranker index load`: put a snapshot into Redis as a new version and switch to it atomically.

1. Refuse a snapshot whose text-tower fingerprint (or vector width) differs from the model
   package the index will serve, before writing anything.
2. Take the load lock (one loader at a time; a TTL that the loader renews, so a killed loader's
   lock expires by itself), and delete what killed or failed loads left behind.
3. INCR a fresh version and mark it ``loading``; write every record under ``<ns>:<v>:`` with
   pipelined MSETs (per shard on a cluster), showing progress.
4. Verify: EXISTS over every written key must count them all; then write the version's meta.
5. Switch: one SET of ``<ns>:live``. Until this instant readers see only the previous version,
   complete; after it, only the new one. A load that dies before it changes nothing they read.
6. After a grace period (so services still holding the old version finish their requests and
   follow the pointer), delete the previous version's keys.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from redis.cluster import RedisCluster

from service.index.keys import KeySchema
from service.index.lexical import deserialize_index
from service.index.records import RECORD_FORMAT, encode_item, encode_query, encode_user
from service.index.snapshot import Snapshot, SnapshotMeta
from service.package import Manifest

log = logging.getLogger(__name__)

SyncClient = redis.Redis | RedisCluster
DEFAULT_BATCH = 1_000
DEFAULT_LOCK_TTL_S = 30.0
DEFAULT_GRACE_S = 5.0


class IndexMismatch(ValueError):
    """The snapshot was not built with the text tower (or vector width) the model expects."""


class LoadError(RuntimeError):
    """The load could not complete; the previous version stays live."""


def check_compatible(meta: SnapshotMeta, manifest: Manifest) -> None:
    """Refuse an index built with another text tower than the model's."""
    problems = []
    if meta.text_tower_fingerprint != manifest.text_tower_fingerprint:
        problems.append(
            f"text tower {meta.text_tower_fingerprint[:12]} != model's "
            f"{manifest.text_tower_fingerprint[:12]}"
        )
    if meta.text_dim != manifest.text_dim:
        problems.append(f"vector width {meta.text_dim} != model's {manifest.text_dim}")
    if meta.history_length != manifest.history_length:
        problems.append(f"history length {meta.history_length} != {manifest.history_length}")
    if problems:
        raise IndexMismatch(
            f"index snapshot does not match model {manifest.name}@{manifest.version}: "
            + "; ".join(problems)
        )


@dataclass(frozen=True)
class LoadResult:
    version: str
    previous: str | None
    keys: int
    seconds: float

    @property
    def keys_per_second(self) -> float:
        return self.keys / max(self.seconds, 1e-9)


def records(snapshot: Snapshot, keys: KeySchema, version: str) -> Iterator[tuple[str, bytes]]:
    """Every (key, value) of a snapshot under ``version``, the meta record excluded."""
    s = snapshot
    texts = s.query_text.to_list()
    lexical = s.lexical_index_path.read_bytes()
    if deserialize_index(lexical).ntotal != len(texts):
        raise LoadError("the snapshot's lexical index does not cover its queries")
    yield keys.lexical_index(version), lexical
    yield keys.lexical_texts(version), "\n".join(texts).encode("utf-8")
    # Pairs are sorted by (query, item): each query's pairs are one run of rows.
    pair_query = np.asarray(s.pair_query)
    bounds = np.searchsorted(pair_query, np.arange(len(texts) + 1))
    for row, text in enumerate(texts):
        pairs = slice(int(bounds[row]), int(bounds[row + 1]))
        yield (
            keys.query(version, text),
            encode_query(
                int(s.query_category[row]),
                s.query_vec[row],
                s.item_id_hash[np.asarray(s.pair_item[pairs])],
                s.pair_vec[pairs],
            ),
        )
    item_keys = s.item_key.to_list()
    for row, item in enumerate(item_keys):
        title_terms, text_terms = s.item_term_hashes(row)
        yield (
            keys.item(version, item),
            encode_item(
                int(s.item_id_hash[row]),
                int(s.item_brand_hash[row]),
                int(s.item_category[row]),
                int(s.item_brand[row]),
                int(s.item_price_bucket[row]),
                s.item_vec[row],
                s.item_title[row],
                s.item_text[row],
                title_terms,
                text_terms,
            ),
        )
    for row, user in enumerate(s.user_key.to_list()):
        history_query, history_pair = s.user_history(row)
        yield (
            keys.user(version, user),
            encode_user(
                int(s.user_age[row]),
                int(s.user_gender[row]),
                int(s.user_city_tier[row]),
                history_query,
                history_pair,
            ),
        )


def record_count(snapshot: Snapshot) -> int:
    c = snapshot.meta.counts
    return 2 + c["queries"] + c["items"] + c["users"]


class _Lock:
    """SET NX with a TTL, renewed as the load goes; released only by its owner."""

    _RELEASE = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
        "return 0"
    )

    def __init__(self, client: SyncClient, key: str, ttl_s: float) -> None:
        self.client, self.key, self.ttl_ms = client, key, int(ttl_s * 1000)
        self.token = uuid.uuid4().hex
        self.renewed = 0.0

    def acquire(self) -> None:
        if not self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            raise LoadError(
                f"another load holds {self.key} (it expires {self.ttl_ms / 1000:.0f}s after its "
                "loader stops)"
            )
        self.renewed = time.monotonic()

    def renew(self) -> None:
        if time.monotonic() - self.renewed > self.ttl_ms / 3000:
            if self.client.get(self.key) != self.token.encode():
                raise LoadError(f"lost the load lock {self.key}")
            self.client.pexpire(self.key, self.ttl_ms)
            self.renewed = time.monotonic()

    def release(self) -> None:
        self.client.eval(self._RELEASE, 1, self.key, self.token)


def new_version(sequence: int) -> str:
    """A version id unique across Redis restarts: the load's sequence number (readable order)
    and a random suffix. The sequence alone restarts at 1 when Redis loses its data, and a
    service that had adopted the old version 1 would take another snapshot for it unchecked.

    >>> import re; bool(re.fullmatch(r"7-[0-9a-f]{8}", new_version(7)))
    True
    """
    return f"{sequence}-{secrets.token_hex(4)}"


def version_states(client: SyncClient, keys: KeySchema) -> dict[str, dict[str, Any]]:
    raw: dict[bytes, bytes] = client.hgetall(keys.versions)  # type: ignore[assignment]
    return {k.decode(): json.loads(v) for k, v in raw.items()}


def _set_state(client: SyncClient, keys: KeySchema, version: str, state: str) -> None:
    body = {"state": state, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    client.hset(keys.versions, version, json.dumps(body))


def live_version(client: SyncClient, keys: KeySchema) -> str | None:
    raw = client.get(keys.live)
    return None if raw is None else bytes(raw).decode()  # type: ignore[arg-type]


def delete_version(client: SyncClient, keys: KeySchema, version: str, batch: int = 1_000) -> int:
    """Delete every key of a version (SCAN + UNLINK; every shard on a cluster)."""
    deleted = 0
    pending: list[Any] = []
    for key in client.scan_iter(match=f"{keys.prefix(version)}*", count=batch):
        pending.append(key)
        if len(pending) >= batch:
            deleted += int(client.unlink(*pending))
            pending.clear()
    if pending:
        deleted += int(client.unlink(*pending))
    client.hdel(keys.versions, version)
    return deleted


def _write(client: SyncClient, chunk: dict[str, bytes]) -> None:
    if isinstance(client, RedisCluster):
        client.mset_nonatomic(chunk)
    else:
        client.mset(chunk)


def _count_existing(client: SyncClient, names: list[str]) -> int:
    return int(client.exists(*names))


def _write_records(
    snapshot: Snapshot,
    client: SyncClient,
    keys: KeySchema,
    version: str,
    batch: int,
    lock: _Lock,
    progress: Callable[[int], object] | None,
) -> list[str]:
    """MSET every record in chunks, then check that each written key exists."""
    written: list[str] = []
    chunk: dict[str, bytes] = {}
    for key, value in records(snapshot, keys, version):
        chunk[key] = value
        if len(chunk) >= batch:
            _write(client, chunk)
            written += chunk
            if progress is not None:
                progress(len(chunk))
            chunk = {}
            lock.renew()
    if chunk:
        _write(client, chunk)
        written += chunk
        if progress is not None:
            progress(len(chunk))
    found = sum(
        _count_existing(client, written[i : i + batch]) for i in range(0, len(written), batch)
    )
    if found != len(written) or len(written) != record_count(snapshot):
        raise LoadError(
            f"verification failed: wrote {len(written)} of {record_count(snapshot)} records, "
            f"{found} present"
        )
    return written


def load_snapshot(
    snapshot: Snapshot,
    client: SyncClient,
    keys: KeySchema,
    *,
    manifest: Manifest | None = None,
    batch: int = DEFAULT_BATCH,
    lock_ttl_s: float = DEFAULT_LOCK_TTL_S,
    grace_s: float = DEFAULT_GRACE_S,
    progress: Callable[[int], object] | None = None,
) -> LoadResult:
    """Load ``snapshot`` as a new live version (see the module docstring for the steps)."""
    if manifest is not None:
        check_compatible(snapshot.meta, manifest)
    started = time.perf_counter()
    lock = _Lock(client, keys.lock, lock_ttl_s)
    lock.acquire()
    try:
        previous = live_version(client, keys)
        for version, state in version_states(client, keys).items():
            if version != previous:  # left by a killed or failed load (or a retired one)
                log.info("removing version %s left %s", version, state.get("state"))
                delete_version(client, keys, version)
        version = new_version(int(client.incr(keys.sequence)))
        _set_state(client, keys, version, "loading")
        try:
            written = _write_records(snapshot, client, keys, version, batch, lock, progress)
        except BaseException:
            delete_version(client, keys, version)  # a failed load leaves nothing behind
            raise
        meta_body = {
            "snapshot": snapshot.meta.to_dict(),
            "records": RECORD_FORMAT,
            "version": version,
            "keys": len(written),
            "loaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": str(snapshot.folder),
        }
        client.set(keys.meta(version), json.dumps(meta_body))
        lock.renew()
        client.set(keys.live, version)  # the switch
        _set_state(client, keys, version, "live")
        if previous is not None:
            _set_state(client, keys, previous, "retired")
        seconds = time.perf_counter() - started
        if previous is not None:
            time.sleep(grace_s)
            removed = delete_version(client, keys, previous)
            log.info("removed previous version %s (%d keys)", previous, removed)
    finally:
        lock.release()
    return LoadResult(version, previous, len(written) + 1, seconds)
