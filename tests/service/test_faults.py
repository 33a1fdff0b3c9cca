"""Faults under traffic, on a live server and a Redis of the test's own (loopback only, bounded):
Redis killed during traffic, killed during an index load, and slowed by DEBUG SLEEP. The service
must stay up, answer every request with a valid ranking or a valid problem+json, and recover."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import redis

from service.index.keys import KeySchema
from service.index.loader import live_version, load_snapshot
from service.index.snapshot import Snapshot
from service.settings import Settings
from tests.service.conftest import RedisServer, live_server

MakeSettings = Callable[..., Settings]


def _body(s: Snapshot, user: int) -> dict[str, Any]:
    return {
        "user_id": s.user_key[user % len(s.user_key)],
        "query": s.query_text[1 + user % (len(s.query_text) - 1)],
        "candidates": [{"item_id": s.item_key[i]} for i in range(user % 7, user % 7 + 30)],
    }


class Traffic:
    """Requests from a few threads until stopped; every answer is checked and kept."""

    def __init__(self, base: str, snapshot: Snapshot, threads: int = 3) -> None:
        self.base, self.snapshot = base, snapshot
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in range(threads)]

    def _run(self, k: int) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                try:
                    response = client.post("/rank", json=_body(self.snapshot, 31 * k + i))
                except httpx.HTTPError as err:  # a hang or a dropped connection
                    self.failures.append(f"transport: {err!r}")
                    continue
                problem = self.check(response)
                if problem:
                    self.failures.append(problem)
                self.answers.append((response.status_code, response.json()))

    @staticmethod
    def check(response: httpx.Response) -> str:
        if response.status_code == 200:
            items = response.json()["items"]
            scores = [item["score"] for item in items]
            if len(items) != 30 or not all(math.isfinite(s) for s in scores):
                return f"bad ranking: {response.text[:200]}"
            return ""
        if response.headers.get("content-type") != "application/problem+json":
            return f"{response.status_code} without problem+json: {response.text[:200]}"
        return f"unexpected problem {response.status_code}: {response.json().get('code')}"

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=20)

    def degraded(self, reason: str) -> int:
        return sum(1 for _, out in self.answers if reason in out.get("degraded", []))

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, "the expected answers did not come"
            time.sleep(0.05)


def _load(server: RedisServer, snapshot: Snapshot, **kwargs: Any) -> Any:
    client = redis.Redis.from_url(server.url)
    try:
        return load_snapshot(snapshot, client, KeySchema("rank"), grace_s=0, **kwargs)
    finally:
        client.close()


def test_redis_killed_during_traffic(
    redis_settings: Settings, tiny_snapshot: Snapshot, private_redis: RedisServer
) -> None:
    _load(private_redis, tiny_snapshot)
    with live_server(redis_settings) as base, Traffic(base, tiny_snapshot) as traffic:
        traffic.wait_for(lambda: len(traffic.answers) >= 20)
        healthy = len(traffic.answers)
        private_redis.stop()
        traffic.wait_for(lambda: traffic.degraded("store_unavailable") >= 20)
        private_redis.start()
        _load(private_redis, tiny_snapshot)
        recovered_after = len(traffic.answers)
        traffic.wait_for(
            lambda: any(not out["degraded"] for _, out in traffic.answers[recovered_after:])
        )
        assert httpx.get(f"{base}/readyz").status_code == 200
    assert traffic.failures == []
    assert healthy >= 20 and {status for status, _ in traffic.answers} == {200}


def test_redis_killed_during_an_index_load(
    redis_settings: Settings, tiny_snapshot: Snapshot, private_redis: RedisServer
) -> None:
    first = _load(private_redis, tiny_snapshot)
    killed = threading.Event()
    errors: list[BaseException] = []

    def kill_midway(_: int) -> None:
        if not killed.is_set():
            killed.set()
            private_redis.stop()

    def load() -> None:
        try:
            _load(private_redis, tiny_snapshot, batch=100, progress=kill_midway)
        except BaseException as err:  # what the loader raises is the point
            errors.append(err)

    with live_server(redis_settings) as base, Traffic(base, tiny_snapshot) as traffic:
        traffic.wait_for(lambda: len(traffic.answers) >= 10)
        loader = threading.Thread(target=load)
        loader.start()
        loader.join(timeout=30)
        assert len(errors) == 1 and isinstance(errors[0], redis.ConnectionError)
        traffic.wait_for(lambda: traffic.degraded("store_unavailable") >= 10)
        private_redis.start()  # empty: nothing is kept on disk; the snapshot is the source
        again = _load(private_redis, tiny_snapshot)
        count = len(traffic.answers)
        traffic.wait_for(lambda: any(not o["degraded"] for _, o in traffic.answers[count:]))
    client = redis.Redis.from_url(private_redis.url)
    assert live_version(client, KeySchema("rank")) == again.version
    client.close()
    assert first.version and traffic.failures == []


def test_redis_slowed_by_debug_sleep(
    redis_settings: Settings, tiny_snapshot: Snapshot, private_redis: RedisServer
) -> None:
    _load(private_redis, tiny_snapshot)
    with live_server(redis_settings) as base, Traffic(base, tiny_snapshot) as traffic:
        traffic.wait_for(lambda: len(traffic.answers) >= 10)
        admin = redis.Redis.from_url(private_redis.url)
        for _ in range(3):
            admin.execute_command("DEBUG", "SLEEP", "0.6")  # Redis answers nobody meanwhile
        admin.close()
        count = len(traffic.answers)
        traffic.wait_for(lambda: any(not o["degraded"] for _, o in traffic.answers[count:]))
        assert httpx.get(f"{base}/readyz").status_code == 200
    timeouts = traffic.degraded("store_timeout")
    assert timeouts >= 3, f"only {timeouts} answers degraded by the sleeps"
    totals = [out["timing_ms"]["total"] for _, out in traffic.answers]
    assert np.isfinite(totals).all() and traffic.failures == []
