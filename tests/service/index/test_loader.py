"""The index loader against real Redis: versions, the atomic switch, kills, refusals, clusters."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from redis.cluster import RedisCluster

from service.cli import main as ranker
from service.index.keys import KeySchema
from service.index.loader import (
    IndexMismatch,
    LoadError,
    live_version,
    load_snapshot,
    record_count,
    records,
    version_states,
)
from service.index.snapshot import Snapshot
from service.package import ModelPackage
from service.store import EmbeddedStore, RedisStore
from tests.service.conftest import wait_for_redis

REPO = Path(__file__).resolve().parents[3]


def _version_complete(client: Any, snapshot: Snapshot, keys: KeySchema, version: str) -> bool:
    names = [key for key, _ in records(snapshot, keys, version)] + [keys.meta(version)]
    found = sum(int(client.exists(*names[i : i + 500])) for i in range(0, len(names), 500))
    return found == record_count(snapshot) + 1


def _keys_of(client: Any, keys: KeySchema, version: str) -> int:
    return sum(1 for _ in client.scan_iter(match=f"{keys.prefix(version)}*", count=1000))


def _versions_with_keys(client: Any, keys: KeySchema) -> set[str]:
    """Every version id some key of the namespace is stored under."""
    found = set()
    for key in client.scan_iter(match=f"{keys.namespace}:*", count=1000):
        part = key.decode().removeprefix(f"{keys.namespace}:").split(":", 1)
        if len(part) == 2 and re.fullmatch(r"\d+-[0-9a-f]{8}", part[0]):
            found.add(part[0])
    return found


def test_load_switches_versions_and_deletes_the_previous_one(
    tiny_snapshot: Snapshot, redis_prefix: tuple[str, str]
) -> None:
    url, prefix = redis_prefix
    keys, client = KeySchema(prefix), redis.Redis.from_url(url)
    first = load_snapshot(tiny_snapshot, client, keys, grace_s=0)
    assert first.previous is None and live_version(client, keys) == first.version
    assert _version_complete(client, tiny_snapshot, keys, first.version)
    second = load_snapshot(tiny_snapshot, client, keys, grace_s=0)
    assert second.previous == first.version and live_version(client, keys) == second.version
    assert _keys_of(client, keys, first.version) == 0
    assert _version_complete(client, tiny_snapshot, keys, second.version)
    states = version_states(client, keys)
    assert list(states) == [second.version] and states[second.version]["state"] == "live"
    assert first.keys == record_count(tiny_snapshot) + 1
    client.close()


_SLOW_LOADER = """
import sys, time
from pathlib import Path
import redis
from service.index.keys import KeySchema
from service.index.loader import load_snapshot
from service.index.snapshot import Snapshot

def slow(n):
    print("WRITING", flush=True)
    time.sleep(0.2)

load_snapshot(Snapshot(Path(sys.argv[1])), redis.Redis.from_url(sys.argv[2]),
              KeySchema(sys.argv[3]), batch=50, lock_ttl_s=1.0, grace_s=0, progress=slow)
