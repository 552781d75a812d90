"""The messaging core end to end: real daphne processes, real Redis layer, real WebSocket clients."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest

from accounts.models import User
from conversations import services
from conversations.models import Conversation, Membership, Message
from tests.conftest import AppLogin, LiveServer, app_login, make_user, start_server, stop_server
from tests.wsclient import WSClient, run

pytestmark = pytest.mark.django_db(transaction=True)

_ids = itertools.count(1)


def frame_id() -> str:
    return f"f{next(_ids)}"


def direct(a: User, b: User) -> Conversation:
    conversation, _ = services.get_or_create_direct(user=a, other_user_id=b.pk)
    return conversation


def send_frame(conversation_id: int, body: str, client_msg_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "message.send",
        "id": frame_id(),
        "conversation_id": conversation_id,
        "client_msg_id": client_msg_id or f"c-{next(_ids)}",
        "body": body,
        **extra,
    }


async def connect(server: LiveServer, login: AppLogin) -> WSClient:
    return await WSClient.connect(server.ws_url, token=login.access)


def test_direct_chat_send_ack_deliver_and_receipts(live_server_asgi: LiveServer, alice: User, bob: User) -> None:
    chat = direct(alice, bob)
    alice_login, bob_login = app_login(alice), app_login(bob)

    async def scenario() -> dict[str, Any]:
        a = await connect(live_server_asgi, alice_login)
        b = await connect(live_server_asgi, bob_login)
        ack = await a.request(send_frame(chat.pk, "hi bob"), "message.ack")
        new = await b.expect("message.new")
        seq = new["message"]["seq"]
        await b.send({"type": "receipt", "conversation_id": chat.pk, "status": "delivered", "seq": seq})
        delivered = await a.expect("receipt.update", lambda f: f["user_id"] == bob.pk and f["delivered_seq"] == seq)
        await b.send({"type": "receipt", "conversation_id": chat.pk, "status": "read", "seq": seq})
        read = await a.expect("receipt.update", lambda f: f["user_id"] == bob.pk and f["read_seq"] == seq)
        await a.close()
        await b.close()
        return {"ack": ack, "new": new, "delivered": delivered, "read": read}

    result = run(scenario())
    ack, new = result["ack"], result["new"]
    assert ack["type"] == "message.ack"
    assert ack["message"]["seq"] == 1
    assert ack["message"]["id"] == new["message"]["id"]
    assert new["message"]["body"] == "hi bob"
    assert new["message"]["sender_id"] == alice.pk
    assert result["read"]["delivered_seq"] == 1
    membership = Membership.objects.get(conversation=chat, user=bob)
    assert (membership.delivered_seq, membership.read_seq) == (1, 1)
    assert Message.objects.filter(conversation=chat).count() == 1


def test_group_of_three_and_two_devices_of_one_user(
    live_server_asgi: LiveServer, alice: User, bob: User, carol: User
) -> None:
    group = services.create_group(creator=alice, title="Trip", member_ids=[bob.pk, carol.pk])
    alice_phone, alice_laptop = app_login(alice), app_login(alice)
    bob_login, carol_login = app_login(bob), app_login(carol)

    async def scenario() -> list[dict[str, Any]]:
        phone = await connect(live_server_asgi, alice_phone)
        laptop = await connect(live_server_asgi, alice_laptop)
        b = await connect(live_server_asgi, bob_login)
        c = await connect(live_server_asgi, carol_login)
        await b.request(send_frame(group.pk, "from bob"), "message.ack")
        got = [await ws.expect("message.new") for ws in (phone, laptop, c)]
        # What alice's phone sends reaches her laptop too (and the phone only as an ack).
        await phone.request(send_frame(group.pk, "from alice's phone"), "message.ack")
        got.append(await laptop.expect("message.new", lambda f: f["message"]["sender_id"] == alice.pk))
        got.append(await b.expect("message.new", lambda f: f["message"]["sender_id"] == alice.pk))
        await phone.request({"type": "ping", "id": "after"}, "pong")
        phone_saw = [f for f in phone.received if f["type"] == "message.new"]
        for ws in (phone, laptop, b, c):
            await ws.close()
        return [*got, {"phone_new_frames": len(phone_saw)}]

    got = run(scenario())
    assert [g["message"]["body"] for g in got[:3]] == ["from bob"] * 3
    assert [g["message"]["seq"] for g in got[:3]] == [2, 2, 2]  # seq 1 is the "created" system message
    assert got[3]["message"]["body"] == got[4]["message"]["body"] == "from alice's phone"
    assert got[5] == {"phone_new_frames": 1}  # only bob's message: its own came as an ack


def test_two_server_processes_deliver_across(
    live_server_asgi: LiveServer, alice: User, bob: User, tmp_path: Any
) -> None:
    chat = direct(alice, bob)
    alice_login, bob_login = app_login(alice), app_login(bob)
    second = start_server(tmp_path, name="web2")
    try:

        async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
            a = await connect(live_server_asgi, alice_login)
            b = await connect(second, bob_login)
            await a.request(send_frame(chat.pk, "across processes"), "message.ack")
            to_bob = await b.expect("message.new")
            await b.request(send_frame(chat.pk, "and back"), "message.ack")
            to_alice = await a.expect("message.new")
            await a.close()
            await b.close()
            return to_bob, to_alice

        to_bob, to_alice = run(scenario())
    finally:
        stop_server(second)
    assert to_bob["message"]["body"] == "across processes"
    assert to_alice["message"]["body"] == "and back"


def test_concurrent_senders_see_one_gap_free_order(live_server_asgi: LiveServer, alice: User) -> None:
    senders = [make_user(f"sender{i}") for i in range(10)]
    group = services.create_group(creator=alice, title="Busy", member_ids=[s.pk for s in senders])
    logins = [app_login(u) for u in senders]
    watcher_login = app_login(alice)
    per_sender = 25  # within the per-socket burst (WS_SEND_BURST), however fast acks come

    async def scenario() -> tuple[list[int], list[list[int]]]:
        watcher = await connect(live_server_asgi, watcher_login)
        clients = [await connect(live_server_asgi, login) for login in logins]

        async def blast(client: WSClient, n: int) -> list[int]:
            seqs = []
            for i in range(per_sender):
                frame = send_frame(group.pk, f"{n}-{i}", client_msg_id=f"{n}-{i}")
                ack = await client.request(frame, "message.ack")
                assert ack["type"] == "message.ack", ack
                seqs.append(ack["message"]["seq"])
            return seqs

        acked = await asyncio.gather(*(blast(c, n) for n, c in enumerate(clients)))
        total = per_sender * len(clients)
        seen: list[int] = []
        while len(seen) < total:
            frame = await watcher.expect("message.new")
            seen.append(frame["message"]["seq"])
        # Every other member's stream too (each saw the others' messages, plus nothing twice).
        views = []
        others = total - per_sender
        for client in clients:
            views.append([(await client.expect("message.new"))["message"]["seq"] for _ in range(others)])
            assert not [f for f in client.inbox if f["type"] == "message.new"], "a message arrived twice"
        for c in [watcher, *clients]:
            await c.close()
        return seen, [sorted(s) for s in acked] + views

    seen, views = run(scenario(), timeout=120)
    first_user_seq = 2  # seq 1 is the "created" system message
    expected = list(range(first_user_seq, first_user_seq + per_sender * len(senders)))
    # Nothing lost, nothing twice. Live frames may arrive slightly out of seq order (several
    # threads and processes publish); every member orders by seq, the one total order.
    assert sorted(seen) == expected
    assert sorted(itertools.chain.from_iterable(views[:10])) == expected
    for view in views[10:]:
        assert len(view) == len(set(view)) == per_sender * (len(senders) - 1)
    assert list(Message.objects.filter(conversation=group).order_by("seq").values_list("seq", flat=True)) == [
        1,
        *expected,
    ]


def test_duplicate_client_msg_id_yields_one_message(live_server_asgi: LiveServer, alice: User, bob: User) -> None:
    chat = direct(alice, bob)
    phone, laptop = app_login(alice), app_login(alice)

    async def scenario() -> list[dict[str, Any]]:
        p = await connect(live_server_asgi, phone)
        lap = await connect(live_server_asgi, laptop)
        same = {"conversation_id": chat.pk, "client_msg_id": "same-key", "body": "once"}
        acks = await asyncio.gather(
            p.request({"type": "message.send", "id": "a", **same}, "message.ack"),
            lap.request({"type": "message.send", "id": "b", **same}, "message.ack"),
            p.request({"type": "message.send", "id": "c", **same}, "message.ack"),
        )
        await p.close()
        await lap.close()
        return list(acks)

    acks = run(scenario())
    assert {a["type"] for a in acks} == {"message.ack"}
    assert len({a["message"]["id"] for a in acks}) == 1
    assert Message.objects.filter(conversation=chat, client_msg_id="same-key").count() == 1
    assert Conversation.objects.get(pk=chat.pk).last_seq == 1


def _final_state(frames: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Fold message frames into {seq: message} keeping the highest version."""
    state: dict[int, dict[str, Any]] = {}
    for frame in frames:
        messages = frame.get("messages") or ([frame["message"]] if "message" in frame else [])
        for message in messages:
            current = state.get(message["seq"])
            if current is None or message["version"] >= current["version"]:
                state[message["seq"]] = message
    return state


