"""`ranker serve` with several workers, `ranker demo`, and settings from the environment."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cli import main as ranker
from service.index.snapshot import Snapshot
from service.serve import example_request
from service.settings import Settings
from tests.service.conftest import free_port, serve_command, serve_env, wait_until_ready

REPO = Path(__file__).resolve().parents[2]


def test_settings_come_from_ranker_environment_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RANKER_MODELS", "a/1, b/2")
    monkeypatch.setenv("RANKER_ARMS", "prectr:90,vanilla:10")
    monkeypatch.setenv("RANKER_BUCKETS", "8,32")
    monkeypatch.setenv("RANKER_STORE", "redis")
    monkeypatch.setenv("RANKER_DEADLINE_MS", "150")
    settings = Settings()
    assert settings.models == [Path("a/1"), Path("b/2")]
    assert settings.arms == {"prectr": 90.0, "vanilla": 10.0}
    assert settings.buckets == (8, 32) and settings.deadline_ms == 150
    monkeypatch.setenv("RANKER_STORE", "embedded")  # without a snapshot: refused
    with pytest.raises(ValueError, match="RANKER_SNAPSHOT"):
        Settings()


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_add_up_over_several_worker_processes(
    tiny_exports: dict[str, Any], tiny_snapshot: Snapshot, tmp_path: Path, workers: int
) -> None:
    """Also for one worker (the image's default): it runs in the server process, which must
    not define a metric before the folder is emptied (its file would be deleted under it)."""
    port = free_port()
    package = tiny_exports["vanilla"].package.folder
    env = serve_env(package, tiny_snapshot.folder, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    command = serve_command(port, "--workers", str(workers))
    with subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True) as server:
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(base, lambda: server.poll() is None)
            body = example_request(tiny_snapshot.folder, candidates=5)
            with httpx.Client(base_url=base) as client:  # a new connection can hit either worker
                for _ in range(40):
                    assert httpx.post(f"{base}/rank", json=body).status_code == 200
                exposition = client.get("/metrics").text
                ready = [
                    line for line in exposition.splitlines() if line.startswith("ranker_ready{")
                ]
        finally:
            server.terminate()
            server.wait(timeout=20)
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("ranker_requests_total{") and 'status="200"' in line
    )
    assert total == 40
    assert len(list(tmp_path.glob("counter_*.db"))) == workers  # each wrote its counters
    assert ready  # readiness is reported per worker process (label pid)


def _workers_of(server_pid: int) -> list[int]:
    """The uvicorn worker processes of a server (children started by multiprocessing spawn)."""
    workers = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server_pid and b"spawn_main" in cmdline:
            workers.append(int(entry.name))
    return sorted(workers)


def _ready_by_pid(exposition: str) -> dict[int, float]:
    ready = {}
    for line in exposition.splitlines():
        if line.startswith("ranker_ready{"):
            pid = line.split('pid="', 1)[1].split('"', 1)[0]
            ready[int(pid)] = float(line.rsplit(" ", 1)[1])
    return ready


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads worker pids from /proc")
def test_a_killed_worker_leaves_no_ready_series_behind(
    tiny_exports: dict[str, Any], tiny_snapshot: Snapshot, tmp_path: Path
) -> None:
    """kill -9 of a worker: uvicorn respawns it, and ranker_ready has one series per live
    worker, every one 1 (the dead pid's file is dropped); files of an earlier run are gone."""
    stale = tmp_path / "gauge_liveall_1.db"
    stale.write_bytes(b"left by an earlier run")
    port = free_port()
    package = tiny_exports["vanilla"].package.folder
    env = serve_env(package, tiny_snapshot.folder, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    command = serve_command(port, "--workers", "2")
    with subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.DEVNULL) as server:
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(base, lambda: server.poll() is None)
            assert not stale.exists()
            before = _workers_of(server.pid)
            assert len(before) == 2
            os.kill(before[0], signal.SIGKILL)
            deadline = time.monotonic() + 60
            while True:
                after = _workers_of(server.pid)
                ready = _ready_by_pid(httpx.get(f"{base}/metrics").text)
                if len(after) == 2 and before[0] not in after and sorted(ready) == after:
                    break
                assert time.monotonic() < deadline, f"workers {after}, ready series {ready}"
                time.sleep(0.2)
        finally:
            server.terminate()
            server.wait(timeout=20)
    assert before[0] not in ready
    assert set(ready.values()) == {1.0}


def test_demo_serves_and_answers_the_example_request(
    tiny_exports: dict[str, Any], tiny_snapshot: Snapshot, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tiny_exports["prectr"].package.folder.parent.parent
    argv = ["demo", "--packages", str(root), "--version", "1", "--snapshot"]
    argv += [str(tiny_snapshot.folder), "--port", str(free_port()), "--exit-after-request"]
    assert ranker(argv) == 0
    out = capsys.readouterr().out
    assert "POST http://127.0.0.1:" in out and "-> 200" in out
    assert '"explain"' in out and "unknown_item" in out