"""


def test_a_load_killed_midway_leaves_the_previous_version_live_and_complete(
    tiny_snapshot: Snapshot, redis_prefix: tuple[str, str]
) -> None:
    url, prefix = redis_prefix
    keys, client = KeySchema(prefix), redis.Redis.from_url(url)
    first = load_snapshot(tiny_snapshot, client, keys, grace_s=0)

    with subprocess.Popen(
        [sys.executable, "-c", _SLOW_LOADER, str(tiny_snapshot.folder), url, prefix],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as loader:
        assert loader.stdout is not None
        for _ in range(3):  # a few chunks are in Redis
            assert loader.stdout.readline().strip() == "WRITING"
        loader.send_signal(signal.SIGKILL)
        loader.wait(timeout=10)

    assert live_version(client, keys) == first.version
    assert _version_complete(client, tiny_snapshot, keys, first.version)
    loading = [v for v, s in version_states(client, keys).items() if s["state"] == "loading"]
    assert len(loading) == 1  # the killed load's version, never switched to
    partial = loading[0]
    assert 0 < _keys_of(client, keys, partial) < record_count(tiny_snapshot)
    assert client.get(keys.meta(partial)) is None  # never completed, never pointed to

    async def read() -> str:
        store = RedisStore.from_url(url, namespace=prefix)
        try:
            user, query = tiny_snapshot.user_key[0], tiny_snapshot.query_text[1]
            features = await store.fetch(user, query, [tiny_snapshot.item_key[0]])
            assert features.candidates.item_known.all()
            return features.index_version
        finally:
            await store.close()

    assert asyncio.run(read()) == first.version

    deadline = time.monotonic() + 10  # the killed loader's lock expires by itself
    while client.exists(keys.lock) and time.monotonic() < deadline:
        time.sleep(0.1)
    third = load_snapshot(tiny_snapshot, client, keys, grace_s=0)
    assert _keys_of(client, keys, partial) == 0  # the orphan was cleaned up
    assert live_version(client, keys) == third.version
    client.close()


def test_a_failing_load_removes_its_partial_version(
    tiny_snapshot: Snapshot, redis_prefix: tuple[str, str]
) -> None:
    url, prefix = redis_prefix
    keys, client = KeySchema(prefix), redis.Redis.from_url(url)
    first = load_snapshot(tiny_snapshot, client, keys, grace_s=0)
    written = 0

    def fail_midway(n: int) -> None:
        nonlocal written
        written += n
        if written > 200:
            raise ConnectionError("network gone")

    with pytest.raises(ConnectionError):
        load_snapshot(tiny_snapshot, client, keys, batch=100, grace_s=0, progress=fail_midway)
    assert live_version(client, keys) == first.version
    assert _versions_with_keys(client, keys) == {first.version}  # the failed one left nothing
    assert not client.exists(keys.lock)
    assert _version_complete(client, tiny_snapshot, keys, first.version)
    client.close()


def test_a_second_loader_is_refused_while_one_holds_the_lock(
    tiny_snapshot: Snapshot, redis_prefix: tuple[str, str]
) -> None:
    url, prefix = redis_prefix
    keys, client = KeySchema(prefix), redis.Redis.from_url(url)
    client.set(keys.lock, "someone-else", px=5_000)
    with pytest.raises(LoadError, match="another load"):
        load_snapshot(tiny_snapshot, client, keys, grace_s=0)
    assert live_version(client, keys) is None
    client.close()


def test_a_snapshot_of_another_text_tower_is_refused_before_any_write(
    tiny_snapshot: Snapshot,
    tiny_exports: dict[str, Any],
    redis_prefix: tuple[str, str],
    tmp_path: Path,
) -> None:
    url, prefix = redis_prefix
    keys, client = KeySchema(prefix), redis.Redis.from_url(url)
    manifest = tiny_exports["prectr"].package.manifest
    load_snapshot(tiny_snapshot, client, keys, manifest=manifest, grace_s=0)  # it matches

    other = tmp_path / "other"
    shutil.copytree(tiny_snapshot.folder, other)
    meta_file = other / "meta.json"
    meta_file.write_text(
        meta_file.read_text().replace(tiny_snapshot.meta.text_tower_fingerprint, "f" * 64)
    )
    before = live_version(client, keys)
    with pytest.raises(IndexMismatch, match="text tower"):
        load_snapshot(Snapshot(other), client, keys, manifest=manifest, grace_s=0)
    assert live_version(client, keys) == before
    assert _versions_with_keys(client, keys) == ({before} if before else set())

    code = ranker(
        [
            "index",
            "load",
            str(other),
            "--redis",
            url,
            "--namespace",
            prefix,
            "--model",
            str(tiny_exports["prectr"].package.folder),
        ]
    )
    assert code == 1
    client.close()


def test_the_cli_loads_and_prints_its_rate(
    tiny_snapshot: Snapshot,
    tiny_exports: dict[str, Any],
    redis_prefix: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, prefix = redis_prefix
    package: ModelPackage = tiny_exports["vanilla"].package
    argv = ["index", "load", str(tiny_snapshot.folder), "--redis", url, "--namespace", prefix]
    assert ranker([*argv, "--model", str(package.folder), "--grace", "0"]) == 0
    out = capsys.readouterr().out
    assert "keys/s" in out and "as version" in out
    assert ranker(["index", "status", "--redis", url, "--namespace", prefix]) == 0
    assert '"live"' in capsys.readouterr().out


def _command_calls(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_info"
    }


async def test_one_request_for_200_candidates_is_one_round_trip(
    tiny_snapshot: Snapshot, redis_prefix: tuple[str, str]
) -> None:
    url, prefix = redis_prefix
    client = redis.Redis.from_url(url)
    load_snapshot(tiny_snapshot, client, KeySchema(prefix), grace_s=0)
    store = RedisStore.from_url(url, namespace=prefix)
    items = tiny_snapshot.item_key.to_list()[:200]
    user, query = tiny_snapshot.user_key[3], tiny_snapshot.query_text[2]
    try:
        await store.fetch(user, query, items[:1])  # the first fetch reads the live version
        before = _command_calls(client)
        features = await store.fetch(user, query, items)
        after = _command_calls(client)
    finally:
        await store.close()
        client.close()
    assert features.candidates.item_known.sum() == 200
    delta = {name: calls - before.get(name, 0) for name, calls in after.items()}
    assert {name: d for name, d in delta.items() if d} == {"mget": 1}


async def test_the_store_follows_the_pointer_to_a_new_version(
    tiny_snapshot: Snapshot, redis_prefix: tuple[str, str]
) -> None:
    url, prefix = redis_prefix
    keys, client = KeySchema(prefix), redis.Redis.from_url(url)
    first = load_snapshot(tiny_snapshot, client, keys, grace_s=0)
    store = RedisStore.from_url(url, namespace=prefix)
    user, query, items = tiny_snapshot.user_key[0], tiny_snapshot.query_text[1], ["i1"]
    try:
        assert (await store.fetch(user, query, items)).index_version == first.version
        loading = asyncio.create_task(
            asyncio.to_thread(load_snapshot, tiny_snapshot, client, keys, grace_s=1.0)
        )
        while live_version(client, keys) == first.version:
            await asyncio.sleep(0.02)
        # switched, the old version is still there (grace): answered from it, refresh started
        assert (await store.fetch(user, query, items)).index_version == first.version
        await asyncio.sleep(0.3)
        second = live_version(client, keys)
        assert (await store.fetch(user, query, items)).index_version == second
        await loading
        # a third load without grace deletes the version the store holds: it follows at once
        third = load_snapshot(tiny_snapshot, client, keys, grace_s=0)
        assert (await store.fetch(user, query, items)).index_version == third.version
    finally:
        await store.close()
        client.close()


# --- Redis Cluster ---------------------------------------------------------------------------


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports(n: int) -> list[int]:
    """Free ports whose cluster-bus twins (port + 10000) are free too; Redis needs <= 55535."""
    rng = np.random.default_rng(os.getpid())
    ports: list[int] = []
    while len(ports) < n:
        port = int(rng.integers(20_000, 45_000))
        if port not in ports and _is_free(port) and _is_free(port + 10_000):
            ports.append(port)
    return ports


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Three real redis-server masters in cluster mode on loopback, torn down after."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server and redis-cli are required in CI")
        pytest.skip("redis-server not installed")
    folder = tmp_path_factory.mktemp("cluster")
    ports = _cluster_ports(3)
    nodes = [
        subprocess.Popen(
            [
                server,
                "--port",
                str(p),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{p}.conf",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=folder,
            stdout=subprocess.DEVNULL,
        )
        for p in ports
    ]
    try:
        for p in ports:
            wait_for_redis(p)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 20
        while redis.Redis(host="127.0.0.1", port=ports[0]).cluster("info")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, "the test cluster did not come up"
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.wait(timeout=10)


async def test_load_and_fetch_on_redis_cluster(tiny_snapshot: Snapshot, redis_cluster: str) -> None:
    keys = KeySchema("cluster-test")
    client = RedisCluster.from_url(redis_cluster)
    first = load_snapshot(tiny_snapshot, client, keys, grace_s=0)
    second = load_snapshot(tiny_snapshot, client, keys, grace_s=0)
    assert live_version(client, keys) == second.version
    assert _keys_of(client, keys, first.version) == 0
    assert _version_complete(client, tiny_snapshot, keys, second.version)
    shards = {
        client.keyslot(k) // 5462 for k, _ in list(records(tiny_snapshot, keys, second.version))
    }
    assert len(shards) == 3  # the version spreads over every shard
    client.close()

    store = RedisStore.from_url(redis_cluster, namespace="cluster-test", cluster=True)
    embedded = EmbeddedStore(tiny_snapshot)
    items = [*tiny_snapshot.item_key.to_list()[:100], "missing"]
    user, query = tiny_snapshot.user_key[5], tiny_snapshot.query_text[4]
    try:
        got, want = await store.fetch(user, query, items), embedded.fetch_now(user, query, items)
    finally:
        await store.close()
    assert got.index_version == second.version and got.misses == want.misses
    np.testing.assert_array_equal(got.candidates.pair_vec, want.candidates.pair_vec)
    np.testing.assert_array_equal(got.user.history_query_vec, want.user.history_query_vec)
