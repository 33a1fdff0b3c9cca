"""Open-loop load: Poisson arrivals against a live service, and its fetch counters."""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson
import uvloop

from bench.cpu import CpuSample, cpu_use, describe_cpu
from bench.measure import stats
from bench.requests import Body


class _StaleConnection(ConnectionError):
    """A kept-alive connection failed before any byte of an answer: the server had closed it."""


class HttpClient:
    """A lean HTTP/1.1 client for open-loop load: keep-alive connections from a pool, requests
    written as prepared bytes, answers read by Content-Length.

    A general client (httpx) spends ~1-2 ms of CPU a request in Python; on 2 cores shared with
    the service that made the load generator the bottleneck past ~100 req/s (answers 15 s late
    while the server had each request ~150 ms and shed none). This one does only what a load
    generator must."""

    def __init__(self, host: str, port: int, max_connections: int = 512) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(max_connections)

    @classmethod
    def of(cls, base: str) -> HttpClient:
        parts = urlsplit(base)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80)

    @staticmethod
    def prepare(path: str, body: bytes) -> bytes:
        """A POST of a JSON body, as the bytes on the wire."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode("ascii") + body

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=2**22)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def send(self, request: bytes) -> tuple[int, bytes, float]:
        """Status and body of one prepared request, and the loop time it was written at.

        A kept-alive connection the server has closed meanwhile (its keep-alive timeout) is
        not used, and one that fails before any answer byte is retried once on a new
        connection, as every HTTP client does: the race is the transport's, not the
        service's."""
        async with self.slots:
            reused = self._idle_connection()
            if reused is not None:
                try:
                    return await self._exchange(*reused, request)
                except _StaleConnection:
                    pass
            return await self._exchange(*await self._connect(), request)

    def _idle_connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bytes, float]:
        written = asyncio.get_running_loop().time()
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, asyncio.IncompleteReadError) as err:
            writer.close()
            if isinstance(err, asyncio.IncompleteReadError) and err.partial:
                raise  # the server answered in part: a real failure
            raise _StaleConnection from err
        lines = head.decode("latin-1").lower().split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        try:
            body = await reader.readexactly(int(fields.get("content-length", "0")))
        except (OSError, asyncio.IncompleteReadError):
            writer.close()
            raise
        if fields.get("connection") == "close":
            writer.close()
        else:
            self.idle.append((reader, writer))
        return int(lines[0].split()[1]), body, written

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


def answer_timing(body: bytes) -> dict[str, float]:
    """A ranking's ``timing_ms`` without decoding its items: the last field of that name in
    the answer (a name inside a string value would be escaped), an object of numbers."""
    start = body.rindex(b'"timing_ms":') + len(b'"timing_ms":')
    timing: dict[str, float] = orjson.loads(body[start : body.index(b"}", start) + 1])
    return timing


