"""Write the index snapshot of a world (format: service/index/snapshot.py).

It holds the text tower's reduced fp16 vectors of the world's queries, items and labelled
(query, item) pairs, the items' and users' features, each user's last 50 search clicks as
(query vector, pair vector), sorted-hash lookups, and the faiss index of the queries' lexical
vectors. It is written to a temporary folder and renamed into place when complete.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.contract import (
    HISTORY_LENGTH,
    csr,
    item_hashes,
    item_term_hashes,
    normalize_text,
)
from service.index.lexical import LEXICAL_DIM, build_index, lexical_vectors, serialize_index
from service.index.snapshot import (
    META_FILE,
    SNAPSHOT_FORMAT,
    VECTOR_DTYPE,
    LookupKind,
    Snapshot,
    SnapshotError,
    SnapshotMeta,
    StringColumn,
    key_hashes,
    pair_key,
)
from training.data.tables import World
from training.features import ReducedVectors, find_pairs
from training.tower import TowerSettings, tower_folder, tower_meta, train_text_tower

log = logging.getLogger(__name__)

#: Default similarity a lexical neighbour needs before its vector stands in for an unseen query.
DEFAULT_MATCH_THRESHOLD = 0.6


def _ints(values: npt.NDArray[Any]) -> npt.NDArray[np.int32]:
    return np.asarray(values, dtype=np.int32)


def _write_lookup(folder: Path, kind: LookupKind, keys: list[str]) -> None:
    hashes = key_hashes(kind, keys)
    order = np.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    if len(sorted_hashes) > 1 and bool((np.diff(sorted_hashes) == 0).any()):
        raise SnapshotError(f"duplicate or colliding {kind} ids: every {kind} id must be unique")
    np.save(folder / f"{kind}_hash.npy", sorted_hashes)
    np.save(folder / f"{kind}_row.npy", order.astype(np.int64))


def user_histories(
    world: World, vectors: ReducedVectors
) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any], npt.NDArray[Any]]:
    """Each user's last HISTORY_LENGTH search clicks: offsets (U + 1,), query and pair vectors."""
    clicks = world.clicks
    users = clicks["user_id"].astype(np.int64)  # sorted by (user, time)
    n_users = world.users.n_rows
    end = np.searchsorted(users, np.arange(n_users), side="right")
    start = np.maximum(
        np.searchsorted(users, np.arange(n_users), side="left"), end - HISTORY_LENGTH
    )
    rows = np.concatenate([np.arange(s, e) for s, e in zip(start, end, strict=True)]).astype(
        np.int64
    )
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(end - start, out=offsets[1:])
    pair_row = find_pairs(world, clicks["query_id"][rows], clicks["item_id"][rows])
    query_vec = vectors.queries[clicks["query_id"][rows]].astype(VECTOR_DTYPE)
    pair_vec = vectors.pairs[np.maximum(pair_row, 0)].astype(VECTOR_DTYPE)
    pair_vec[pair_row < 0] = 0  # as in training: a history click without a pair vector is zeros
    return offsets, query_vec, pair_vec


def write_snapshot(
    world_dir: Path,
    settings: TowerSettings,
    out: Path,
    *,
    match_threshold: float = DEFAULT_MATCH_THRESHOLD,
) -> Snapshot:
    """Build the snapshot of ``world_dir`` with the text tower of ``settings`` into ``out``."""
    started = time.perf_counter()
    if out.exists():
        raise SnapshotError(f"{out} exists; snapshots are immutable, choose a new folder")
    world = World.load(world_dir, mmap=True)
    vectors = train_text_tower(world, world_dir, settings)  # cached: loads what training made
    tower = tower_meta(world_dir, settings)
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        query_texts = [normalize_text(str(t)) for t in world.queries["text"]]
        _write_tables(world, vectors, query_texts, staging)
        (staging / "lexical").mkdir()
        index = build_index(lexical_vectors(query_texts, LEXICAL_DIM))
        (staging / "lexical" / "queries.faiss").write_bytes(serialize_index(index))
        world_meta = json.loads((world_dir / "world.json").read_text())
        meta = SnapshotMeta(
            format=SNAPSHOT_FORMAT,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            text_dim=vectors.dim,
            vector_dtype=np.dtype(VECTOR_DTYPE).name,
            history_length=HISTORY_LENGTH,
            encoder_fingerprint=str(tower["encoder_fingerprint"]),
            text_tower_fingerprint=str(tower["fingerprint"]),
            counts={
                "queries": world.queries.n_rows,
                "items": world.items.n_rows,
                "users": world.users.n_rows,
                "pairs": world.pairs.n_rows,
                "history": len(np.load(staging / "history" / "query_vec.npy", mmap_mode="r")),
            },
            lexical={
                "dim": LEXICAL_DIM,
                "threshold": match_threshold,
                "index": type(index).__name__,
            },
            source={
                "world": str(world_dir),
                "tower": tower_folder(world_dir, settings).name,
                **{k: world_meta.get(k) for k in ("source", "size", "seed")},
            },
        )
        (staging / META_FILE).write_text(meta.to_json() + "\n", encoding="utf-8")
        Snapshot(staging)  # read back: counts and every file present
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("snapshot %s written in %.1fs: %s", out, time.perf_counter() - started, meta.counts)
    return Snapshot(out)


