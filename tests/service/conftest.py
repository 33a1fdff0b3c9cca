"""Service fixtures: settings over the tiny packages and snapshot, a private Redis server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import uvicorn

from service.app import create_app
from service.index.snapshot import Snapshot
from service.settings import Settings
from training.data.graded_csv import CsvColumns


@pytest.fixture
def make_settings(tiny_exports: dict[str, Any], tiny_snapshot: Snapshot) -> Callable[..., Settings]:
    """Settings serving both tiny models over the embedded store, with overrides."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "models": [
                tiny_exports["prectr"].package.folder,
                tiny_exports["vanilla"].package.folder,
            ],
            "default_model": "prectr",
            "store": "embedded",
            "snapshot": tiny_snapshot.folder,
            "device": "cpu",
            "buckets": (16, 64, 256),
            "admin_token": "secret",
            # enforced (504 past it): generous, so a loaded CI machine does not turn a test
            # about something else into a deadline test; the deadline tests set their own
            "deadline_ms": 5_000,
        }
        values.update(overrides)
        return Settings(**values)

    return build


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Loopback only, nothing on disk, DEBUG allowed (the slow-Redis test sends DEBUG SLEEP).
REDIS_FLAGS = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
REDIS_FLAGS += ("--enable-debug-command", "yes")


def wait_for_redis(port: int, timeout_s: float = 10, password: str | None = None) -> None:
    """Until a redis-server on loopback answers PING."""
    client = redis.Redis(host="127.0.0.1", port=port, password=password)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, f"redis-server on {port} did not start"
                time.sleep(0.05)
    finally:
        client.close()


def serve_env(package: Path, snapshot: Path, **extra: str) -> dict[str, str]:
    """The environment of a `ranker serve` subprocess over one package and the embedded store."""
    return {
        **os.environ,
        "RANKER_MODELS": str(package),
        "RANKER_SNAPSHOT": str(snapshot),
        "RANKER_DEVICE": "cpu",
        **extra,
    }


def serve_command(port: int, *flags: str) -> list[str]:
    """`ranker serve` on ``port`` with ``flags``, as a subprocess runs it."""
    return [sys.executable, "-m", "service.cli", "serve", "--port", str(port), *flags]


def wait_until_ready(base: str, alive: Callable[[], bool], timeout_s: float = 90) -> None:
    """Until the service at ``base`` answers /readyz with 200 (``alive``: its process runs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert alive() and time.monotonic() < deadline, f"the service at {base} did not start"
        time.sleep(0.1)


class RedisServer:
    """A redis-server process of the test's own (it may be stopped and started again)."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        self.folder, self.port, self.password = folder, free_port(), password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                *REDIS_FLAGS,
                *(("--requirepass", self.password) if self.password else ()),
            ],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
        )
        wait_for_redis(self.port, password=self.password)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def redis_settings(make_settings: Callable[..., Settings], private_redis: RedisServer) -> Settings:
    """Both tiny models over the test's own Redis, with a short store budget and deadline."""
    return make_settings(
        store="redis", redis_url=private_redis.url, store_timeout_ms=150, deadline_ms=2_000
    )


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server only this test talks to (so it can stop it); skipped without the binary."""
    import os

    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required in CI")
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@contextmanager
def live_server(settings: Settings) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            http="service.protocol:HeadTimeoutProtocol",  # as `ranker serve` runs it
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(base, thread.is_alive)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def write_catalogue_csv(path: Path) -> None:
    """30 queries x 12 products with ids like "SKU-00017"; every tenth product shares its
    title with the one before (two products, one title), as real catalogues have."""
    rng = np.random.default_rng(0)
    lines = ["search_term,product_uid,product_title,relevance"]
    for q in range(30):
        for k in range(12):
            uid = q * 12 + k
            title = f"product {uid - 1 if uid % 10 == 0 and uid else uid} for need {q % 7}"
            grade = round(float(rng.uniform(1, 3)), 2)
            lines.append(f"need {q} query,SKU-{uid:05d},{title},{grade}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


#: How `write_catalogue_csv`'s columns map onto the importer's fields.
CATALOGUE_COLUMNS = CsvColumns(
    query="search_term",
    title="product_title",
    text=None,
    grade="relevance",
    item_id="product_uid",
)
