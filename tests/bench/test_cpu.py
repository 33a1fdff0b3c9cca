"""The bench's CPU accounting: per-process seconds and the machine's ticks from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import redis

from bench.cpu import (
    CpuSample,
    cpu_use,
    describe_cpu,
    local_redis_pid,
    machine_ticks,
    process_cpu_s,
)


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_process_cpu_time_grows_by_what_it_burns_and_a_sleeper_gains_none() -> None:
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert sleeper.stdout is not None and sleeper.stdout.readline() == b"ready\n"
        before_self, before_sleeper = process_cpu_s(os.getpid()), process_cpu_s(sleeper.pid)
        _burn(0.3)
        spent_self = process_cpu_s(os.getpid()) - before_self
        spent_sleeper = process_cpu_s(sleeper.pid) - before_sleeper
    finally:
        sleeper.kill()
        sleeper.communicate()  # reaps it and closes its pipe
    assert 0.2 <= spent_self <= 1.0  # clock ticks are 10 ms; other threads may add a little
    assert spent_sleeper <= 0.02
    assert process_cpu_s(sleeper.pid) == 0.0  # gone (reaped): nothing to read


def test_the_machine_counts_busy_ticks_within_its_total() -> None:
    busy, total = machine_ticks()
    _burn(0.2)
    busy_after, total_after = machine_ticks()
    assert 0 <= busy <= total and total_after > total
    assert busy_after - busy >= 10  # 0.2 s of one core at 100 ticks/s (at least)


def test_cpu_use_is_milliseconds_per_request_and_the_busy_share() -> None:
    before = CpuSample({"service": 1.0, "Redis": 0.5}, busy_ticks=100, total_ticks=400)
    after = CpuSample({"service": 1.3, "Redis": 0.52}, busy_ticks=250, total_ticks=600)
    use = cpu_use(before, after, requests=100)
    assert use == {"ms_per_request": {"service": 3.0, "Redis": 0.2}, "machine_busy": 0.75}
    assert describe_cpu(use) == "CPU ms a request: service 3.00, Redis 0.20; machine 75% busy"


def test_the_local_redis_is_found_and_a_remote_one_is_not(
    redis_prefix: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = redis_prefix
    pid = local_redis_pid(url)
    assert pid is not None
    with open(f"/proc/{pid}/comm") as comm:
        assert comm.read().startswith("redis")

    def elsewhere(self: redis.Redis, section: str) -> dict[str, int]:
        return {"process_id": 2**22 + 7}  # above Linux's pid limit: no such process here

    monkeypatch.setattr(redis.Redis, "info", elsewhere)
    assert local_redis_pid(url) is None