def _write_tables(
    world: World, vectors: ReducedVectors, query_texts: list[str], folder: Path
) -> None:
    for sub in ("queries", "items", "users", "history", "pairs", "lookup"):
        (folder / sub).mkdir(parents=True)
    queries, items, users, pairs = world.queries, world.items, world.users, world.pairs
    StringColumn.write(folder / "queries", "text", query_texts)
    np.save(folder / "queries" / "category.npy", _ints(queries["category"]))
    np.save(folder / "queries" / "vec.npy", vectors.queries.astype(VECTOR_DTYPE))

    item_keys = [str(k) for k in items["item_key"]]
    StringColumn.write(folder / "items", "key", item_keys)
    StringColumn.write(folder / "items", "title", [str(t) for t in items["title"]])
    StringColumn.write(folder / "items", "text", [str(t) for t in items["text"]])
    for column in ("category", "brand", "price_bucket"):
        np.save(folder / "items" / f"{column}.npy", _ints(items[column]))
    hashes = np.array(
        [item_hashes(key, int(b)) for key, b in zip(item_keys, items["brand"], strict=True)],
        dtype=np.uint64,
    ).reshape(-1, 2)
    np.save(folder / "items" / "id_hash.npy", np.ascontiguousarray(hashes[:, 0]))
    np.save(folder / "items" / "brand_hash.npy", np.ascontiguousarray(hashes[:, 1]))
    np.save(folder / "items" / "vec.npy", vectors.items.astype(VECTOR_DTYPE))
    terms = [
        item_term_hashes(str(title), str(text))
        for title, text in zip(items["title"], items["text"], strict=True)
    ]
    for part, runs in (("title", [t[0] for t in terms]), ("text", [t[1] for t in terms])):
        flat, offsets = csr(runs)
        np.save(folder / "items" / f"{part}_terms.npy", flat)
        np.save(folder / "items" / f"{part}_terms_offsets.npy", offsets)

    user_keys = [str(k) for k in users["user_key"]]
    StringColumn.write(folder / "users", "key", user_keys)
    for column in ("age", "gender", "city_tier"):
        np.save(folder / "users" / f"{column}.npy", _ints(users[column]))
    offsets, history_query, history_pair = user_histories(world, vectors)
    np.save(folder / "users" / "history_offsets.npy", offsets)
    np.save(folder / "history" / "query_vec.npy", history_query)
    np.save(folder / "history" / "pair_vec.npy", history_pair)

    keys = pair_key(pairs["query_id"], pairs["item_id"], items.n_rows)
    order = np.argsort(keys, kind="stable")
    np.save(folder / "pairs" / "key.npy", keys[order])
    np.save(folder / "pairs" / "query.npy", _ints(pairs["query_id"][order]))
    np.save(folder / "pairs" / "item.npy", _ints(pairs["item_id"][order]))
    np.save(folder / "pairs" / "vec.npy", vectors.pairs[order].astype(VECTOR_DTYPE))

    _write_lookup(folder / "lookup", "query", query_texts)
    _write_lookup(folder / "lookup", "item", item_keys)
    _write_lookup(folder / "lookup", "user", user_keys)
