"""Client side of the benchmark: asyncio WebSocket clients, run in several processes.

Each function here runs inside one load-generator process (``run_in_processes``) and
returns plain data (lists of latencies, counts) that the parent merges. Sends are
open-loop: message *i* is due at ``start + i / rate`` whether or not earlier ones were
answered, and its latency is measured from that due time, so queueing shows up in the
latency instead of slowing the offered load down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets

CONNECT_TIMEOUT = 30.0


def _loop_policy() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@dataclass
class Device:
    """One client socket of the benchmark: its user, token and server URL."""

    user_id: int
    token: str
    url: str


@dataclass
class Client:
    device: Device
    conn: Any = None
    frames: int = 0
    seen: set[tuple[int, int]] = field(default_factory=set)
    duplicates: int = 0


async def open_socket(device: Device) -> Any:
    conn = await websockets.connect(
        device.url,
        additional_headers={"Authorization": f"Bearer {device.token}"},
        open_timeout=CONNECT_TIMEOUT,
        max_size=2**24,
        ping_interval=None,
    )
    hello = json.loads(await conn.recv())
    if hello.get("type") != "hello":
        raise RuntimeError(f"expected hello, got {hello}")
    return conn


# --- W1: idle hold ---------------------------------------------------------------------------


def hold(devices: list[Device], seconds: float, ready: Any, release: Any) -> dict[str, Any]:
    """Open every socket, signal ``ready``, hold them until ``release``, then close."""
    _loop_policy()

    async def main() -> dict[str, Any]:
        conns, errors = [], 0
        for chunk in range(0, len(devices), 200):
            results = await asyncio.gather(
                *(open_socket(d) for d in devices[chunk : chunk + 200]), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    errors += 1
                else:
                    conns.append(result)
        ready.set()
        deadline = time.monotonic() + seconds
        while not release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        alive = sum(1 for c in conns if c.state.name == "OPEN")
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        return {"opened": len(conns), "alive_at_end": alive, "errors": errors}

    return asyncio.run(main())


# --- W2: connect storm ------------------------------------------------------------------------


def storm(devices: list[Device], rate: float) -> dict[str, Any]:
    """Connect every device at ``rate`` per second (with jitter); time each handshake."""
    _loop_policy()

    async def main() -> dict[str, Any]:
        handshakes: list[float] = []
        errors = 0
        conns: list[Any] = []
        start = time.perf_counter()

        async def one(i: int, device: Device) -> None:
            nonlocal errors
            due = start + i / rate + random.uniform(0, 1 / rate)
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            t0 = time.perf_counter()
            try:
                conns.append(await open_socket(device))
                handshakes.append((time.perf_counter() - t0) * 1000)
            except Exception:
                errors += 1

        await asyncio.gather(*(one(i, d) for i, d in enumerate(devices)))
        elapsed = time.perf_counter() - start
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        return {"handshake_ms": handshakes, "errors": errors, "elapsed": elapsed}

    return asyncio.run(main())


# --- W3 / W4: open-loop chat -------------------------------------------------------------------


@dataclass
class Plan:
    """Who sends what where: each sender sends ``count`` messages, spaced by ``interval``."""

    senders: list[tuple[Device, int, int]]  # device, conversation id, count
    receivers: list[tuple[Device, int]]  # device, expected deliveries
    interval: float
    start_at: float  # wall-clock time shared by every process
    tag: str


def chat(plan: Plan) -> dict[str, Any]:
    """Send open-loop, receive everything, measure ack and end-to-end latency."""
    _loop_policy()

    async def main() -> dict[str, Any]:
        ack_ms: list[float] = []
        e2e_ms: list[float] = []
        errors = 0
        acked: list[tuple[int, int]] = []
        receivers = [Client(device) for device, _ in plan.receivers]
        expected = {id(c): n for c, (_, n) in zip(receivers, plan.receivers, strict=True)}
        senders = [Client(device) for device, _, _ in plan.senders]
        for client in [*receivers, *senders]:
            client.conn = await open_socket(client.device)
        delay = plan.start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)

        async def receive(client: Client) -> None:
            nonlocal errors
            got = 0
            async for raw in client.conn:
                frame = json.loads(raw)
                if frame.get("type") != "message.new":
                    continue
                message = frame["message"]
                key = (message["conversation_id"], message["seq"])
                if key in client.seen:
                    client.duplicates += 1
                    continue
                client.seen.add(key)
                body = message["body"]
                if body.startswith(plan.tag):
                    e2e_ms.append((time.time() - float(body.split("|")[1])) * 1000)
                got += 1
                if got >= expected[id(client)]:
                    return

        async def send(client: Client, conversation_id: int, count: int, offset: float) -> None:
            nonlocal errors
            pending: dict[str, float] = {}
            done = asyncio.Event()
            acks = 0

            async def read_acks() -> None:
                nonlocal acks, errors
                async for raw in client.conn:
                    frame = json.loads(raw)
                    if frame.get("type") == "message.ack":
                        due = pending.pop(frame["id"], None)
                        if due is not None:
                            ack_ms.append((time.time() - due) * 1000)
                        acked.append((frame["message"]["conversation_id"], frame["message"]["seq"]))
                        acks += 1
                    elif frame.get("type") == "error":
                        errors += 1
                        pending.pop(frame.get("id"), None)
                        acks += 1
                    if acks >= count:
                        done.set()
                        return

            reader = asyncio.create_task(read_acks())
            base = plan.start_at + offset
            for i in range(count):
                due = base + i * plan.interval
                wait = due - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                frame_id = f"{conversation_id}-{client.device.user_id}-{i}"
                pending[frame_id] = due
                await client.conn.send(
                    json.dumps(
                        {
                            "type": "message.send",
                            "id": frame_id,
                            "conversation_id": conversation_id,
                            "client_msg_id": f"{plan.tag}-{frame_id}",
                            "body": f"{plan.tag}|{due}",
                        }
                    )
                )
            await asyncio.wait_for(done.wait(), timeout=120)
            await reader

        spread = plan.interval / max(1, len(senders))
        tasks = [receive(c) for c in receivers] + [
            send(c, conversation_id, count, k * spread)
            for k, (c, (_, conversation_id, count)) in enumerate(zip(senders, plan.senders, strict=True))
        ]
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=300)
        errors += sum(1 for r in results if isinstance(r, BaseException))
        for client in [*receivers, *senders]:
            with contextlib.suppress(Exception):
                await client.conn.close()
        return {
            "ack_ms": ack_ms,
            "e2e_ms": e2e_ms,
            "errors": errors,
            "acked": acked,
            "delivered": sum(len(c.seen) for c in receivers),
            "duplicates": sum(c.duplicates for c in receivers),
        }

    return asyncio.run(main())


# --- W5: reconnect sync --------------------------------------------------------------------------


def resync(device: Device, cursors: dict[str, int]) -> dict[str, Any]:
    """Connect, send ``sync`` with the cursors, time until ``sync.done``."""
    _loop_policy()

    async def main() -> dict[str, Any]:
        t0 = time.perf_counter()
        conn = await open_socket(device)
        await conn.send(json.dumps({"type": "sync", "id": "w5", "cursors": cursors}))
        messages = batches = 0
        async for raw in conn:
            frame = json.loads(raw)
            if frame.get("type") == "sync.batch":
                batches += 1
                messages += len(frame["messages"])
            elif frame.get("type") == "sync.done":
                break
        elapsed = time.perf_counter() - t0
        await conn.close()
        return {"seconds": elapsed, "messages": messages, "batches": batches}

    return asyncio.run(main())


# --- processes ---------------------------------------------------------------------------------------


def run_in_processes(target: Callable[..., dict[str, Any]], jobs: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Run ``target(*job)`` in one process per job; return their results in order."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(jobs)) as pool:
        return pool.starmap(target, jobs)
