"""Client side of the benchmark: asyncio WebSocket clients, run in several processes.

Each function here runs inside one load-generator process and returns plain data (lists
of latencies, counts) that the parent merges. Sends are open-loop: message *i* of a
sender is due at ``start + offset + i / rate`` whether or not earlier ones were answered,
and its latency is measured from that due time, so queueing shows up in the latency
instead of slowing the offered load down.

A run is bounded whatever the server does: messages not sent by ``grace`` seconds after
the last due time are given up (``not_sent``), and acks and deliveries still missing
``drain`` seconds later are counted as such (``unacked``, ``undelivered``) rather than
waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import websockets

CONNECT_TIMEOUT = 30.0
# Clients ping below the server's idle timeout (WS_IDLE_TIMEOUT_SECONDS, 75 s by default)
# in runs long enough to meet it.
PING_EVERY = 20.0


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


async def open_socket(device: Device) -> Any:
    conn = await websockets.connect(
        device.url,
        additional_headers={"Authorization": f"Bearer {device.token}"},
        open_timeout=CONNECT_TIMEOUT,
        max_size=2**24,
        max_queue=256,
        ping_interval=None,
        compression=None,
        proxy=None,
    )
    hello = orjson.loads(await conn.recv())
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


# --- W3, W4, W6, W7: open-loop chat ------------------------------------------------------------


@dataclass
class Send:
    """One sending device: ``count`` messages into a conversation, ``interval`` apart, the
    first at ``offset`` seconds after the common start. ``label`` groups ack latencies (W6)."""

    device: Device
    conversation_id: int
    count: int
    offset: float = 0.0
    label: str = "all"
    receives: int = 0  # this run's messages the same socket must also get (a group member who sends)


@dataclass
class Plan:
    """What one load-generator process does. Every process of a run gets the same timing."""

    senders: list[Send]
    receivers: list[tuple[Device, int]]  # device, how many of this run's messages it must get
    interval: float  # seconds between two messages of one sender
    tag: str  # client_msg_id prefix and body marker of this run
    span: float = 0.0  # seconds from the start to the last due time of the whole run
    grace: float = 3.0  # after the last due time: messages not sent yet are given up
    drain: float = 15.0  # after that: how long to wait for acks and deliveries still missing
    churn: float = 0.0  # mean seconds between a client's disconnects (W7); 0: none
    offline: tuple[float, float] = (0.2, 2.0)  # seconds a disconnected client stays away
    catch_up: bool = False  # receivers sync while a gap stays open after the offer (W7)
    keep_arrivals: bool = False  # per message, the slowest receiver and how many got it (W4)


def message_key(conversation_id: int, seq: int) -> int:
    """One int per message (compact in memory for long runs): conversation and seq."""
    return conversation_id << 32 | seq


@dataclass
class Stats:
    ack_ms: dict[str, array[float]] = field(default_factory=dict)  # per sender label
    e2e_ms: array[float] = field(default_factory=lambda: array("d"))  # per live delivery
    keep_arrivals: bool = False
    arrivals: dict[int, list[float]] = field(default_factory=dict)  # message key: [slowest ms, receivers]
    acked: array[int] = field(default_factory=lambda: array("q"))  # message keys, one per acked send
    offered: int = 0
    sent: int = 0
    not_sent: int = 0
    unacked: int = 0
    rejected: int = 0
    resent: int = 0
    delivered: int = 0
    via_sync: int = 0
    overlap: int = 0  # a message that a sync brought again (allowed: receivers keep one copy)
    duplicates: int = 0
    missing: int = 0
    short_receivers: int = 0
    disconnects: int = 0
    syncs: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_ack_at: float = 0.0
    last_arrival_at: float = 0.0

    COUNTS = (
        "offered", "sent", "not_sent", "unacked", "rejected", "resent", "delivered", "via_sync", "overlap",
        "duplicates", "missing", "short_receivers", "disconnects", "syncs", "last_ack_at", "last_arrival_at",
    )  # fmt: skip

    def result(self) -> dict[str, Any]:
        return {
            "ack_ms": self.ack_ms,
            "e2e_ms": self.e2e_ms,
            "arrival_keys": array("q", self.arrivals),
            "arrival_max_ms": array("d", (v[0] for v in self.arrivals.values())),
            "arrival_count": array("l", (int(v[1]) for v in self.arrivals.values())),
            "acked": self.acked,
            **{name: getattr(self, name) for name in self.COUNTS},
            "errors": dict(self.errors),
        }


class Peer:
    """A device's socket, which a churning run closes and opens again."""

    def __init__(self, device: Device, stats: Stats) -> None:
        self.device = device
        self.stats = stats
        self.conn: Any = None
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def connect(self) -> bool:
        try:
            self.conn = await open_socket(self.device)
        except Exception as exc:
            self.stats.errors[f"connect:{type(exc).__name__}"] += 1
            self.conn = None
            return False
        self.on_connected()
        return True

    def on_connected(self) -> None:
        """Called right after a (re)connect, before anything else runs on the loop."""

    async def send(self, payload: str) -> bool:
        conn = self.conn
        if conn is None:
            return False
        try:
            await conn.send(payload)
        except websockets.ConnectionClosed:
            return False
        return True

    async def churn(self, mean: float, offline: tuple[float, float], until: float, deadline: float) -> None:
        """Disconnect now and then, stay away a moment, reconnect (then ``on_connected``)."""
        while True:
            await asyncio.sleep(random.expovariate(1 / mean))
            if time.time() > until:
                return
            conn, self.conn = self.conn, None
            if conn is not None:
                self.stats.disconnects += 1
                with contextlib.suppress(Exception):
                    await conn.close()
            await asyncio.sleep(random.uniform(*offline))
            while not await self.connect():
                if time.time() > deadline:
                    return
                await asyncio.sleep(1)

    async def ping(self) -> None:
        while True:
            await asyncio.sleep(PING_EVERY)
            await self.send('{"type": "ping"}')

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()


