"""The service under test: `ranker serve` started in its own process, its memory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.config import BenchConfig

REPO = Path(__file__).resolve().parents[1]


class ServiceProcess:
    """`ranker serve` as a child process over the Redis index (what production runs)."""

    def __init__(self, env: dict[str, str], workers: int, port: int) -> None:
        self.port, self.base = port, f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
        command += ["--workers", str(workers), "--log-level", "warning"]
        self.process = subprocess.Popen(command, env={**os.environ, **env}, cwd=REPO)

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the service exited during startup")
            try:
                if httpx.get(f"{self.base}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the service did not become ready")

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(p) for p in children.read_text().split()] if children.is_file() else []
        return pids or [self.process.pid]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def pin_process(pid: int, cores: set[int]) -> None:
    """Every thread of process ``pid`` (those it will start inherit it) on ``cores`` only."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cores)


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def torch_mapped(pid: int) -> bool:
    """Whether any torch library is mapped into the process (imported, even indirectly)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtorch" in maps or "/torch/" in maps


@contextmanager
def serving(
    config: BenchConfig,
    namespace: str,
    workers: int,
    port: int,
    inference_threads: int = 1,
    item_cache_mb: float = 0,
    production_limits: bool = False,
    embedded: bool = False,
) -> Iterator[ServiceProcess]:
    """`ranker serve` on the bench's namespace (``embedded``: on the snapshot itself, memory-
    mapped in the worker, no Redis). Generous deadline and store timeout unless
    ``production_limits`` (the service's defaults: the past-saturation points)."""
    env = {
        "RANKER_ITEM_CACHE_MB": str(item_cache_mb),
        # absolute: the service runs in the source folder, the paths are the caller's
        "RANKER_MODELS": ",".join(str(p.resolve()) for p in config.packages.values()),
        "RANKER_INFERENCE_THREADS": str(inference_threads),
        "RANKER_DEFAULT_MODEL": next(iter(config.packages)),
        "RANKER_STORE": "redis",
        "RANKER_REDIS_URL": config.redis_url,
        "RANKER_NAMESPACE": namespace,
        "RANKER_DEVICE": "auto",
        "RANKER_ENABLE_ECHO": "true",
        "RANKER_MAX_CANDIDATES": "2000",
        "RANKER_STORE_TIMEOUT_MS": "2000",
        "RANKER_DEADLINE_MS": "5000",
    }
    if embedded:
        env["RANKER_STORE"] = "embedded"
        env["RANKER_SNAPSHOT"] = str(config.snapshot.resolve())
    if production_limits:
        for name in ("RANKER_STORE_TIMEOUT_MS", "RANKER_DEADLINE_MS", "RANKER_MAX_CANDIDATES"):
            env.pop(name)
    # Multiprocess metrics, as the image runs them (a fresh folder: stale files would add up).
    metrics_dir = (config.out / f"metrics-{uuid.uuid4().hex[:8]}").resolve()  # the caller's path
    metrics_dir.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    service = ServiceProcess(env, workers, port)
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
