"""The cluster on real hosts: two web hosts (network namespaces) behind nginx, as
`make run-cluster` runs them, talking to PostgreSQL, Redis and RabbitMQ over the network.

Proves that any web process serves any user (no sticky sessions), that every acceptance flow
of the messaging core passes through the balancer, that a web host dying mid-conversation
costs its clients nothing but a reconnect, and that a rolling restart under steady load
loses and duplicates nothing. docs/operations.md, "Topology".
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import signal
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.core.cache import cache

from accounts.models import User
from accounts.throttling import _keys, _window
from conversations import services
from conversations.models import Conversation, Membership, Message
from tests import netns
from tests import test_messaging_ws as core
from tests import test_messaging_ws_edges as edges
from tests.cluster import Balancer, Cluster, Device, WebNode, served_by, settle, start_cluster
from tests.conftest import PASSWORD, app_login, make_user
from tests.wsclient import run

pytestmark = [
    pytest.mark.skipif(netns.unavailable() is not None, reason=f"no test hosts: {netns.unavailable()}"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(scope="module")
def cluster(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    made = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield made
    made.close()


@pytest.fixture
def lb(cluster: Cluster) -> Balancer:
    """The balancer, with both web hosts up (a test before may have killed one)."""
    cluster.ensure_running()
    return cluster.balancer


# --- any process serves any user ------------------------------------------------------------


def test_clients_on_different_hosts_chat_through_nginx(cluster: Cluster, lb: Balancer, alice: User, bob: User) -> None:
    chat = core.direct(alice, bob)
    alice_login, bob_login = app_login(alice), app_login(bob)
    web_a, web_b = cluster.web["webA"].upstream, cluster.web["webB"].upstream

    async def scenario() -> tuple[Device, Device, httpx.Response]:
        a = await Device("alice", alice_login, lb.ws_url).start(prefer=web_a)
        b = await Device("bob", bob_login, lb.ws_url).start(prefer=web_b)
        await a.send_message(chat.pk, "hi from webA")
        await b.until(lambda: 1 in b.messages[chat.pk], 10, "alice's message")
        await b.mark_read(chat.pk)
        await a.until(lambda: a.receipts.get((chat.pk, bob.pk)) == (1, 1), 10, "bob's read receipt")
        await b.send_message(chat.pk, "hi from webB")
        await a.until(lambda: 2 in a.messages[chat.pk], 10, "bob's answer")
        async with httpx.AsyncClient(base_url=lb.http_url) as http:
            rest = await http.post(
                f"/api/v1/conversations/{chat.pk}/messages/",
                json={"client_msg_id": "rest-1", "body": "over REST"},
                headers={"Authorization": f"Bearer {alice_login.access}"},
            )
        await settle([a, b], lambda d: 3 in d.messages[chat.pk], 10, "the REST message on both hosts")
        for device in (a, b):
            await device.stop()
        return a, b, rest

    a, b, rest = run(scenario())
    # The WebSocket handshakes (101) and the REST answer name the web process that served them.
    assert a.upstreams == [web_a] and b.upstreams == [web_b]
    assert rest.status_code == 201, rest.text
    assert served_by(rest.headers) in (web_a, web_b)
    assert a.state(chat.pk) == b.state(chat.pk)
    assert [m["body"] for m in a.state(chat.pk).values()] == ["hi from webA", "hi from webB", "over REST"]
    assert not a.conflicts and not b.conflicts and not a.errors and not b.errors


def test_typing_crosses_hosts(cluster: Cluster, lb: Balancer, alice: User, bob: User) -> None:
    chat = core.direct(alice, bob)
    alice_login, bob_login = app_login(alice), app_login(bob)
    web_a, web_b = cluster.web["webA"].upstream, cluster.web["webB"].upstream

    async def scenario() -> dict[str, Any]:
        a = await Device("alice", alice_login, lb.ws_url).start(prefer=web_a)
        b = await Device("bob", bob_login, lb.ws_url).start(prefer=web_b)
        frames: list[dict[str, Any]] = []
        a.on_frame = frames.append
        assert b.conn is not None
        await b.conn.send(json.dumps({"type": "typing", "conversation_id": chat.pk, "state": "start"}))
        await a.until(lambda: any(f["type"] == "typing" for f in frames), 10, "bob typing")
        for device in (a, b):
            await device.stop()
        return next(f for f in frames if f["type"] == "typing")

    typing = run(scenario())
    assert typing == {
        "type": "typing",
        "conversation_id": chat.pk,
        "user_id": bob.pk,
        "state": "start",
        "expires_in": 6,
    }


def test_client_address_is_the_one_nginx_saw(lb: Balancer, alice: User) -> None:
    """nginx appends the client's address to X-Forwarded-For and the web processes trust one
    proxy (TRUSTED_PROXY_COUNT=1): login throttling counts 127.0.0.1, where the test's client
    is, not nginx's address on the network and not what the client claims."""
    response = httpx.post(
        f"{lb.http_url}/api/v1/auth/token/",
        json={"username": alice.username, "password": PASSWORD + "-wrong"},
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    assert response.status_code in (400, 401), response.text
    window, _ = _window()
    assert cache.get(_keys(alice.username, "127.0.0.1", window)[1]) == 1
    assert cache.get(_keys(alice.username, "203.0.113.7", window)[1]) is None


# --- every acceptance flow of the messaging core, through the balancer --------------------------

FLOWS: list[Callable[..., None]] = [
    core.test_direct_chat_send_ack_deliver_and_receipts,
    core.test_group_of_three_and_two_devices_of_one_user,
    core.test_concurrent_senders_see_one_gap_free_order,
    core.test_duplicate_client_msg_id_yields_one_message,
    core.test_offline_recipient_syncs_to_the_always_online_state,
    core.test_a_message_sent_over_rest_reaches_sockets_live,
    edges.test_bad_frames_get_clear_errors_and_store_nothing,
    edges.test_removed_member_stops_receiving_at_once,
    edges.test_typing_reaches_the_others_and_expires_by_itself,
    edges.test_presence_online_then_last_seen_and_privacy,
    edges.test_sync_pages_in_version_order_and_reports_removed,
    edges.test_edit_and_delete_reach_members_live,
]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda flow: flow.__name__.removeprefix("test_"))
def test_acceptance_flow_through_nginx(
    flow: Callable[..., None], cluster: Cluster, lb: Balancer, request: pytest.FixtureRequest
) -> None:
    """The messaging core's own test, with nginx in place of its one server: the sockets of
    one flow spread over both web hosts (least_conn), so its users meet across processes."""
    before = {name: _accepted(node) for name, node in cluster.web.items()}
    flow(
        **{
            name: lb if name == "live_server_asgi" else request.getfixturevalue(name)
            for name in inspect.signature(flow).parameters
        }
    )
    # uvicorn logs each WebSocket it accepts: count them per web host.
    served = {name: _accepted(node) - before[name] for name, node in cluster.web.items()}
    assert sum(served.values()) >= 1
    if sum(served.values()) > 1:
        assert all(served.values()), f"all sockets on one web host: {served}"


