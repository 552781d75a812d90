"""Redis shards: the channel layer, presence and rate windows spread over two real Redis
processes, and what losing one of them does (docs/operations.md, "Redis shards").

A stopped process (SIGSTOP) stands for a host cut off the network: connections stay open
and nothing answers. A killed one (SIGKILL) refuses connections until it is started again,
empty. Either way the users of the other shard keep chatting live, every send is acked and
stored, and the users of the lost shard get everything by reconnecting and syncing.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from channels_redis.utils import _consistent_hash
from django.conf import settings

from accounts.models import User
from chat_project.channel_layer import RESUMED, ShardedPubSubChannelLayer
from chat_project.redis_client import ShardUnavailable, key, shard_of
from conversations import presence
from conversations.models import Message
from conversations.ratelimit import UserWindow
from tests.conftest import (
    LiveServer,
    app_login,
    free_port,
    make_user,
    start_server,
    stop_server,
    wait_for_redis,
    wait_until,
)
from tests.test_messaging_ws import direct
from tests.wsclient import WSClient, run

# Shard timeouts of the servers under test: a lost shard is noticed within about 2 s.
TIMEOUT = 1.0
# What "live" means here while a shard is lost: far below a hang, well above a loaded CI box.
LIVE = 3.0
_ids = itertools.count(1)


@dataclass
class RedisProcess:
    """A redis-server of our own on a loopback port, that tests can stop, kill and restart."""

    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    stopped: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_redis(port=self.port, what=f"redis-server on port {self.port}", process=self.process)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        """Freeze it: connections stay open and nothing answers (a host cut off)."""
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.stopped = False

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def terminate(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if self.stopped:
            self.cont()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def redis_shards(tmp_path: Path) -> Iterator[list[RedisProcess]]:
    shards = [RedisProcess(port=free_port(), log_path=tmp_path / f"redis-{n}.log") for n in range(2)]
    try:
        for shard in shards:
            shard.start()
        yield shards
    finally:
        for shard in shards:
            shard.terminate()


def layer_shard(user_id: int) -> int:
    """The shard the channel layer puts the user's group on (channels_redis's own hash)."""
    return int(_consistent_hash(f"{settings.CHANNEL_LAYER_PREFIX}__group__user.{user_id}", 2))


def users_on_each_shard(count: int) -> dict[int, list[User]]:
    """``count`` users per shard whose channel group *and* presence keys live on that shard."""
    found: dict[int, list[User]] = {0: [], 1: []}
    for n in itertools.count():
        if all(len(users) == count for users in found.values()):
            return found
        user = make_user(f"shard-user-{n}")
        shard = layer_shard(user.pk)
        if shard == shard_of(user.pk, 2) and len(found[shard]) < count:
            found[shard].append(user)
    raise AssertionError("unreachable")


def send_frame(conversation_id: int, body: str) -> dict[str, Any]:
    n = next(_ids)
    return {
        "type": "message.send",
        "id": f"f{n}",
        "conversation_id": conversation_id,
        "client_msg_id": f"c{n}",
        "body": body,
    }


async def chat_live(sender: WSClient, receiver: WSClient, conversation_id: int, body: str) -> dict[str, Any]:
    """Send, then wait for the ack and the receiver's live copy, each within LIVE seconds."""
    ack = await sender.request(send_frame(conversation_id, body), "message.ack", timeout=LIVE)
    assert ack["type"] == "message.ack", ack
    await receiver.expect("message.new", lambda f: f["message"]["id"] == ack["message"]["id"], timeout=LIVE)
    return ack


async def synced_bodies(client: WSClient, cursors: dict[int, int]) -> list[str]:
    """Sync from ``cursors``; the bodies of the messages it returned."""
    frame_id = f"sync{next(_ids)}"
    await client.send({"type": "sync", "id": frame_id, "cursors": {str(c): v for c, v in cursors.items()}})
    await client.expect("sync.done", lambda f: f["id"] == frame_id)
    batches = [f for f in client.received if f["type"] == "sync.batch" and f["id"] == frame_id]
    return [m["body"] for batch in batches for m in batch["messages"]]


# --- the shards in process: the layer, presence, rate windows ---------------------------------


