"""Send rate limits: a token bucket per connection and a window per user across processes."""

from __future__ import annotations

import time

from django.conf import settings

from chat_project.redis_client import async_redis, key


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

    Counted in Redis when there is one (every web process shares it), else in memory.
    """

    def __init__(self) -> None:
        self.local: dict[tuple[int, int], int] = {}
        self.redis = async_redis()

    async def allow(self, user_id: int) -> bool:
        window = int(time.time() // 60)
        limit: int = settings.WS_USER_SENDS_PER_MINUTE
        if self.redis is None:
            slot = (user_id, window)
            self.local = {k: v for k, v in self.local.items() if k[1] == window}
            self.local[slot] = self.local.get(slot, 0) + 1
            return self.local[slot] <= limit
        name = key("sends", user_id, window)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(name)
            pipe.expire(name, 120)
            count, _ = await pipe.execute()
        return int(count) <= limit


_user_window: UserWindow | None = None


def user_window() -> UserWindow:
    global _user_window
    if _user_window is None:
        _user_window = UserWindow()
    return _user_window
