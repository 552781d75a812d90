"""A cluster on test hosts: web processes on network-namespace hosts behind nginx, and app
devices that behave as docs/protocol.md asks of them.

The web processes and nginx are started with ``scripts/run_cluster.sh``, the script behind
``make run-cluster``: ``web HOST:PORT`` on each host and nginx with the configuration it
renders from ``scripts/nginx.conf.template``. nginx listens on the root namespace's loopback
and reaches the web hosts over the test network (tests/netns.py); the hosts reach
PostgreSQL, RabbitMQ and Redis through the network's gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets
from django.conf import settings
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tests.conftest import (
    ROOT,
    AppLogin,
    LoopbackURLs,
    free_port,
    server_env,
    stop_process,
    wait_for_redis,
    wait_until,
)
from tests.netns import Host, Network

WEB_PORT = 8000


def served_by(headers: Any) -> str:
    """The web process (host:port) that answered, from nginx's ``X-Upstream``: the last one
    nginx tried when it had to skip some."""
    value: str = headers.get("X-Upstream", "")
    return value.split(",")[-1].strip()


def _via(url: str, gateway: str, port: int) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{gateway}:{port}" if credentials else f"{gateway}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def service_env(network: Network, log_path: Path) -> dict[str, str]:
    """Relay this run's PostgreSQL, Redis and RabbitMQ onto the network's gateway and return
    the URLs the hosts use to reach them there."""
    db = settings.DATABASES["default"]
    database_url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    urls = {
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
    }
    targets: dict[int, tuple[str, int]] = {}
    env: dict[str, str] = {}
    for name, url in urls.items():
        if not url:
            continue
        parts = urlsplit(url)
        port = parts.port or {"postgres": 5432, "redis": 6379, "amqp": 5672}[parts.scheme]
        targets[port] = (parts.hostname or "127.0.0.1", port)
        env[name] = _via(url, network.gateway, port)
    network.forward(targets, log_path)
    return env


@dataclass
class WebNode:
    """One web host: ``run_cluster.sh web`` in its namespace, on its own address."""

    host: Host
    env: dict[str, str] = field(repr=False)
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def upstream(self) -> str:
        return f"{self.host.address}:{WEB_PORT}"

    @property
    def name(self) -> str:
        return self.host.name

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        process = self.host.popen(
            ["bash", "scripts/run_cluster.sh", "web", self.upstream], env=self.env, log_path=self.log_path
        )
        self.process = process

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {process.returncode}:\n{self.log()[-3000:]}")
            try:
                # The probe names an allowed host, as a balancer's health check is configured to.
                response = httpx.get(f"http://{self.upstream}/healthz", headers={"Host": "localhost"}, timeout=1)
                return response.status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=30, what=f"{self.name} to answer /healthz")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait for the process to exit (it drains first); its exit status."""
        assert self.process is not None
        stop_process(self.process, timeout=timeout)
        return self.process.returncode

    def kill(self) -> None:
        """The host dies: SIGKILL to every process on it."""
        self.host.kill_all()
        if self.process is not None:
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class RedisNode:
    """A Redis host: ``redis-server`` in its namespace, listening on its own address only."""

    host: Host
    log_path: Path
    port: int = 6379

    @property
    def url(self) -> str:
        return f"redis://{self.host.address}:{self.port}/0"

    def start(self) -> None:
        process = self.host.popen(
            [
                *("redis-server", "--bind", self.host.address, "--port", str(self.port)),
                *("--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", str(self.log_path.parent)),
            ],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            log_path=self.log_path,
        )
        wait_for_redis(
            host=self.host.address,
            port=self.port,
            what=f"redis-server on {self.host.name}",
            process=process,
            log_path=self.log_path,
        )