def test_the_layer_fails_fast_on_a_lost_shard_and_tells_its_groups_when_it_returns(
    redis_shards: list[RedisProcess],
) -> None:
    prefix = f"{settings.CHANNEL_LAYER_PREFIX}-layer"
    layer = ShardedPubSubChannelLayer(hosts=[s.url for s in redis_shards], prefix=prefix, timeout=TIMEOUT)
    groups: dict[int, str] = {}
    for n in itertools.count():
        group = f"user.{n}"
        groups.setdefault(int(_consistent_hash(f"{prefix}__group__{group}", 2)), group)
        if len(groups) == 2:
            break

    async def scenario() -> dict[str, Any]:
        channels = {shard: await layer.new_channel() for shard in groups}
        for shard, group in groups.items():
            await layer.group_add(group, channels[shard])

        async def roundtrip(shard: int, n: int) -> dict[str, Any]:
            await layer.group_send(groups[shard], {"type": "client.event", "n": n})
            message: dict[str, Any] = await asyncio.wait_for(layer.receive(channels[shard]), LIVE)
            return message

        before = [await roundtrip(0, 0), await roundtrip(1, 0)]
        # Pipelined: one message to groups on both shards.
        shared = {"type": "client.event", "n": "both"}
        both_failures = await layer.group_send_many([(groups[0], shared), (groups[1], shared)])
        both = [await asyncio.wait_for(layer.receive(channels[shard]), LIVE) for shard in (0, 1)]
        redis_shards[1].stop()
        failures, started = [], time.monotonic()
        for n in range(3):
            try:
                await layer.group_send(groups[1], {"type": "client.event", "n": n})
            except ShardUnavailable:
                failures.append(round(time.monotonic() - started, 2))
                started = time.monotonic()
        during = await roundtrip(0, 1)
        # Pipelined with one shard lost: the live shard's share arrives, the lost one is reported.
        shared = {"type": "client.event", "n": "one"}
        one_failures = await layer.group_send_many([(groups[0], shared), (groups[1], shared)])
        one = await asyncio.wait_for(layer.receive(channels[0]), LIVE)
        # Joining a group on the lost shard neither fails nor waits.
        late = await layer.new_channel()
        started = time.monotonic()
        await layer.group_add(groups[1], late)
        join_seconds = time.monotonic() - started
        redis_shards[1].cont()
        resumed = [await asyncio.wait_for(layer.receive(c), 15) for c in (channels[1], late)]
        after = await roundtrip(1, 2)
        await layer.flush()
        return {
            "before": before,
            "both": (both_failures, both),
            "one": (one_failures, one),
            "failures": failures,
            "during": during,
            "join": join_seconds,
            "resumed": resumed,
            "after": after,
        }

    result = run(scenario())
    assert [m["n"] for m in result["before"]] == [0, 0]
    # The first send waits for the timeout, the others fail at once; the other shard carries on.
    assert len(result["failures"]) == 3
    assert result["failures"][0] < TIMEOUT + 1
    assert max(result["failures"][1:]) < 0.1
    assert result["during"]["n"] == 1
    assert result["both"] == ([], [{"type": "client.event", "n": "both"}] * 2)
    one_failures, one = result["one"]
    assert [type(f) for f in one_failures] == [ShardUnavailable]
    assert one == {"type": "client.event", "n": "one"}
    assert result["join"] < 0.1
    assert result["resumed"] == [{"type": RESUMED, "group": groups[1]}] * 2
    assert result["after"]["n"] == 2