def test_offline_recipient_syncs_to_the_always_online_state(
    live_server_asgi: LiveServer, alice: User, bob: User
) -> None:
    chat = direct(alice, bob)
    alice_login, bob_online, bob_offline = app_login(alice), app_login(bob), app_login(bob)

    async def scenario() -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]], dict[str, Any]]:
        a = await connect(live_server_asgi, alice_login)
        online = await connect(live_server_asgi, bob_online)
        offline = await connect(live_server_asgi, bob_offline)
        first = await a.request(send_frame(chat.pk, "before the drop"), "message.ack")
        await offline.expect("message.new")
        cursor = first["message"]["version"]
        await offline.close()  # bob's second device goes offline
        ids = []
        for i in range(5):
            ack = await a.request(send_frame(chat.pk, f"while away {i}"), "message.ack")
            ids.append(ack["message"]["id"])
        await a.request(
            {
                "type": "message.edit",
                "id": frame_id(),
                "conversation_id": chat.pk,
                "message_id": ids[1],
                "body": "edited",
            },
            "message.updated",
        )
        await a.request(
            {"type": "message.delete", "id": frame_id(), "conversation_id": chat.pk, "message_id": ids[2]},
            "message.updated",
        )
        await online.request(
            {"type": "reaction.set", "id": frame_id(), "conversation_id": chat.pk, "message_id": ids[3], "emoji": "👍"},
            "message.updated",
        )
        await online.send({"type": "receipt", "conversation_id": chat.pk, "status": "read", "seq": 4})
        await a.expect("receipt.update", lambda f: f["read_seq"] == 4)
        await online.request({"type": "ping", "id": "flush"}, "pong")

        back = await connect(live_server_asgi, bob_offline)
        await back.send({"type": "sync", "id": "s1", "cursors": {str(chat.pk): cursor}})
        done = await back.expect("sync.done")
        for ws in (a, online, back):
            await ws.close()
        # The online device's frames include its own reaction (as the reply to its request).
        online_frames = [f for f in online.received if f["type"] in ("message.new", "message.updated")]
        return _final_state(online_frames), _final_state(back.received), done

    online_state, synced_state, done = run(scenario())
    assert synced_state, "sync returned nothing"
    assert {seq: m for seq, m in online_state.items() if seq > 1} == synced_state
    assert synced_state[3]["body"] == "edited"
    assert synced_state[4]["deleted"] is True and synced_state[4]["body"] == ""
    assert synced_state[5]["reactions"] == [{"user_id": bob.pk, "emoji": "👍"}]
    receipts = {(r["conversation_id"], r["user_id"]): r for r in done["receipts"]}
    assert receipts[(chat.pk, bob.pk)]["read_seq"] == 4
    assert done["removed"] == []


def test_a_message_sent_over_rest_reaches_sockets_live(live_server_asgi: LiveServer, alice: User, bob: User) -> None:
    chat = direct(alice, bob)
    alice_phone, alice_laptop, bob_login = app_login(alice), app_login(alice), app_login(bob)

    async def scenario() -> tuple[int, dict[str, Any], dict[str, Any]]:
        laptop = await connect(live_server_asgi, alice_laptop)
        b = await connect(live_server_asgi, bob_login)
        async with httpx.AsyncClient(base_url=live_server_asgi.http_url) as http:
            response = await http.post(
                f"/api/v1/conversations/{chat.pk}/messages/",
                json={"client_msg_id": "rest-1", "body": "sent over REST"},
                headers={"Authorization": f"Bearer {alice_phone.access}"},
            )
        to_bob = await b.expect("message.new")
        to_laptop = await laptop.expect("message.new")
        for ws in (laptop, b):
            await ws.close()
        return response.status_code, to_bob, to_laptop

    status, to_bob, to_laptop = run(scenario())
    assert status == 201
    assert to_bob["message"]["body"] == to_laptop["message"]["body"] == "sent over REST"