class Sender(Peer):
    def __init__(self, send: Send, tag: str, stats: Stats) -> None:
        super().__init__(send.device, stats)
        self.plan = send
        # What this socket receives from the others (a member of a group who also sends).
        self.inbox = Receiver(send.device, send.receives, tag, stats) if send.receives else None
        self.unacked: dict[str, tuple[float, str]] = {}  # frame id: due time, frame
        self.acked: dict[str, int] = {}  # frame id: message key
        self.done_sending = False
        self.all_acked = asyncio.Event()
        stats.ack_ms.setdefault(send.label, array("d"))

    def on_connected(self) -> None:
        self.spawn(self.read(self.conn))
        if self.unacked:  # sent before the socket dropped and never acked: again, same client_msg_id
            self.spawn(self.resend(self.conn, [frame for _, frame in self.unacked.values()]))

    async def resend(self, conn: Any, frames: list[str]) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            for frame in frames:
                await conn.send(frame)
                self.stats.resent += 1

    def _settled(self) -> None:
        if self.done_sending and not self.unacked:
            self.all_acked.set()

    async def read(self, conn: Any) -> None:
        stats = self.stats
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in conn:
                frame = orjson.loads(raw)
                kind = frame.get("type")
                if kind == "message.new" and self.inbox is not None:
                    self.inbox.apply(frame["message"], live=True)
                elif kind == "message.ack":
                    frame_id, message = frame.get("id"), frame["message"]
                    key = message_key(message["conversation_id"], message["seq"])
                    pending = self.unacked.pop(frame_id, None)
                    if pending is not None:
                        now = time.time()
                        stats.ack_ms[self.plan.label].append((now - pending[0]) * 1000)
                        stats.last_ack_at = max(stats.last_ack_at, now)
                        self.acked[frame_id] = key
                        stats.acked.append(key)
                    elif self.acked.get(frame_id, key) != key:  # a retry stored as a second message
                        stats.duplicates += 1
                    self._settled()
                elif kind == "error":
                    stats.errors[str(frame.get("code"))] += 1
                    if self.unacked.pop(frame.get("id"), None) is not None:
                        stats.rejected += 1
                    self._settled()

    async def run(self, interval: float, tag: str, start_at: float, offer_end: float, deadline: float) -> None:
        plan, stats = self.plan, self.stats
        base = start_at + plan.offset
        stats.offered += plan.count
        for i in range(plan.count):
            due = base + i * interval
            now = time.time()
            if now > offer_end:
                stats.not_sent += plan.count - i
                break
            if due > now:
                await asyncio.sleep(due - now)
            frame_id = f"{plan.conversation_id}-{self.device.user_id}-{i}"
            frame = orjson.dumps(
                {
                    "type": "message.send",
                    "id": frame_id,
                    "conversation_id": plan.conversation_id,
                    "client_msg_id": f"{tag}-{frame_id}",
                    "body": f"{tag}|{due:.6f}|{i}",
                }
            ).decode()
            self.unacked[frame_id] = (due, frame)
            # A send blocked by a server that stopped reading ends the offer (the frame is
            # in the socket's buffer; its ack may still come).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.send(frame), timeout=max(0.5, offer_end - time.time()))
            stats.sent += 1
        self.done_sending = True
        self._settled()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_acked.wait(), timeout=max(0.0, deadline - time.time()))
        stats.unacked += len(self.unacked)