def test_presence_and_rate_windows_degrade_on_a_stopped_shard_within_the_timeout(
    redis_shards: list[RedisProcess], settings: Any
) -> None:
    settings.REDIS_SHARD_URLS = [s.url for s in redis_shards]
    settings.REDIS_TIMEOUT_SECONDS = TIMEOUT
    on_0, on_1, never = 10, 11, 12  # shard_of: 0, 1, 0

    async def scenario() -> dict[str, Any]:
        store = presence.RedisPresence()
        connected = [await store.connect(on_0, "socket-a"), await store.connect(on_1, "socket-b")]
        both = await store.online([on_0, on_1, never])
        redis_shards[1].stop()
        started = time.monotonic()
        first = await store.online([on_0, on_1])
        first_seconds = time.monotonic() - started
        started = time.monotonic()
        again = await store.online([on_1, on_0])
        window = UserWindow()
        allowed = window.allow(on_1)
        await window.flush()  # fails open: the count is dropped, nothing raised
        disconnected = await store.disconnect(on_1, "socket-b")
        quick_seconds = time.monotonic() - started
        return {
            "connected": connected,
            "both": both,
            "first": first,
            "first_seconds": first_seconds,
            "again": again,
            "allowed": allowed,
            "disconnected": disconnected,
            "quick_seconds": quick_seconds,
        }

    result = run(scenario())
    assert result["connected"] == [True, True]
    assert result["both"] == {on_0: True, on_1: True, never: False}
    # Each user's lease is on their own shard.
    assert redis.Redis.from_url(redis_shards[0].url).exists(key("presence", on_0))
    # The dead shard's users read as offline; the live shard's are still online.
    assert result["first"] == {on_0: True, on_1: False}
    assert result["first_seconds"] < TIMEOUT + 1
    # Known to be down: no more waiting. The window fails open; leaving announces nothing.
    assert result["again"] == {on_1: False, on_0: True}
    assert result["allowed"] is True
    assert result["disconnected"] is False
    assert result["quick_seconds"] < 0.2


def test_online_now_reads_each_shard_once_and_a_dead_shard_as_offline(
    redis_shards: list[RedisProcess], settings: Any
) -> None:
    settings.REDIS_SHARD_URLS = [s.url for s in redis_shards]
    settings.REDIS_TIMEOUT_SECONDS = TIMEOUT
    users = list(range(20, 30))
    for user_id in users[::2] + users[1:4:2]:  # 20, 22, ..., 28 (shard 0), 21, 23 (shard 1)
        client = redis.Redis.from_url(redis_shards[shard_of(user_id, 2)].url)
        client.zadd(key("presence", user_id), {"socket": time.time() + 60})
    stats = [redis.Redis.from_url(s.url) for s in redis_shards]
    calls_before = [int(c.info("commandstats").get("cmdstat_zcount", {}).get("calls", 0)) for c in stats]

    assert presence.online_now(users) == {u: u % 2 == 0 or u in (21, 23) for u in users}

    # One pipeline per shard: each shard counted exactly its own five users.
    calls = [int(c.info("commandstats")["cmdstat_zcount"]["calls"]) for c in stats]
    assert [a - b for a, b in zip(calls, calls_before, strict=True)] == [5, 5]
    redis_shards[1].kill()
    started = time.monotonic()
    assert presence.online_now(users) == {u: u % 2 == 0 for u in users}
    assert time.monotonic() - started < TIMEOUT + 1


