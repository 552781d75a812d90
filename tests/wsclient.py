"""A small WebSocket test client over the real ``websockets`` library.

Waits are for events with a timeout, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

T = TypeVar("T")
TIMEOUT = 10.0


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run one async scenario from a synchronous test, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class WSClient:
    """One device's socket. A reader task files every frame; ``expect*`` take matching frames.

    Several coroutines may wait on one client at once (concurrent requests); each frame is
    taken by at most one waiter, and ``received`` keeps the whole history.
    """

    def __init__(self, conn: ClientConnection):
        self.conn = conn
        self.received: list[dict[str, Any]] = []
        self.inbox: list[dict[str, Any]] = []
        self.closed = False
        self.arrived = asyncio.Condition()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.conn:  # ends when the connection closes, however it closes
                frame: dict[str, Any] = json.loads(raw)
                async with self.arrived:
                    self.received.append(frame)
                    self.inbox.append(frame)
                    self.arrived.notify_all()
        except ConnectionClosed:
            pass
        self.closed = True
        async with self.arrived:
            self.arrived.notify_all()

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        cookie: str | None = None,
        origin: str | None = None,
        expect_hello: bool = True,
    ) -> WSClient:
        headers: dict[str, str] = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if cookie:
            headers["Cookie"] = cookie
        conn = await websockets.connect(
            url,
            additional_headers=headers,
            origin=origin,  # type: ignore[arg-type]  # websockets types Origin as a NewType of str
            open_timeout=TIMEOUT,
            max_size=2**22,
        )
        client = cls(conn)
        if expect_hello:
            await client.expect("hello")
        return client

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.conn.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def expect_any(self, where: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT) -> dict[str, Any]:
        """Take the oldest unclaimed frame matching ``where``, waiting up to ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self.arrived:
            while True:
                for index, frame in enumerate(self.inbox):
                    if where(frame):
                        del self.inbox[index]
                        return frame
                remaining = deadline - loop.time()
                if self.closed:
                    raise AssertionError(
                        f"socket closed ({self.conn.close_code}) before a matching frame; got {self.received[-5:]}"
                    )
                if remaining <= 0:
                    raise AssertionError(f"no matching frame within {timeout}s; got {self.received[-5:]}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), remaining)

    async def expect(
        self, type_: str, where: Callable[[dict[str, Any]], bool] | None = None, timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """The next frame of this type (and matching ``where``)."""
        return await self.expect_any(lambda f: f.get("type") == type_ and (where is None or where(f)), timeout)

    async def request(self, frame: dict[str, Any], reply_type: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Send a frame with an ``id`` and wait for the reply (or error) echoing it."""
        await self.send(frame)
        frame_id = frame["id"]
        return await self.expect_any(
            lambda f: f.get("id") == frame_id and f.get("type") in (reply_type, "error"), timeout
        )

    async def expect_close(self, timeout: float = TIMEOUT) -> int:
        """Wait until the server closes the socket; return the close code."""
        await asyncio.wait_for(asyncio.shield(self.reader), timeout)
        return self.conn.close_code if self.conn.close_code is not None else 1006

    async def close(self) -> None:
        await self.conn.close()
        await self.reader


async def refused_close_code(url: str, **kwargs: Any) -> int:
    """Connect, expecting the server to refuse by closing at once; return the close code."""
    client = await WSClient.connect(url, expect_hello=False, **kwargs)
    return await client.expect_close()
