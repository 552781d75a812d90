"""Send rate limits: a token bucket per connection and a window per user across processes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from chat_project.redis_client import ShardUnavailable, async_shards, key

logger = logging.getLogger(__name__)
FAIL_OPEN_LOG_SECONDS = 60.0
# How often a web process adds its users' write counts to their windows in Redis.
FLUSH_SECONDS = 0.5


class TokenBucket:
    """``rate`` tokens a second, up to ``burst``; one token per write frame."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class UserWindow:
    """At most ``WS_USER_SENDS_PER_MINUTE`` writes per user per minute, over all devices.

    Each process counts its own writes and adds them to the user's window on the user's
    Redis shard at most every :data:`FLUSH_SECONDS` (one pipeline per shard, in the
    background), judging in between from the window's last total plus its own count since.
    A write costs no round trip, and a user writing through several processes at once can
    overshoot the limit by at most what the others took within one flush interval.

    Without Redis the counts stay in memory. When a shard does not answer, its users' counts
    are dropped and the window fails open (the per-socket bucket still applies), with a
    warning at most once a minute: a lost counter costs a minute of looser limits; refusing
    would stop a share of users from sending at all.
    """

    def __init__(self) -> None:
        self.window = 0
        self.totals: dict[int, int] = {}  # the window's total per user at the last flush
        self.unflushed: dict[int, int] = {}  # this process's writes per user since then
        self.flushed_at = 0.0
        self.flushing: asyncio.Task[None] | None = None
        self.warned_at = -FAIL_OPEN_LOG_SECONDS

    def allow(self, user_id: int) -> bool:
        """Count a write by ``user_id``; False when it would exceed the window."""
        window = int(time.time() // 60)
        if window != self.window:
            self.window, self.totals, self.unflushed = window, {}, {}
        pending = self.unflushed.get(user_id, 0)
        if self.totals.get(user_id, 0) + pending >= settings.WS_USER_SENDS_PER_MINUTE:
            return False
        self.unflushed[user_id] = pending + 1
        now = time.monotonic()
        if now - self.flushed_at >= FLUSH_SECONDS and not self._flush_running():
            self.flushed_at = now
            self.flushing = asyncio.get_running_loop().create_task(self.flush())
        return True

    def _flush_running(self) -> bool:
        task = self.flushing  # a task of a loop that has ended (tests) is not running
        return task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()

    async def flush(self) -> None:
        """Add this process's counts to the users' windows in Redis and learn their totals."""
        shards = async_shards()
        if shards is None or not self.unflushed:
            return  # without Redis the counts stay where they are: in memory
        window, counts, self.unflushed = self.window, self.unflushed, {}

        def adder(user_ids: list[int]) -> Callable[[Any], Awaitable[list[int]]]:
            async def add(redis: Any) -> list[int]:
                async with redis.pipeline(transaction=False) as pipe:
                    for user_id in user_ids:
                        name = key("sends", user_id, window)
                        pipe.incrby(name, counts[user_id])
                        pipe.expire(name, 120)
                    replies = await pipe.execute()
                return [int(total) for total in replies[::2]]

            return add

        for index, user_ids in shards.by_shard(counts).items():
            try:
                totals = await shards.run(index, adder(user_ids))
            except ShardUnavailable as exc:
                now = time.monotonic()
                if now - self.warned_at >= FAIL_OPEN_LOG_SECONDS:
                    self.warned_at = now
                    logger.warning("Per-user send limits fail open: %s does not answer", exc)
                continue
            if window == self.window:
                self.totals.update(zip(user_ids, totals, strict=True))


_user_window: UserWindow | None = None


def user_window() -> UserWindow:
    global _user_window
    if _user_window is None:
        _user_window = UserWindow()
    return _user_window