def _accepted(node: WebNode) -> int:
    return node.log().count('"WebSocket /ws/" [accepted]')


# --- a web host dies; a rolling restart ---------------------------------------------------------


def _group_of(*users: User, title: str) -> Conversation:
    creator, *others = users
    return services.create_group(creator=creator, title=title, member_ids=[u.pk for u in others])


def _check_database(group: Conversation, devices: list[Device]) -> list[Message]:
    """Every send acked, stored exactly once, in one gap-free order."""
    sent = sorted(itertools.chain.from_iterable(d.sent for d in devices))
    assert len(sent) == len(set(sent))
    messages = list(Message.objects.filter(conversation=group).order_by("seq"))
    stored = sorted(m.client_msg_id or "" for m in messages if m.kind == Message.Kind.TEXT)
    assert stored == sent, "lost or duplicated in PostgreSQL"
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
    for device in devices:
        assert not device.pending, f"{device.name}: never acked {list(device.pending)}"
        assert {cmid: m["id"] for cmid, m in device.acked.items()} == {
            m.client_msg_id: m.pk for m in messages if m.client_msg_id in device.acked
        }
    return messages


def _check_devices(group: Conversation, devices: list[Device], messages: list[Message]) -> None:
    """Every device holds exactly what PostgreSQL holds: the same messages at the same seqs,
    nothing twice, and the same receipt cursors."""
    reference = devices[0].state(group.pk)
    for device in devices:
        assert not device.conflicts, f"{device.name}: two messages at one seq: {device.conflicts[:3]}"
        assert not device.errors, f"{device.name}: {device.errors[:3]}"
        assert device.state(group.pk) == reference, f"{device.name} differs from {devices[0].name}"
        cmids = [m["client_msg_id"] for m in device.state(group.pk).values()]
        assert len(cmids) == len(set(cmids))
    assert {seq: m["id"] for seq, m in reference.items()} == {m.seq: m.pk for m in messages}
    cursors = {
        (group.pk, m.user_id): (m.delivered_seq, m.read_seq)
        for m in Membership.objects.filter(conversation=group, left_at__isnull=True)
    }
    for device in devices:
        assert {k: v for k, v in device.receipts.items() if k[0] == group.pk} == cursors, device.name


