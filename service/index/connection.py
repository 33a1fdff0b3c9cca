"""One pipelined Redis connection for the request path.

Every request's command goes out on the same socket the moment it is made; Redis answers in
order, so each reply resolves the oldest waiting caller. A command costs hiredis' packing, one
transport write and hiredis' parsing where the bytes arrive. redis.asyncio spends several times
that in Python per MGET (a pool checkout under a lock, observability hooks, a StreamReader and
per-read copies), which was the largest part of the fetch after the round trip itself.

Failure semantics follow redis-py's, whose exception classes it raises, so callers catch
`redis.exceptions.RedisError` for both clients:

- the connection opens lazily (AUTH and SELECT from the URL) and again after it was lost;
- a lost connection fails every command in flight with `ConnectionError`;
- a command not answered within ``timeout_s`` raises `TimeoutError` and closes the connection,
  since a server that stopped answering (or a network that dropped it) leaves it unusable;
- a caller that gives up (cancellation) leaves its place in the queue: its reply is read and
  dropped, so the connection stays in step;
- an error reply raises `ResponseError` for that command alone.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlparse

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

DEFAULT_PORT = 6379


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: parsed from ``redis://``, ``rediss://`` or ``unix://`` URLs.

    >>> Endpoint.from_url("redis://:secret@cache:6380/2")
    Endpoint(host='cache', port=6380, path=None, db=2, username=None, password='secret', tls=False)
    >>> Endpoint.from_url("unix:///run/redis.sock?db=1").path
    '/run/redis.sock'
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    path: str | None = None  # a Unix socket instead of TCP
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parsed = urlparse(url)
        query = {name: values[0] for name, values in parse_qs(parsed.query).items()}
        db = int(query.get("db", 0))
        if parsed.scheme in ("redis", "rediss") and parsed.path.strip("/") and "db" not in query:
            db = int(parsed.path.strip("/"))
        username = unquote(parsed.username) if parsed.username else None
        password = unquote(parsed.password) if parsed.password else None
        if parsed.scheme == "unix":
            return cls(path=unquote(parsed.path), db=db, username=username, password=password)
        if parsed.scheme not in ("redis", "rediss"):
            raise ValueError(f"{url!r}: a Redis URL starts with redis://, rediss:// or unix://")
        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or DEFAULT_PORT,
            db=db,
            username=username,
            password=password,
            tls=parsed.scheme == "rediss",
        )


class _RespProtocol(asyncio.Protocol):
    """Writes packed commands and matches replies to waiters in order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport instances, but behave as one).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._reader.feed(data)
            while (reply := self._reader.gets()) is not False:
                waiter = self._waiting.popleft()
                if waiter.done():  # its caller gave up: the reply is read and dropped
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    waiter.set_exception(ResponseError(str(reply)))
                else:
                    waiter.set_result(reply)
        except hiredis.ProtocolError as err:
            self.close(RedisConnectionError(f"Redis sent a malformed reply: {err}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.lost or RedisConnectionError(f"connection to Redis lost: {exc or 'EOF'}")
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(self.lost)

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.lost is not None or self._transport is None:
            raise self.lost or RedisConnectionError("not connected")
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self._transport.write(packed)
        return waiter

    def close(self, why: Exception) -> None:
        self.lost = self.lost or why
        if self._transport is not None:
            self._transport.close()  # connection_lost fails whatever is still waiting


def _pack(args: tuple[str | bytes | int, ...]) -> bytes:
    """The RESP bytes of one command (hiredis packs in C; its stub types a 1-tuple)."""
    packed: bytes = hiredis.pack_command(cast(Any, args))
    return packed


@dataclass(frozen=True)
class Sent:
    """A command on its way: its reply (a future of the connection's event loop) and the loop
    time by which it must come."""

    protocol: _RespProtocol
    reply: asyncio.Future[Any]
    deadline: float

    async def result(self) -> Any:
        """The reply, if it comes by the deadline (else the connection is closed: a server that
        stopped answering, or a network that dropped it, leaves it unusable)."""
        try:
            async with asyncio.timeout_at(self.deadline):
                return await self.reply
        except TimeoutError as err:
            self.protocol.close(RedisTimeoutError("Redis did not answer in time"))
            raise RedisTimeoutError("no reply from Redis in time") from err

    def cancel(self) -> None:
        """Nobody will wait for the reply: it is read and dropped when it comes."""
        self.reply.cancel()


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class PipelinedConnection:
    """GET and MGET (any command, in fact) over one multiplexed connection.

    Args:
        endpoint: where to connect.
        timeout_s: how long a command (and opening the connection) may take.
    """

    def __init__(self, endpoint: Endpoint, timeout_s: float = 0.5) -> None:
        self.endpoint, self.timeout_s = endpoint, timeout_s
        self._protocol: _RespProtocol | None = None
        self._opening: asyncio.Task[_RespProtocol] | None = None

    @classmethod
    def from_url(cls, url: str, timeout_s: float = 0.5) -> PipelinedConnection:
        return cls(Endpoint.from_url(url), timeout_s)

    async def execute(self, *args: str | bytes | int) -> Any:
        """Send one command and wait for its reply."""
        protocol = self._open_protocol()
        if protocol is None:
            protocol = await self._connect()
        return await self._sent(protocol, _pack(args)).result()

    def _open_protocol(self) -> _RespProtocol | None:
        """The connection's protocol while commands can go out on it (None: not yet opened, or
        lost)."""
        protocol = self._protocol
        return protocol if protocol is not None and protocol.lost is None else None

    @property
    def is_open(self) -> bool:
        """Whether a command can go out at once (`send_now` sends rather than answer None)."""
        return self._open_protocol() is not None

    def send_now(self, *args: str | bytes | int) -> Sent | None:
        """Send one command at once, without yielding to the event loop (None: the connection
        is not open, use `execute`). Its reply is awaited later (`Sent.result`), or dropped by
        `Sent.cancel`: the caller can work while Redis does."""
        return self.send_packed_now(_pack(args))

    def send_packed_now(self, packed: bytes) -> Sent | None:
        """`send_now` of a command already in RESP bytes (e.g. `_kernels.pack_keys`'s)."""
        protocol = self._open_protocol()
        return None if protocol is None else self._sent(protocol, packed)

    def _sent(self, protocol: _RespProtocol, packed: bytes) -> Sent:
        reply = protocol.send(packed)
        return Sent(protocol, reply, asyncio.get_running_loop().time() + self.timeout_s)

    async def get(self, key: str) -> bytes | None:
        reply: bytes | None = await self.execute("GET", key)
        return reply

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        reply: list[bytes | None] = await self.execute("MGET", *keys)
        return reply

    async def _connect(self) -> _RespProtocol:
        # Concurrent callers share one attempt; shielded, so one caller's cancellation does not
        # abort the connection the others wait for.
        if self._opening is None or self._opening.done():
            self._opening = asyncio.create_task(self._open())
            self._opening.add_done_callback(_retrieve)  # a failure nobody awaited is not logged
        return await asyncio.shield(self._opening)

    async def _open(self) -> _RespProtocol:
        e, loop = self.endpoint, asyncio.get_running_loop()
        protocol: _RespProtocol | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                if e.path is not None:
                    _, protocol = await loop.create_unix_connection(_RespProtocol, e.path)
                else:
                    context = ssl.create_default_context() if e.tls else None
                    _, protocol = await loop.create_connection(
                        _RespProtocol, e.host, e.port, ssl=context
                    )
                handshake = []
                if e.password is not None:
                    credentials = (e.username, e.password) if e.username else (e.password,)
                    handshake.append(protocol.send(_pack(("AUTH", *credentials))))
                if e.db:
                    handshake.append(protocol.send(_pack(("SELECT", e.db))))
                await asyncio.gather(*handshake)
        except BaseException as err:
            if protocol is not None:
                protocol.close(RedisConnectionError("the handshake failed"))
            if isinstance(err, OSError | TimeoutError):
                where = f"cannot connect to Redis at {self._where()}"
                raise RedisConnectionError(f"{where}: {err}") from err
            raise
        self._protocol = protocol
        return protocol

    def _where(self) -> str:
        e = self.endpoint
        return e.path if e.path is not None else f"{e.host}:{e.port}"

    async def aclose(self) -> None:
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        if self._protocol is not None:
            self._protocol.close(RedisConnectionError("closed"))
            self._protocol = None
