"""Redis for the ephemeral state kept per user: presence leases and per-user rate windows.

They are spread over ``REDIS_SHARD_URLS`` by user id (:func:`shard_of`), so every process
finds a user's keys on the same shard. Every client has bounded timeouts
(``REDIS_TIMEOUT_SECONDS``) and no retries. A shard that fails is skipped at once until it
answers again, so one dead shard neither slows down nor fails the users of the others: its
users read as offline and their rate windows fail open. None of this is the truth; losing
it loses no message (docs/operations.md, "Redis shards").

The channel layer shards the same list by its own hash of group names
(chat_project/channel_layer.py); the cache uses one Redis (settings, "Redis").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

T = TypeVar("T")

logger = logging.getLogger(__name__)

# What a shard that is down, cut off or overloaded raises (redis-py wraps socket errors in
# its ConnectionError and TimeoutError; OSError covers what it does not wrap).
FAILURES: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
# A web process asks a failed shard again this often (a PING in the background); a worker
# retries it with its next call after this long.
PROBE_SECONDS = 1.0
# Connections one process may open to one shard. redis-py's pools raise past their limit (100
# by default) instead of waiting, and a connect storm or a busy process has more commands in
# flight than that; Redis itself takes 10,000 clients by default.
MAX_CONNECTIONS = 1000


class ShardUnavailable(Exception):
    """A Redis shard did not answer: down, cut off, or slower than ``REDIS_TIMEOUT_SECONDS``."""


def shard_urls() -> list[str]:
    """The Redis shards of this deployment, in order (empty on the embedded default)."""
    return list(settings.REDIS_SHARD_URLS)


def shard_of(user_id: int, count: int) -> int:
    """The shard holding a user's presence and rate-window keys.

    Deterministic, so every process agrees as long as they share ``REDIS_SHARD_URLS`` in
    the same order. Changing the list moves users to other shards: their leases and windows
    start afresh, which is harmless for state that expires within minutes.
    """
    return user_id % count


def shard_label(url: str, index: int) -> str:
    """``shard <n> (host:port)`` for log lines, without credentials."""
    parts = urlsplit(url)
    return f"shard {index} ({parts.hostname}:{parts.port or 6379})"


def key(*parts: object) -> str:
    """A Redis key under this deployment's prefix."""
    return ":".join([settings.CACHE_KEY_PREFIX, *map(str, parts)])


def bounded_options(*, asynchronous: bool) -> dict[str, Any]:
    """Connection options for every Redis client of ours: bounded waits, no retries."""
    timeout = settings.REDIS_TIMEOUT_SECONDS
    retry = AsyncRetry(NoBackoff(), 0) if asynchronous else SyncRetry(NoBackoff(), 0)
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": retry,
        "max_connections": MAX_CONNECTIONS,
    }


class _Shards:
    """Bookkeeping shared by the async and the sync clients: which shard, which are down."""

    def __init__(self, urls: list[str]):
        self.urls = urls
        self.labels = [shard_label(url, index) for index, url in enumerate(urls)]

    def of_user(self, user_id: int) -> int:
        return shard_of(user_id, len(self.urls))

    def by_shard(self, user_ids: Iterable[int]) -> dict[int, list[int]]:
        """Users grouped by the shard of their keys (one pipeline per shard)."""
        groups: dict[int, list[int]] = {}
        for user_id in dict.fromkeys(user_ids):
            groups.setdefault(self.of_user(user_id), []).append(user_id)
        return groups


class AsyncShards(_Shards):
    """One pooled ``redis.asyncio`` client per shard, for one event loop.

    A failed shard is marked down at once (one log line) and skipped without any I/O; a
    background probe PINGs it every :data:`PROBE_SECONDS` and marks it up when it answers.
    So only the calls that were in flight when it failed wait, for at most the timeout.
    """

    def __init__(self, urls: list[str]):
        super().__init__(urls)
        options = bounded_options(asynchronous=True)
        self.clients = [
            aioredis.Redis(connection_pool=aioredis.ConnectionPool.from_url(url, **options)) for url in urls
        ]
        self.down: set[int] = set()
        self._probes: dict[int, asyncio.Task[None]] = {}

    async def run(self, index: int, operation: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """Run ``operation`` with shard ``index``'s client; raise :class:`ShardUnavailable` if it
        is down or fails now."""
        if index in self.down:
            raise ShardUnavailable(self.labels[index])
        try:
            return await operation(self.clients[index])
        except FAILURES as exc:
            self._failed(index, exc)
            raise ShardUnavailable(self.labels[index]) from exc

    def _failed(self, index: int, exc: BaseException) -> None:
        if index in self.down:
            return
        self.down.add(index)
        logger.warning(
            "Redis %s failed (%s: %s): its users' presence reads as offline and their rate limits "
            "fail open until it answers again",
            self.labels[index],
            type(exc).__name__,
            exc,
        )
        self._probes[index] = asyncio.get_running_loop().create_task(self._probe(index))

    async def _probe(self, index: int) -> None:
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            try:
                await self.clients[index].ping()
            except FAILURES:
                continue
            self.down.discard(index)
            self._probes.pop(index, None)
            logger.info("Redis %s answers again: presence and rate limits of its users are back", self.labels[index])
            return


class SyncShards(_Shards):
    """One pooled synchronous client per shard (Celery workers). A failed shard is skipped
    for :data:`PROBE_SECONDS`, then the next call tries it again."""

    def __init__(self, urls: list[str]):
        super().__init__(urls)
        options = bounded_options(asynchronous=False)
        self.clients = [redis.Redis(connection_pool=redis.ConnectionPool.from_url(url, **options)) for url in urls]
        self.down_until = [0.0] * len(urls)

    def run(self, index: int, operation: Callable[[redis.Redis], T]) -> T:
        if time.monotonic() < self.down_until[index]:
            raise ShardUnavailable(self.labels[index])
        try:
            result = operation(self.clients[index])
        except FAILURES as exc:
            if not self.down_until[index]:
                logger.warning("Redis %s failed (%s: %s)", self.labels[index], type(exc).__name__, exc)
            self.down_until[index] = time.monotonic() + PROBE_SECONDS
            raise ShardUnavailable(self.labels[index]) from exc
        if self.down_until[index]:
            self.down_until[index] = 0.0
            logger.info("Redis %s answers again", self.labels[index])
        return result


# One set of async clients per event loop (a redis.asyncio connection belongs to the loop that
# opened it) and per shard list (tests change the settings); one set of sync clients per list.
_async: dict[tuple[asyncio.AbstractEventLoop, tuple[str, ...]], AsyncShards] = {}
_sync: dict[tuple[str, ...], SyncShards] = {}


def async_shards() -> AsyncShards | None:
    """This loop's clients of the Redis shards, or None without Redis (embedded default)."""
    urls = tuple(shard_urls())
    if not urls:
        return None
    loop = asyncio.get_running_loop()
    shards = _async.get((loop, urls))
    if shards is None:
        for stale in [k for k in _async if k[0].is_closed()]:
            del _async[stale]
        shards = _async[(loop, urls)] = AsyncShards(list(urls))
    return shards


def sync_shards() -> SyncShards | None:
    """The process's synchronous clients of the Redis shards, or None without Redis."""
    urls = tuple(shard_urls())
    if not urls:
        return None
    shards = _sync.get(urls)
    if shards is None:
        shards = _sync[urls] = SyncShards(list(urls))
    return shards