async def _chatter(device: Device, conversation_id: int, stop: asyncio.Event, every: float) -> None:
    """A user in a lively chat: sends at a steady rate and reads what arrives."""
    while not stop.is_set():
        await device.send_message(conversation_id, f"{device.name} #{len(device.sent)}")
        await device.mark_read(conversation_id)
        # The steady rate of a person typing, not a synchronisation.
        await asyncio.sleep(every)


async def _finish(devices: list[Device], conversation_id: int) -> None:
    """Quiet the chat: every send acked, every device holding every seq, everyone having read
    the last message and every device seeing that."""
    await settle(devices, lambda d: not d.pending and d.online, 30, "every send acked")
    last = max(m["seq"] for d in devices for m in d.acked.values())
    await settle(
        devices,
        lambda d: set(d.messages[conversation_id]) == set(range(1, last + 1)),
        20,
        f"seqs 1..{last} on every device",
    )
    for device in devices:
        await device.mark_read(conversation_id)
    members = {d.user_id for d in devices}
    await settle(
        devices,
        lambda d: all(d.receipts.get((conversation_id, u)) == (last, last) for u in members),
        20,
        "everyone's read receipts",
    )
    for device in devices:
        await device.stop()


def test_a_web_host_dies_mid_conversation(cluster: Cluster, lb: Balancer, alice: User, bob: User, carol: User) -> None:
    dave = make_user("dave")
    group = _group_of(alice, bob, carol, dave, title="Kill")
    web_a, web_b = cluster.web["webA"], cluster.web["webB"]
    # alice has a device on each host; bob only on webA, carol and dave on webB.
    placement = [
        ("alice-phone", alice, web_a),
        ("bob", bob, web_a),
        ("alice-laptop", alice, web_b),
        ("carol", carol, web_b),
        ("dave", dave, web_b),
    ]
    logins = [(name, app_login(user), node.upstream) for name, user, node in placement]
    probes: list[httpx.Response] = []

    async def scenario() -> list[Device]:
        devices = []
        for name, login, upstream in logins:
            devices.append(await Device(name, login, lb.ws_url).start(prefer=upstream))
        stop = asyncio.Event()
        talk = [asyncio.create_task(_chatter(d, group.pk, stop, every=0.25)) for d in devices]
        await settle(devices, lambda d: len(d.acked) >= 4, 20, "a conversation going")
        # Mid-conversation, with sends and receipts in flight, webA dies: some of the burst it
        # stored without acking, some it never read. Both are retried on webB.
        for device in devices[:2]:
            for n in range(15):
                await device.send_message(group.pk, f"{device.name} burst {n}")
        await asyncio.to_thread(web_a.kill)
        at_kill = {d.name: len(d.acked) for d in devices}
        # Plain requests too: nginx skips the dead host.
        async with httpx.AsyncClient(base_url=lb.http_url) as http:
            probes.extend([await http.get("/healthz", headers={"Host": "localhost"}) for _ in range(4)])
        await settle(devices[:2], lambda d: len(d.upstreams) == 2 and d.online, 30, "a reconnect through nginx")
        await settle(devices, lambda d: len(d.acked) >= at_kill[d.name] + 4, 30, "the chat going on")
        stop.set()
        await asyncio.gather(*talk)
        await _finish(devices, group.pk)
        return devices

    devices = run(scenario(), timeout=100)
    dropped, stayed = devices[:2], devices[2:]
    assert [(p.status_code, served_by(p.headers)) for p in probes] == [(200, web_b.upstream)] * 4
    for device in dropped:
        assert device.upstreams == [web_a.upstream, web_b.upstream], device.name
    retried = [cmid for d in dropped for cmid, on in d.acked_on.items() if on > d.sent_on[cmid]]
    assert retried, "no send was in flight when webA died"
    for device in stayed:
        assert device.upstreams == [web_b.upstream], device.name
    messages = _check_database(group, devices)
    _check_devices(group, devices, messages)


