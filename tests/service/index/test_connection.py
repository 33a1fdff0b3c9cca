"""The request path's pipelined Redis connection, against redis-servers of the tests' own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.index.connection import Endpoint, PipelinedConnection
from tests.service.conftest import RedisServer, free_port


def test_urls_name_host_port_database_credentials_and_tls() -> None:
    e = Endpoint.from_url("rediss://reader:p%40ss@cache.internal:6390/4")
    assert (e.host, e.port, e.db, e.username, e.password, e.tls) == (
        "cache.internal",
        6390,
        4,
        "reader",
        "p@ss",
        True,
    )
    assert Endpoint.from_url("redis://localhost?db=2").db == 2
    assert Endpoint.from_url("redis://localhost").port == 6379
    with pytest.raises(ValueError, match="redis://"):
        Endpoint.from_url("http://localhost:6379")


async def test_concurrent_commands_share_one_connection_and_get_their_own_replies(
    private_redis: RedisServer,
) -> None:
    setup = redis.Redis.from_url(private_redis.url)
    setup.mset({f"k{i}": f"v{i}".encode() * (1 + i % 50) for i in range(300)})
    setup.set("binary", bytes(range(256)))
    connection = PipelinedConnection.from_url(private_redis.url)
    try:
        gets = [connection.get(f"k{i}") for i in range(300)]
        mgets = [connection.mget([f"k{i}", "missing", "binary"]) for i in range(0, 300, 7)]
        replies = await asyncio.gather(*gets, *mgets)
        assert replies[:300] == [f"v{i}".encode() * (1 + i % 50) for i in range(300)]
        assert replies[300:] == [
            [f"v{i}".encode() * (1 + i % 50), None, bytes(range(256))] for i in range(0, 300, 7)
        ]
        assert setup.info("clients")["connected_clients"] == 2  # this test's client and ours
    finally:
        await connection.aclose()
        setup.close()


async def test_an_error_reply_fails_only_its_command(private_redis: RedisServer) -> None:
    connection = PipelinedConnection.from_url(private_redis.url)
    try:
        await connection.execute("SET", "text", "not a number")
        bad, good = await asyncio.gather(
            connection.execute("INCR", "text"), connection.get("text"), return_exceptions=True
        )
        assert isinstance(bad, ResponseError) and good == b"not a number"
    finally:
        await connection.aclose()


async def test_a_caller_that_gives_up_leaves_the_connection_in_step(
    private_redis: RedisServer,
) -> None:
    connection = PipelinedConnection.from_url(private_redis.url, timeout_s=2)
    try:
        await connection.execute("SET", "after", "the right reply")
        slow = asyncio.ensure_future(connection.execute("DEBUG", "SLEEP", "0.3"))
        await asyncio.sleep(0.05)
        slow.cancel()  # its OK arrives later and must not answer the GET below
        assert await connection.get("after") == b"the right reply"
        assert slow.cancelled()
    finally:
        await connection.aclose()


async def test_a_command_past_its_timeout_closes_the_connection_and_the_next_reconnects(
    private_redis: RedisServer,
) -> None:
    connection = PipelinedConnection.from_url(private_redis.url, timeout_s=0.25)
    try:
        await connection.execute("SET", "key", "value")
        waiting = asyncio.ensure_future(connection.get("key"))  # behind the sleep below
        with pytest.raises(RedisTimeoutError):
            await connection.execute("DEBUG", "SLEEP", "0.75")
        with pytest.raises(RedisTimeoutError):  # closed with the one that timed out
            await waiting
        await asyncio.sleep(0.6)  # the server wakes up
        assert await connection.get("key") == b"value"
    finally:
        await connection.aclose()


async def test_a_restarted_server_fails_what_was_in_flight_then_serves_again(
    private_redis: RedisServer,
) -> None:
    connection = PipelinedConnection.from_url(private_redis.url)
    try:
        await connection.execute("SET", "key", "value")
        private_redis.stop()
        with pytest.raises(RedisConnectionError):
            await connection.get("key")
        private_redis.start()  # empty again: nothing is kept on disk
        assert await connection.get("key") is None
    finally:
        await connection.aclose()


async def test_password_and_database_come_from_the_url(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="s3cret")
    server.start()
    port = server.port
    try:
        connection = PipelinedConnection.from_url(f"redis://:s3cret@127.0.0.1:{port}/3")
        await connection.execute("SET", "where", "db 3")
        await connection.aclose()
        check = redis.Redis(port=port, password="s3cret", db=3)
        assert check.get("where") == b"db 3"
        check.close()
        wrong = PipelinedConnection.from_url(f"redis://:wrong@127.0.0.1:{port}/0")
        with pytest.raises(ResponseError, match="WRONGPASS"):
            await wrong.get("where")
        await wrong.aclose()
    finally:
        server.stop()


async def test_nothing_listening_is_a_connection_error() -> None:
    connection = PipelinedConnection.from_url(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await connection.get("key")
    await connection.aclose()