# --- two web processes over two shards ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("loss", ["stop", "kill"])
def test_losing_a_shard_stops_live_delivery_only_for_its_users(
    redis_shards: list[RedisProcess], tmp_path: Path, loss: str
) -> None:
    users = users_on_each_shard(2)
    (a0, b0), (a1, b1) = users[0], users[1]
    chat0, chat1, across = direct(a0, b0), direct(a1, b1), direct(a1, a0)
    logins = {u.pk: app_login(u) for u in (a0, b0, a1, b1)}
    env = {"REDIS_SHARD_URLS": ",".join(s.url for s in redis_shards), "REDIS_TIMEOUT_SECONDS": str(TIMEOUT)}
    web1 = start_server(tmp_path, name="web1", **env)
    web2 = start_server(tmp_path, name="web2", **env)
    lost = redis_shards[1]

    async def connect(server: LiveServer, user: User) -> WSClient:
        return await WSClient.connect(server.ws_url, token=logins[user.pk].access)

    async def scenario() -> dict[str, Any]:
        A0, B0 = await connect(web1, a0), await connect(web2, b0)
        A1, B1 = await connect(web1, a1), await connect(web2, b1)
        await chat_live(A0, B0, chat0.pk, "hello on shard 0")
        seen_by_b1 = await chat_live(A1, B1, chat1.pk, "hello on shard 1")

        if loss == "stop":
            lost.stop()
        else:
            lost.kill()

        # The other shard's users keep chatting live, both ways, across both web processes.
        for n in range(3):
            await chat_live(A0, B0, chat0.pk, f"shard 0 while 1 is lost {n}")
            await chat_live(B0, A0, chat0.pk, f"reply {n}")
        # The lost shard's users still send: acked at once (the first send may wait for the
        # timeout) and stored; recipients on the live shard get it live.
        started = time.monotonic()
        cut = await A1.request(send_frame(chat1.pk, "sent while shard 1 is lost"), "message.ack", timeout=LIVE + 2)
        first_ack_seconds = time.monotonic() - started
        assert cut["type"] == "message.ack", cut
        await chat_live(A1, A0, across.pk, "to a live shard's user")
        # Presence of both shards at once: the lost one's users read offline, nothing fails.
        await B0.send({"type": "presence.subscribe", "user_ids": [a0.pk, a1.pk]})
        frames = [await B0.expect("presence", timeout=LIVE) for _ in range(2)]
        seen = {f["user_id"]: f["online"] for f in frames}
        # A lost shard's user reconnects meanwhile and catches up by syncing.
        await B1.close()
        B1 = await connect(web2, b1)
        caught_up = await synced_bodies(B1, {chat1.pk: seen_by_b1["message"]["version"]})

        # Both processes noticed (an outage too short to notice is recovered from by the
        # clients' gap check instead, docs/operations.md "Redis shards").
        await asyncio.to_thread(
            wait_until,
            lambda: all("Channel layer: lost Redis" in web.log() for web in (web1, web2)),
            timeout=15,
            what="both web processes to notice the lost shard",
        )
        if loss == "stop":
            lost.cont()
        else:
            lost.start()  # empty: nothing of the outage survives in Redis

        # When it is back, the sockets of its users are closed with 1012 (reconnect and sync);
        # the other shard's sockets stay open.
        codes = [await c.expect_close(timeout=20) for c in (A1, B1)]
        await A0.request({"type": "ping", "id": "still-open-a0"}, "pong")
        await B0.request({"type": "ping", "id": "still-open-b0"}, "pong")
        A1, B1 = await connect(web1, a1), await connect(web2, b1)
        after_return = await synced_bodies(B1, {chat1.pk: seen_by_b1["message"]["version"]})
        await chat_live(A1, B1, chat1.pk, "shard 1 is live again")
        await chat_live(B1, A1, chat1.pk, "and back")
        for client in (A0, B0, A1, B1):
            await client.close()
        return {
            "first_ack_seconds": first_ack_seconds,
            "presence": seen,
            "caught_up": caught_up,
            "codes": codes,
            "after_return": after_return,
        }

    try:
        result = run(scenario(), timeout=120)
    finally:
        stop_server(web1)
        stop_server(web2)
    assert result["first_ack_seconds"] < 2 * TIMEOUT + 1
    assert result["presence"] == {a0.pk: True, a1.pk: False}
    assert result["caught_up"] == ["sent while shard 1 is lost"]
    assert result["codes"] == [1012, 1012]
    assert result["after_return"] == ["sent while shard 1 is lost"]
    # Nothing acked was lost, nothing stored twice.
    bodies = list(
        Message.objects.filter(conversation=chat1, kind="text").order_by("seq").values_list("body", flat=True)
    )
    assert bodies == ["hello on shard 1", "sent while shard 1 is lost", "shard 1 is live again", "and back"]
    assert Message.objects.filter(conversation=chat0, kind="text").count() == 7
    assert Message.objects.filter(conversation=across, body="to a live shard's user").count() == 1
    assert "lost Redis" in web1.log() + web2.log()


def test_the_user_window_counts_writes_of_every_process_in_redis(settings: Any) -> None:
    """Two processes (two windows) share a user's count through Redis: each learns the total
    at its flush, and refuses once the user reached the limit everywhere."""
    settings.WS_USER_SENDS_PER_MINUTE = 5
    user_id = random.randint(10**9, 2 * 10**9)  # a fresh key in the shared Redis

    async def scenario() -> list[bool]:
        first, second = UserWindow(), UserWindow()
        seen = [first.allow(user_id) for _ in range(3)]
        await first.flush()
        seen += [second.allow(user_id) for _ in range(2)]
        await second.flush()  # learns the total: 5
        seen.append(second.allow(user_id))
        # The first process still judges from its last total (3) until its next flush.
        seen.append(first.allow(user_id))
        await first.flush()
        seen.append(first.allow(user_id))
        return seen

    assert run(scenario()) == [True, True, True, True, True, False, True, False]