def test_rolling_restart_under_steady_load(cluster: Cluster, lb: Balancer, alice: User, bob: User, carol: User) -> None:
    dave = make_user("dave")
    group = _group_of(alice, bob, carol, dave, title="Rolling")
    web_a, web_b = cluster.web["webA"], cluster.web["webB"]
    placement = [("alice", alice, web_a), ("bob", bob, web_b), ("carol", carol, web_a), ("dave", dave, web_b)]
    logins = [(name, app_login(user), node.upstream) for name, user, node in placement]
    exits: dict[str, int] = {}

    async def scenario() -> tuple[list[Device], dict[str, int]]:
        devices = []
        for name, login, upstream in logins:
            devices.append(await Device(name, login, lb.ws_url).start(prefer=upstream))
        senders = devices[:2]  # carol and dave only read
        stop = asyncio.Event()
        talk = [asyncio.create_task(_chatter(d, group.pk, stop, every=0.15)) for d in senders]
        readers = [asyncio.create_task(_reader(d, group.pk, stop)) for d in devices[2:]]
        sent_during: dict[str, int] = {}
        for node in (web_a, web_b):
            acked = sum(len(d.acked) for d in senders)
            await settle(senders, lambda d, acked=acked: len(d.acked) >= 5 + acked // 2, 30, "steady load")
            before = sum(len(d.sent) for d in senders)
            exits[node.name] = await asyncio.to_thread(node.stop)
            await asyncio.to_thread(node.start)
            sent_during[node.name] = sum(len(d.sent) for d in senders) - before
        acked = sum(len(d.acked) for d in senders)
        await settle(senders, lambda d: len(d.acked) >= 5 + acked // 2, 30, "load after the restarts")
        stop.set()
        await asyncio.gather(*talk, *readers)
        await _finish(devices, group.pk)
        return devices, sent_during

    devices, sent_during = run(scenario(), timeout=110)
    # Messages kept being sent while each web process restarted: the load really was steady
    # (and below, every one of them is stored once and on every device).
    assert all(count > 0 for count in sent_during.values()), sent_during
    # Each drained and exited on SIGTERM by itself (uvicorn re-raises it: -15), not SIGKILLed after 30 s.
    assert set(exits) == {"webA", "webB"} and -signal.SIGKILL not in exits.values(), exits
    for device in devices:
        assert len(device.upstreams) >= 2, f"{device.name} never moved: {device.upstreams}"
    messages = _check_database(group, devices)
    _check_devices(group, devices, messages)


async def _reader(device: Device, conversation_id: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await device.mark_read(conversation_id)
        await asyncio.sleep(0.2)  # how often an open chat marks what it shows as read
