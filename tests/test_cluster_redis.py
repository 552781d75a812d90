"""A Redis shard host cut off the network, in the cluster on real hosts (tests/cluster.py):
two web hosts behind nginx, two Redis hosts as REDIS_SHARD_URLS, each its own namespace.

Users whose shard stays keep chatting live, across web hosts; users of the cut shard still
send (acked, stored) and catch up by syncing, on reconnect while the link is down or when
the shard returns; nothing acked is lost. docs/operations.md, "Redis shards".
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from conversations import services
from conversations.models import Message
from tests import netns
from tests.cluster import Balancer, Cluster, Device, settle, start_cluster
from tests.conftest import app_login, wait_until
from tests.test_messaging_ws import direct
from tests.test_redis_shards import users_on_each_shard
from tests.wsclient import run

pytestmark = [
    pytest.mark.skipif(netns.unavailable() is not None, reason=f"no test hosts: {netns.unavailable()}"),
    pytest.mark.django_db(transaction=True),
]

# A lost shard is noticed within about this long (the web processes' REDIS_TIMEOUT_SECONDS).
TIMEOUT = 1.0
# What "live" means while a shard is cut off: far below a hang, well above a loaded CI box.
LIVE = 3.0


@pytest.fixture(scope="module")
def cluster(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    made = start_cluster(
        tmp_path_factory.mktemp("cluster-redis"),
        redis_shard_hosts=("redisA", "redisB"),
        REDIS_TIMEOUT_SECONDS=str(TIMEOUT),
    )
    yield made
    made.close()


@pytest.fixture
def lb(cluster: Cluster) -> Balancer:
    cluster.ensure_running()
    return cluster.balancer


def has(device: Device, conversation_id: int, client_msg_id: str) -> bool:
    return any(m["client_msg_id"] == client_msg_id for m in device.messages[conversation_id].values())


def test_a_cut_off_redis_shard_loses_nothing(cluster: Cluster, lb: Balancer) -> None:
    shards = users_on_each_shard(2)
    (stay_a, stay_b), (cut_a, cut_b) = shards[0], shards[1]  # shard 0 is redisA, shard 1 redisB
    live_chat, cut_chat = direct(stay_a, stay_b), direct(cut_a, cut_b)
    group = services.create_group(creator=stay_a, title="Both", member_ids=[stay_b.pk, cut_a.pk, cut_b.pk])
    web_a, web_b = cluster.web["webA"].upstream, cluster.web["webB"].upstream
    placement = [("stay-a", stay_a, web_a), ("stay-b", stay_b, web_b), ("cut-a", cut_a, web_a), ("cut-b", cut_b, web_b)]
    logins = [(name, app_login(user), upstream) for name, user, upstream in placement]
    cut_b_again = app_login(cut_b)
    redis_b = cluster.redis["redisB"].host
    chats = {d: [group.pk] for d in ("stay-a", "stay-b", "cut-a", "cut-b")}
    chats["stay-a"].append(live_chat.pk)
    chats["stay-b"].append(live_chat.pk)
    chats["cut-a"].append(cut_chat.pk)
    chats["cut-b"].append(cut_chat.pk)

    async def scenario() -> list[Device]:
        devices = {name: await Device(name, login, lb.ws_url).start(prefer=up) for name, login, up in logins}
        stay_a_ws, stay_b_ws, cut_a_ws, cut_b_ws = devices.values()
        # Before the cut every pair chats live.
        for sender, receiver, chat in ((stay_a_ws, stay_b_ws, live_chat), (cut_a_ws, cut_b_ws, cut_chat)):
            cmid = await sender.send_message(chat.pk, "before the cut")
            await receiver.until(lambda r=receiver, c=chat, m=cmid: has(r, c.pk, m), LIVE, "a live message")

        await asyncio.to_thread(redis_b.link_down)
        try:
            # The users of redisA keep chatting live, across web hosts, in their chat and the group.
            for n in range(4):
                for sender, receiver, chat in (
                    (stay_a_ws, stay_b_ws, live_chat),
                    (stay_b_ws, stay_a_ws, live_chat),
                    (stay_a_ws, stay_b_ws, group),
                ):
                    cmid = await sender.send_message(chat.pk, f"while redisB is cut off {n}")
                    await sender.until(lambda s=sender, m=cmid: m in s.acked, LIVE, "the ack")
                    await receiver.until(lambda r=receiver, c=chat, m=cmid: has(r, c.pk, m), LIVE, "a live message")
            # Every web process has noticed by now (its channel layer logs it): the cut lasts
            # longer than their health checks, as an outage does, not a blip.
            lost = f"lost Redis {redis_b.address}:"
            await asyncio.to_thread(
                wait_until,
                lambda: all(lost in node.log() for node in cluster.web.values()),
                timeout=15,
                what="every web process to notice that redisB is gone",
            )
            # The users of redisB send too: acked, so stored, whatever live delivery does.
            cut_sent = [await cut_a_ws.send_message(cut_chat.pk, f"into the cut {n}") for n in range(3)]
            cut_sent.append(await cut_a_ws.send_message(group.pk, "into the group, from the cut shard"))
            await cut_a_ws.until(lambda: all(m in cut_a_ws.acked for m in cut_sent), 4 * LIVE, "acks on the cut shard")
            # cut-b's phone reconnects (here: a second device) while the link is down: sync brings it all.
            again = await Device("cut-b-again", cut_b_again, lb.ws_url).start()
            for cmid in cut_sent[:3]:
                assert has(again, cut_chat.pk, cmid), "a sync while the shard is down missed a message"
            assert has(again, group.pk, cut_sent[3])
        finally:
            await asyncio.to_thread(redis_b.link_up)

        # When redisB is back, everybody ends with everything: by sync after the layer's resume
        # (sockets closed with 1012), a seq gap, or live delivery.
        everyone = [*devices.values(), again]
        chats["cut-b-again"] = chats["cut-b"]
        last = {c: max(m["seq"] for d in everyone for m in d.acked.values() if m["conversation_id"] == c) for c in
                (live_chat.pk, cut_chat.pk, group.pk)}  # fmt: skip
        await settle(
            everyone,
            lambda d: all(set(d.messages[c]) == set(range(1, last[c] + 1)) for c in chats[d.name]),
            30,
            "every message on every device after the shard returned",
        )
        for device in everyone:
            await device.stop()
        return everyone

    devices = run(scenario(), timeout=100)
    sent = sorted(itertools.chain.from_iterable(d.sent for d in devices))
    stored = Message.objects.filter(client_msg_id__in=sent)
    assert sorted(m.client_msg_id or "" for m in stored) == sent, "an acked message was lost or stored twice"
    for device in devices:
        assert not device.pending and not device.conflicts and not device.errors, device.name
        assert {cmid: m["id"] for cmid, m in device.acked.items()} == {
            m.client_msg_id: m.pk for m in stored if m.client_msg_id in device.acked
        }
    by_name = {d.name: d for d in devices}
    for conversation in (live_chat, cut_chat, group):
        members = [d for d in devices if conversation.pk in chats[d.name]]
        states = [d.state(conversation.pk) for d in members]
        assert all(state == states[0] for state in states), f"devices differ in {conversation.pk}"
        assert {s: m["id"] for s, m in states[0].items()} == dict(
            Message.objects.filter(conversation=conversation).values_list("seq", "id")
        )
    # The users of redisA never had to reconnect.
    assert len(by_name["stay-a"].upstreams) == len(by_name["stay-b"].upstreams) == 1
