"""Open-loop load: Poisson arrivals against a live service, and its fetch counters."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import Any

import httpx
import numpy as np
import orjson

from bench.measure import stats
from bench.requests import JSON_HEADERS, Body


def open_loop(
    base: str, bodies: list[Body], rate: float, seconds: float, seed: int
) -> dict[str, Any]:
    """Poisson arrivals at ``rate`` per second for ``seconds``; latency from the scheduled time.

    Beside the client's latency, where it went: ``client_lag`` (how late this client's own loop
    got to send: the load generator shares the machine), and for answered rankings the server's
    ``queue`` (arrival to handler) and ``in_server`` (arrival to answer) from their timings."""
    rng = np.random.default_rng(seed)
    n = max(int(rate * seconds), 1)
    starts = np.cumsum(rng.exponential(1.0 / rate, n))
    encoded = [orjson.dumps(b) for b in bodies]  # the client's JSON work is not the service's
    latencies: list[float] = []
    lags: list[float] = []
    queued: list[float] = []
    in_server: list[float] = []
    statuses: Counter[str] = Counter()

    async def run() -> None:
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
        nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=nodelay)
        async with httpx.AsyncClient(base_url=base, transport=transport, timeout=30) as client:
            # Open the connections a burst will need before the clock runs: a Poisson stream's
            # first overlaps would otherwise pay TCP handshakes that a long-lived client has not.
            await asyncio.gather(
                *(
                    client.post("/rank", content=encoded[k % len(encoded)], headers=JSON_HEADERS)
                    for k in range(16)
                )
            )
            loop = asyncio.get_running_loop()
            t0 = loop.time() + 0.2

            async def one(i: int) -> None:
                scheduled = t0 + float(starts[i])
                await asyncio.sleep(max(0.0, scheduled - loop.time()))
                lags.append(max(0.0, loop.time() - scheduled))
                try:
                    response = await client.post(
                        "/rank", content=encoded[i % len(encoded)], headers=JSON_HEADERS
                    )
                except httpx.HTTPError:
                    statuses["transport"] += 1
                    return
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    latencies.append(loop.time() - scheduled)
                    stages = response.json()["timing_ms"]
                    queued.append(stages.get("queue", 0.0) / 1000)
                    in_server.append((stages.get("queue", 0.0) + stages["total"]) / 1000)

            await asyncio.gather(*(one(i) for i in range(n)))

    asyncio.run(run())
    shed = statuses["503"] + statuses["504"]
    nan = [float("nan")]
    return {
        "rate": rate,
        "sent": n,
        "errors": n - sum(statuses[s] for s in ("200", "503", "504")),  # shed or late: counted
        "statuses": dict(statuses),
        "shed_share": round(shed / n, 4),
        **stats(latencies or nan),
        "client_lag": stats(lags or nan),
        "queue": stats(queued or nan),
        "in_server": stats(in_server or nan),
    }


def fetch_counters(http: httpx.Client) -> dict[str, float]:
    """The service's item cache hits and misses, Redis reply bytes and answered rankings."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = {"hit": 0.0, "miss": 0.0, "bytes": 0.0, "requests": 0.0}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "ranker_item_cache_lookups_total":
                totals[sample.labels["result"]] += sample.value
            elif sample.name == "ranker_store_read_bytes_total":
                totals["bytes"] += sample.value
            elif sample.name == "ranker_requests_total" and sample.labels["status"] == "200":
                totals["requests"] += sample.value
    return totals