@dataclass
class Balancer(LoopbackURLs):
    """nginx in the root namespace, configured by ``run_cluster.sh nginx-conf``."""

    directory: Path
    upstreams: list[str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        script = str(ROOT / "scripts" / "run_cluster.sh")
        listen = f"127.0.0.1:{self.port}"
        subprocess.run(["bash", script, "nginx-conf", str(self.directory), listen, *self.upstreams], check=True)
        with (self.directory / "nginx.out").open("ab") as log:
            process = subprocess.Popen(
                ["bash", script, "nginx", str(self.directory)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.process = process

        def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"nginx exited with {process.returncode}:\n{self.log()}")
            try:
                httpx.get(f"{self.http_url}/healthz", timeout=1)
            except httpx.TransportError:
                return False
            return True

        wait_until(listening, timeout=15, what="nginx to listen")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)

    def log(self) -> str:
        return (self.directory / "nginx.out").read_text(errors="replace")


@dataclass
class Cluster:
    network: Network
    web: dict[str, WebNode]
    balancer: Balancer
    redis: dict[str, RedisNode] = field(default_factory=dict)

    def ensure_running(self) -> None:
        for node in self.web.values():
            if not node.running():
                node.start()

    def node_of(self, upstream: str) -> str:
        return next(name for name, node in self.web.items() if node.upstream == upstream)

    def close(self) -> None:
        self.balancer.stop()
        self.network.close()


def start_cluster(
    tmp: Path,
    *,
    web_hosts: tuple[str, ...] = ("webA", "webB"),
    redis_shard_hosts: tuple[str, ...] = (),
    **extra_env: str,
) -> Cluster:
    """A network with a web process per host and nginx in front; with ``redis_shard_hosts``,
    a Redis per such host, which the web processes use as their REDIS_SHARD_URLS (the cache
    stays on REDIS_URL). On failure everything made so far is removed again."""
    network = Network()
    try:
        shards = {name: RedisNode(network.add_host(name), tmp / f"{name}.log") for name in redis_shard_hosts}
        for shard in shards.values():
            shard.start()
        if shards:
            extra_env = {"REDIS_SHARD_URLS": ",".join(s.url for s in shards.values()), **extra_env}
        env = server_env(
            VENV_BIN=str(Path(sys.executable).parent),
            **service_env(network, tmp / "relay.log"),
            **extra_env,
        )
        nodes = {name: WebNode(network.add_host(name), env, tmp / f"{name}.log") for name in web_hosts}
        for node in nodes.values():
            node.start()
        nginx_dir = tmp / "nginx"
        nginx_dir.mkdir()
        balancer = Balancer(nginx_dir, [node.upstream for node in nodes.values()])
        cluster = Cluster(network, nodes, balancer, shards)
        balancer.start()
    except BaseException:
        network.close()
        raise
    return cluster


# --- devices ------------------------------------------------------------------------------------

_frame_ids = itertools.count(1)


class Device:
    """One app install, as docs/protocol.md asks clients to behave.

    It keeps per-conversation cursors and applies every message idempotently (the copy with
    the higher ``version`` wins), folds receipt cursors (a member's message also moves that
    member's cursors to its ``seq``), syncs on every (re)connect, syncs again when a ``seq``
    gap stays open, and retries a send with the same ``client_msg_id`` until it is acked.
    When its socket drops it reconnects through the balancer. Waits are on events.
    """

    def __init__(self, name: str, login: AppLogin, url: str) -> None:
        self.name = name
        self.user_id: int = login.device.user_id
        self.token = login.access
        self.url = url
        self.conn: ClientConnection | None = None
        self.online = False  # connected and synced
        self.reconnect = True
        self.upstreams: list[str] = []  # the web process of each connection, in order
        self.close_codes: list[int | None] = []
        self.messages: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
        self.cursors: dict[int, int] = {}
        self.receipts: dict[tuple[int, int], tuple[int, int]] = {}
        self.pending: dict[str, dict[str, Any]] = {}  # client_msg_id -> frame, until acked
        self.acked: dict[str, dict[str, Any]] = {}
        self.sent: list[str] = []
        self.sent_on: dict[str, int] = {}  # client_msg_id -> number of the connection it was first sent on
        self.acked_on: dict[str, int] = {}
        self.conflicts: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.errors: list[dict[str, Any]] = []
        self.gap_syncs = 0
        self.on_frame: Callable[[dict[str, Any]], object] | None = None  # sees every frame
        self.changed = asyncio.Condition()
        self._sync_id = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._cmids = itertools.count(1)

    # --- lifecycle ---

    async def start(self, prefer: str | None = None, timeout: float = 15) -> Device:
        """Connect (to the web process ``prefer``, host:port, if given) and sync."""
        conn, upstream = await self._open(prefer)
        self._tasks.append(asyncio.get_running_loop().create_task(self._run(conn, upstream)))
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch_gaps()))
        await self.until(lambda: self.online, timeout, "the first sync")
        return self

    async def stop(self) -> None:
        self.reconnect = False
        if self.conn is not None:
            await self.conn.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _open(self, prefer: str | None) -> tuple[ClientConnection, str]:
        """One socket through the balancer. To reach a given web process, keep the sockets
        that landed elsewhere open meanwhile (least_conn then picks another) and close them."""
        parked: list[ClientConnection] = []
        deadline = asyncio.get_running_loop().time() + 20
        try:
            while True:
                conn = await websockets.connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    open_timeout=10,
                    max_size=2**22,
                )
                assert conn.response is not None
                upstream = served_by(conn.response.headers)
                if prefer is None or upstream == prefer:
                    return conn, upstream
                parked.append(conn)
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"{self.name}: nginx never chose {prefer}")
                if len(parked) >= 8:
                    # nginx keeps a web process it could not reach out of rotation for
                    # fail_timeout (2 s): start over once it may be back.
                    await asyncio.gather(*(extra.close() for extra in parked))
                    parked.clear()
                    await asyncio.sleep(0.5)
        finally:
            for extra in parked:
                await extra.close()

    async def _reopen(self, timeout: float = 30) -> tuple[ClientConnection, str]:
        """Reconnect with backoff until the balancer finds a live web process."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.05
        while True:
            try:
                return await self._open(None)
            except (OSError, InvalidHandshake, InvalidStatus, TimeoutError):
                if loop.time() > deadline:
                    raise
            await asyncio.sleep(delay)  # backoff between attempts, not a synchronisation
            delay = min(delay * 2, 0.5)

    async def _run(self, conn: ClientConnection, upstream: str) -> None:
        while True:
            with contextlib.suppress(ConnectionClosed):
                await self._session(conn, upstream)
            self.close_codes.append(conn.close_code)
            async with self.changed:
                self.online, self.conn = False, None
                self.changed.notify_all()
            if not self.reconnect:
                return
            conn, upstream = await self._reopen()

    async def _session(self, conn: ClientConnection, upstream: str) -> None:
        self.conn = conn
        self.upstreams.append(upstream)
        hello = json.loads(await conn.recv())
        assert hello["type"] == "hello", hello
        await self.sync()
        async for raw in conn:
            frame: dict[str, Any] = json.loads(raw)
            async with self.changed:
                if self.on_frame is not None:
                    self.on_frame(frame)
                self._apply(frame)
                synced = frame["type"] == "sync.done" and frame.get("id") == self._sync_id and not self.online
                if synced:
                    self.online = True
                self.changed.notify_all()
            if synced:
                for pending in list(self.pending.values()):  # retry what was never acked
                    await conn.send(json.dumps(pending))

    async def sync(self) -> None:
        if self.conn is None:
            return
        self._sync_id = f"{self.name}-sync-{next(_frame_ids)}"
        cursors = {str(c): v for c, v in self.cursors.items()}
        with contextlib.suppress(ConnectionClosed):
            await self.conn.send(json.dumps({"type": "sync", "id": self._sync_id, "cursors": cursors}))

    async def _watch_gaps(self) -> None:
        """A ``seq`` gap still open a second later means a missed live event: sync."""
        seen: set[tuple[int, int]] = set()
        while True:
            await asyncio.sleep(0.5)  # a periodic check, as an app's timer would do
            gaps = {(c, s) for c in self.messages for s in self._missing(c)}
            if gaps & seen and self.online:
                self.gap_syncs += 1
                await self.sync()
                gaps = set()
            seen = gaps

    def _missing(self, conversation_id: int) -> set[int]:
        seqs = self.messages[conversation_id]
        return set(range(min(seqs), max(seqs) + 1)) - set(seqs) if seqs else set()

    # --- what arrives ---

    def _apply(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind in ("message.new", "message.updated"):
            self._store(frame["message"])
        elif kind == "message.ack":
            message = frame["message"]
            self.acked[message["client_msg_id"]] = message
            self.acked_on.setdefault(message["client_msg_id"], len(self.upstreams))
            self.pending.pop(message["client_msg_id"], None)
            self._store(message)
        elif kind == "sync.batch":
            for message in frame["messages"]:
                self._store(message)
            conversation_id = frame["conversation_id"]
            self.cursors[conversation_id] = max(self.cursors.get(conversation_id, 0), frame["version"])
        elif kind == "sync.done":
            for receipt in frame["receipts"]:
                self._receipt(receipt)
        elif kind == "receipt.update":
            self._receipt(frame)
        elif kind == "error":
            if frame.get("code") == "rate_limited" and frame.get("id") in self.pending:
                # Not processed: send it again a second later (or after the next reconnect).
                asyncio.get_running_loop().call_later(1, self._retry, frame["id"])
            else:
                self.errors.append(frame)

    def _retry(self, client_msg_id: str) -> None:
        frame = self.pending.get(client_msg_id)
        if frame is not None and self.conn is not None:
            asyncio.get_running_loop().create_task(self._send(frame))

    def _store(self, message: dict[str, Any]) -> None:
        conversation_id, seq = message["conversation_id"], message["seq"]
        current = self.messages[conversation_id].get(seq)
        if current is not None and current["id"] != message["id"]:
            self.conflicts.append((current, message))
        if current is None or message["version"] >= current["version"]:
            self.messages[conversation_id][seq] = message
        if message.get("sender_id"):
            self._receipt(
                {
                    "conversation_id": conversation_id,
                    "user_id": message["sender_id"],
                    "delivered_seq": seq,
                    "read_seq": seq,
                }
            )

    def _receipt(self, receipt: dict[str, Any]) -> None:
        key = (receipt["conversation_id"], receipt["user_id"])
        delivered, read = self.receipts.get(key, (0, 0))
        self.receipts[key] = (max(delivered, receipt["delivered_seq"]), max(read, receipt["read_seq"]))

    # --- what it does ---

    async def _send(self, frame: dict[str, Any]) -> None:
        conn = self.conn
        if conn is not None and self.online:
            with contextlib.suppress(ConnectionClosed):
                await conn.send(json.dumps(frame))

    async def send_message(self, conversation_id: int, body: str) -> str:
        """Send a message; it is retried until acked. Returns its ``client_msg_id``."""
        client_msg_id = f"{self.name}-{next(self._cmids)}"
        frame = {
            "type": "message.send",
            "id": client_msg_id,
            "conversation_id": conversation_id,
            "client_msg_id": client_msg_id,
            "body": body,
        }
        self.pending[client_msg_id] = frame
        self.sent.append(client_msg_id)
        self.sent_on[client_msg_id] = len(self.upstreams)
        await self._send(frame)
        return client_msg_id

    async def mark_read(self, conversation_id: int) -> None:
        """Read everything shown so far (sent again after a reconnect by the caller's loop)."""
        seqs = self.messages[conversation_id]
        if seqs:
            await self._send(
                {"type": "receipt", "conversation_id": conversation_id, "status": "read", "seq": max(seqs)}
            )

    async def until(self, predicate: Any, timeout: float, what: str) -> None:
        """Wait until ``predicate()`` holds, re-checked whenever a frame arrives."""
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(predicate), timeout)
            except TimeoutError:
                raise AssertionError(f"{self.name}: timed out after {timeout}s waiting for {what}") from None

    def state(self, conversation_id: int) -> dict[int, dict[str, Any]]:
        return dict(sorted(self.messages[conversation_id].items()))


async def settle(devices: list[Device], expect: Any, timeout: float, what: str) -> None:
    """Wait until ``expect(device)`` holds for every device."""
    await asyncio.gather(*(d.until(lambda d=d: expect(d), timeout, what) for d in devices))