@dataclass
class Track:
    """What a receiver holds of one conversation, compactly: every seq up to ``prefix`` has
    arrived; ``cursor`` is that message's version (where a sync resumes)."""

    prefix: int = 0
    cursor: int = 0
    above: dict[int, int] = field(default_factory=dict)  # seqs above the prefix that arrived: version
    synced: set[int] = field(default_factory=set)  # seqs whose first copy came through a sync

    def has(self, seq: int) -> bool:
        return seq <= self.prefix or seq in self.above

    def add(self, seq: int, version: int) -> None:
        self.above[seq] = version
        while self.prefix + 1 in self.above:
            self.prefix += 1
            self.cursor = self.above.pop(self.prefix)


class Receiver(Peer):
    def __init__(self, device: Device, expected: int, tag: str, stats: Stats) -> None:
        super().__init__(device, stats)
        self.expected = expected
        self.marker = f"{tag}|"
        self.got = 0
        self.tracks: dict[int, Track] = {}
        self.syncing = False
        self.connected_before = False
        self.complete = asyncio.Event()
        if expected <= 0:
            self.complete.set()

    def on_connected(self) -> None:
        self.spawn(self.read(self.conn))
        if self.connected_before:  # back after a drop: what did we miss?
            self.spawn(self.sync())
        self.connected_before = True

    async def sync(self) -> None:
        self.syncing = True
        cursors = {str(c): t.cursor for c, t in self.tracks.items()}
        if not await self.send(orjson.dumps({"type": "sync", "id": "s", "cursors": cursors}).decode()):
            self.syncing = False

    def apply(self, message: dict[str, Any], *, live: bool) -> None:
        stats = self.stats
        conversation, seq = message["conversation_id"], message["seq"]
        track = self.tracks.get(conversation)
        if track is None:
            track = self.tracks[conversation] = Track()
        if track.has(seq):
            if live and seq not in track.synced:
                stats.duplicates += 1  # the same live event twice
            else:
                stats.overlap += 1
            return
        track.add(seq, message["version"])
        if not live:
            track.synced.add(seq)
        body = message.get("body") or ""
        if not body.startswith(self.marker):
            return
        now = time.time()
        latency = (now - float(body.split("|")[1])) * 1000
        if live:
            stats.e2e_ms.append(latency)
        else:
            stats.via_sync += 1
        if stats.keep_arrivals:
            key = message_key(conversation, seq)
            slot = stats.arrivals.get(key)
            if slot is None:
                stats.arrivals[key] = [latency, 1]
            else:
                slot[0] = max(slot[0], latency)
                slot[1] += 1
        stats.delivered += 1
        stats.last_arrival_at = max(stats.last_arrival_at, now)
        self.got += 1
        if self.got >= self.expected:
            self.complete.set()

    async def read(self, conn: Any) -> None:
        stats = self.stats
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in conn:
                frame = orjson.loads(raw)
                kind = frame.get("type")
                if kind == "message.new":
                    self.apply(frame["message"], live=True)
                elif kind == "sync.batch":
                    for message in frame["messages"]:
                        self.apply(message, live=False)
                elif kind == "sync.done":
                    self.syncing = False
                    stats.syncs += 1
                elif kind == "error":
                    stats.errors[str(frame.get("code"))] += 1

    async def catch_up(self, offer_end: float) -> None:
        """A gap still open a couple of seconds after the last send: sync (docs/protocol.md)."""
        await asyncio.sleep(max(0.0, offer_end - time.time()))
        while not self.complete.is_set():
            if not self.syncing:
                await self.sync()
            await asyncio.sleep(2)

    async def run(self, deadline: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.complete.wait(), timeout=max(0.0, deadline - time.time()))
        if self.got < self.expected:
            self.stats.short_receivers += 1
            self.stats.missing += self.expected - self.got


