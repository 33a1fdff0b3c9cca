"""The Redis test fixture itself: every Redis test gets a private prefix that is cleaned up."""

from __future__ import annotations

import redis

from tests.conftest import REDIS_URL


def test_redis_prefix_is_private_and_cleaned(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    client = redis.Redis.from_url(url)
    client.set(f"{prefix}:probe", b"1")
    assert client.get(f"{prefix}:probe") == b"1"
    assert list(client.scan_iter(match=f"{prefix}*")) == [f"{prefix}:probe".encode()]
    client.close()


def test_no_test_keys_outlive_their_test(redis_prefix: tuple[str, str]) -> None:
    # The previous test's probe key must be gone; its prefix differs from ours, so look wide.
    client = redis.Redis.from_url(REDIS_URL)
    leftovers = list(client.scan_iter(match="test-*:probe", count=1000))
    assert leftovers == []
    client.close()
