"""What the processes of a bench spend of the cores, read from /proc (Linux).

An open-loop point says per ranking how many CPU milliseconds the service, Redis and the load
generator took, and how busy the whole machine was: on a machine they share, that tells a
service that saturates from a load generator (or a Redis) that does, and what a faster service
could still gain before the machine itself is the limit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: /proc/stat's "cpu" line: user nice system idle iowait irq softirq steal ...; idle and iowait
#: are the time no core worked.
_IDLE_FIELDS = (3, 4)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds that process ``pid`` (all its threads) has used (0.0: gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # After the command name (which may hold spaces): field 3 (state) first; utime and stime
    # are fields 14 and 15.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every core since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = sum(values[i] for i in _IDLE_FIELDS if i < len(values))
    return sum(values) - idle, sum(values)


def local_redis_pid(url: str) -> int | None:
    """The pid of the Redis server at ``url`` if it runs on this machine, else None."""
    client = redis.Redis.from_url(url)
    try:
        pid = int(client.info("server")["process_id"])
    except (redis.RedisError, KeyError, ValueError):
        return None
    finally:
        client.close()
    try:
        return pid if Path(f"/proc/{pid}/comm").read_text().startswith("redis") else None
    except OSError:  # no such process here: Redis runs on another host (or in a container)
        return None


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds per watched name (summed over its pids) and the machine's ticks, at once."""

    seconds: dict[str, float]
    busy_ticks: int
    total_ticks: int

    @classmethod
    def take(cls, watched: Mapping[str, Sequence[int]]) -> CpuSample:
        seconds = {name: sum(map(process_cpu_s, pids)) for name, pids in watched.items()}
        busy, total = machine_ticks()
        return cls(seconds, busy, total)


def cpu_use(before: CpuSample, after: CpuSample, requests: int) -> dict[str, Any]:
    """CPU milliseconds per request of each watched name, and the machine's busy share, over
    the span between two samples (their clock ticks are 1/CLOCK_TICKS s: a span of seconds and
    hundreds of requests is needed for a figure to mean anything)."""
    per_request = {
        name: round((after.seconds[name] - before.seconds[name]) * 1000 / max(requests, 1), 3)
        for name in before.seconds
    }
    total = after.total_ticks - before.total_ticks
    busy = (after.busy_ticks - before.busy_ticks) / total if total > 0 else float("nan")
    return {"ms_per_request": per_request, "machine_busy": round(busy, 3)}


def describe_cpu(cpu: Mapping[str, Any]) -> str:
    """One line: CPU ms per request by process group, and the machine's busy share."""
    spent = ", ".join(f"{name} {ms:.2f}" for name, ms in cpu["ms_per_request"].items())
    return f"CPU ms a request: {spent}; machine {cpu['machine_busy']:.0%} busy"