def chat(plan: Plan, ready: Any, go: Any, shared: Any) -> dict[str, Any]:
    """Connect every client, signal ``ready``, start at the common time, send and receive."""
    _loop_policy()

    async def main() -> dict[str, Any]:
        stats = Stats(keep_arrivals=plan.keep_arrivals)
        senders = [Sender(s, plan.tag, stats) for s in plan.senders]
        receivers = [Receiver(d, n, plan.tag, stats) for d, n in plan.receivers]
        peers: list[Peer] = [*receivers, *senders]
        for chunk in range(0, len(peers), 100):
            await asyncio.gather(*(p.connect() for p in peers[chunk : chunk + 100]))
        ready.set()
        await asyncio.to_thread(go.wait)
        start_at = float(shared["start_at"])
        offer_end = start_at + plan.span + plan.grace
        deadline = offer_end + plan.drain
        for peer in peers:
            if plan.span + plan.drain > PING_EVERY * 2:
                peer.spawn(peer.ping())
            if plan.churn:
                peer.spawn(peer.churn(plan.churn, plan.offline, offer_end - plan.grace, deadline))
        if plan.catch_up:
            for receiver in receivers:
                receiver.spawn(receiver.catch_up(offer_end))
        inboxes = [s.inbox for s in senders if s.inbox is not None]
        runs = [r.run(deadline) for r in [*receivers, *inboxes]] + [
            s.run(plan.interval, plan.tag, start_at, offer_end, deadline) for s in senders
        ]
        outcomes = await asyncio.gather(*runs, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                stats.errors[f"client:{type(outcome).__name__}"] += 1
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        return stats.result()

    return asyncio.run(main())


def run_chat(
    plans: list[Plan],
    *,
    on_start: Callable[[float], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    tick: float = 5.0,
) -> tuple[float, list[dict[str, Any]]]:
    """Run ``plans`` in one process each, all starting at one moment once every client is
    connected (``on_start`` gets that moment first); ``on_tick`` runs every ``tick`` seconds
    meanwhile. Returns the start time and each process's result."""
    span = max((s.offset + (s.count - 1) * p.interval for p in plans for s in p.senders), default=0.0)
    for plan in plans:
        plan.span = span
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(len(plans)) as pool:
        ready = [manager.Event() for _ in plans]
        go, shared = manager.Event(), manager.dict()
        pending = pool.starmap_async(chat, [(p, ready[i], go, shared) for i, p in enumerate(plans)])
        connect_deadline = time.monotonic() + 300
        for event in ready:
            while not event.wait(timeout=1):
                if pending.ready():
                    pending.get()  # a load generator failed: raise its error
                    raise RuntimeError("a load generator ended before connecting")
                if time.monotonic() > connect_deadline:
                    raise RuntimeError("load generators did not open their connections")
        start_at = time.time() + 1.0
        shared["start_at"] = start_at
        if on_start is not None:
            on_start(start_at)
        go.set()
        limit = time.monotonic() + 1.0 + span + max(p.grace + p.drain for p in plans) + 120
        while not pending.ready():
            pending.wait(tick)
            if on_tick is not None and not pending.ready():
                on_tick()
            if time.monotonic() > limit:
                raise RuntimeError("load generators did not finish")
        return start_at, pending.get()


# --- W5: reconnect sync --------------------------------------------------------------------------


def resync(device: Device, cursors: dict[str, int]) -> dict[str, Any]:
    """Connect, send ``sync`` with the cursors, time until ``sync.done``."""
    _loop_policy()

    async def main() -> dict[str, Any]:
        t0 = time.perf_counter()
        conn = await open_socket(device)
        await conn.send(orjson.dumps({"type": "sync", "id": "w5", "cursors": cursors}).decode())
        messages = batches = 0
        async for raw in conn:
            frame = orjson.loads(raw)
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