def open_loop(
    base: str,
    bodies: list[Body],
    rate: float,
    seconds: float,
    seed: int,
    watched: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Poisson arrivals at ``rate`` per second for ``seconds``; latency from the scheduled time.

    Beside the client's latency, where it went: ``client_lag`` (how late this client got to
    write the request: its own loop and connection pool; the load generator shares the
    machine), and for answered rankings the server's ``queue`` (arrival to handler) and
    ``in_server`` (arrival to answer) from their timings. ``cpu``: CPU ms per request of each
    ``watched`` process group (pids by name) and of this load generator, and the machine's
    busy share, from the first send to the last answer."""
    groups = {**(watched or {}), "load generator": [os.getpid()]}
    spans: list[CpuSample] = []
    rng = np.random.default_rng(seed)
    n = max(int(rate * seconds), 1)
    starts = np.cumsum(rng.exponential(1.0 / rate, n))
    # The client's JSON and HTTP framing are done before the clock runs: not the service's work.
    prepared = [HttpClient.prepare("/rank", orjson.dumps(b)) for b in bodies]
    latencies: list[float] = []
    lags: list[float] = []
    queued: list[float] = []
    in_server: list[float] = []
    statuses: Counter[str] = Counter()

    async def run() -> None:
        client = HttpClient.of(base)
        # Open the connections a burst will need before the clock runs: a Poisson stream's
        # first overlaps would otherwise pay TCP handshakes that a long-lived client has not.
        await asyncio.gather(*(client.send(prepared[k % len(prepared)]) for k in range(16)))
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2
        spans.append(CpuSample.take(groups))

        async def one(i: int) -> None:
            scheduled = t0 + float(starts[i])
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            try:
                status, body, written = await client.send(prepared[i % len(prepared)])
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                statuses["transport"] += 1
                return
            lags.append(max(0.0, written - scheduled))
            statuses[str(status)] += 1
            if status == 200:
                latencies.append(loop.time() - scheduled)
                stages = answer_timing(body)
                queued.append(stages.get("queue", 0.0) / 1000)
                in_server.append(stages["total"] / 1000)

        await asyncio.gather(*(one(i) for i in range(n)))
        spans.append(CpuSample.take(groups))
        client.close()

    # uvloop: the load generator's own CPU competes with the service for the machine's cores,
    # and it spent ~0.4 ms a request on asyncio's loop (its send lag reached 15 ms at p99).
    uvloop.run(run())
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
        "cpu": cpu_use(spans[0], spans[1], n),
    }


def rising_curve(
    base: str,
    bodies: list[Body],
    rates: Sequence[float],
    seconds: float,
    objective_ms: float,
    seed: int,
    watched: Mapping[str, Sequence[int]] | None,
    progress: Callable[[str], None],
    mode: str,
    onnx_alone: Callable[[], dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """`open_loop` points at ``rates`` (rising) until two in a row miss the objective: higher
    rates would only queue or shed. ``onnx_alone``, where given, is measured right before each
    point and kept in it (what ONNX Runtime alone sustains in the same minutes: this machine's
    speed drifts by a fifth within a bench run)."""
    curve: list[dict[str, Any]] = []
    for rate in rates:
        alone = onnx_alone() if onnx_alone is not None else None
        with httpx.Client(base_url=base, timeout=30) as http:
            before = fetch_counters(http)
            point = open_loop(base, bodies, rate, seconds, seed, watched)
            point["inference_thread"] = inference_thread_use(before, fetch_counters(http), seconds)
        if alone is not None:
            point["onnx_alone"] = alone
        curve.append(point)
        progress(
            f"open loop ({mode}) {rate:>5} req/s: p50 {point['p50']:.1f} ms p99 "
            f"{point['p99']:.1f} ms, shed {point['shed_share']:.1%}; {describe_cpu(point['cpu'])}"
            f"{describe_inference_thread(point['inference_thread'])}"
        )
        if (
            not within(point, objective_ms)
            and len(curve) > 1
            and not within(curve[-2], objective_ms)
        ):
            break
    return curve


def inference_thread_use(
    before: Mapping[str, float], after: Mapping[str, float], seconds: float
) -> dict[str, float] | None:
    """How busy the service's inference threads were over a point (run seconds per second:
    1.0 is one thread always running) and how long a hand-off waited for one, in ms (None:
    no inference went to a thread)."""
    handed = after["handed"] - before["handed"]
    if handed <= 0:
        return None
    return {
        "busy": round((after["run_s"] - before["run_s"]) / seconds, 3),
        "wait_ms_mean": round((after["wait_s"] - before["wait_s"]) / handed * 1000, 3),
        "handed": int(handed),
    }


def describe_inference_thread(use: Mapping[str, float] | None) -> str:
    if use is None:
        return ""
    return f"; inference thread {use['busy']:.0%} busy, wait {use['wait_ms_mean']:.1f} ms"


def within(point: Mapping[str, Any], objective_ms: float) -> bool:
    """Whether an open-loop point met the objective: p99 within it, nothing shed or failed."""
    return bool(point["p99"] <= objective_ms and not point["errors"] and not point["shed_share"])


def held_through(curve: Sequence[Mapping[str, Any]], objective_ms: float) -> float | None:
    """The highest rate up to which every point of a rising curve met the objective (None: not
    even the first). Near saturation single 10 s points are not monotone (a miss at 250 req/s
    and a pass at 300 were seen), and the highest passing point alone flattered the curve."""
    held = None
    for point in curve:
        if not within(point, objective_ms):
            break
        held = float(point["rate"])
    return held


def fetch_counters(http: httpx.Client) -> dict[str, float]:
    """The service's item cache hits and misses, Redis reply bytes, answered rankings, and its
    inference threads' run and wait seconds and hand-offs (summed over models)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = {"hit": 0.0, "miss": 0.0, "bytes": 0.0, "requests": 0.0}
    totals |= {"run_s": 0.0, "wait_s": 0.0, "handed": 0.0}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("ranker_inference_thread_seconds"):
                phase, kind = sample.labels["phase"], sample.name.rsplit("_", 1)[1]
                if phase == "run" and kind == "sum":
                    totals["run_s"] += sample.value
                elif phase == "wait" and kind == "sum":
                    totals["wait_s"] += sample.value
                elif phase == "wait" and kind == "count":
                    totals["handed"] += sample.value
            elif sample.name == "ranker_item_cache_lookups_total":
                totals[sample.labels["result"]] += sample.value
            elif sample.name == "ranker_store_read_bytes_total":
                totals["bytes"] += sample.value
            elif sample.name == "ranker_requests_total" and sample.labels["status"] == "200":
                totals["requests"] += sample.value
    return totals
