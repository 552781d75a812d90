"""Send rate limits: a token bucket per connection and a window per user across processes."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings

from chat_project.redis_client import ShardUnavailable, async_shards, key

logger = logging.getLogger(__name__)
FAIL_OPEN_LOG_SECONDS = 60.0


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

    Counted on the user's Redis shard when there is Redis (every web process shares it),
    else in memory. When the shard does not answer the window fails open: the write is
    allowed (the per-socket bucket still applies) and a warning is logged, at most once a
    minute. A lost counter costs a minute of looser limits; refusing would stop a share of
    users from sending at all.
    """

    def __init__(self) -> None:
        self.local: dict[tuple[int, int], int] = {}
        self.warned_at = -FAIL_OPEN_LOG_SECONDS

    async def allow(self, user_id: int) -> bool:
        window = int(time.time() // 60)
        limit: int = settings.WS_USER_SENDS_PER_MINUTE
        shards = async_shards()
        if shards is None:
            slot = (user_id, window)
            self.local = {k: v for k, v in self.local.items() if k[1] == window}
            self.local[slot] = self.local.get(slot, 0) + 1
            return self.local[slot] <= limit
        name = key("sends", user_id, window)

        async def count(redis: Any) -> int:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.incr(name)
                pipe.expire(name, 120)
                value, _ = await pipe.execute()
            return int(value)

        try:
            return await shards.run(shards.of_user(user_id), count) <= limit
        except ShardUnavailable as exc:
            now = time.monotonic()
            if now - self.warned_at >= FAIL_OPEN_LOG_SECONDS:
                self.warned_at = now
                logger.warning("Per-user send limits fail open: %s does not answer", exc)
            return True


_user_window: UserWindow | None = None


def user_window() -> UserWindow:
    global _user_window
    if _user_window is None:
        _user_window = UserWindow()
    return _user_window
