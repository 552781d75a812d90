"""The unhappy paths of the WebSocket protocol, and the ephemeral signals (typing, presence)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from accounts.models import User
from conversations import services
from conversations.models import Message
from tests.conftest import LiveServer, app_login, start_server, stop_server
from tests.test_messaging_ws import connect, direct, frame_id, send_frame
from tests.wsclient import WSClient, run

pytestmark = pytest.mark.django_db(transaction=True)


def test_bad_frames_get_clear_errors_and_store_nothing(
    live_server_asgi: LiveServer, alice: User, bob: User, carol: User
) -> None:
    chat = direct(alice, bob)
    theirs = direct(bob, carol)
    message, _ = services.send_message(sender=bob, conversation_id=chat.pk, client_msg_id="b1", body="bob's")
    login = app_login(alice)

    bad_frames: list[tuple[dict[str, Any], str]] = [
        ({"type": "message.send", "conversation_id": chat.pk, "body": "no key"}, "invalid"),
        ({"type": "message.send", "client_msg_id": "x", "body": "no conversation"}, "invalid"),
        (send_frame(chat.pk, "x" * 65_537), "invalid"),
        (send_frame(chat.pk, "   "), "invalid"),
        (send_frame(chat.pk, 42), "invalid"),  # type: ignore[arg-type]
        (send_frame(chat.pk, "ok", client_msg_id="k" * 65), "invalid"),
        (send_frame(theirs.pk, "not my chat"), "not_found"),
        (send_frame(999_999, "no such chat"), "not_found"),
        (send_frame("abc", "weird id"), "not_found"),  # type: ignore[arg-type]
        (send_frame(chat.pk, "reply elsewhere", reply_to=10**9), "not_found"),
        (
            {"type": "message.edit", "conversation_id": chat.pk, "message_id": message.pk, "body": "hijack"},
            "not_your_message",
        ),
        ({"type": "message.delete", "conversation_id": chat.pk, "message_id": message.pk}, "not_your_message"),
        ({"type": "reaction.set", "conversation_id": chat.pk, "message_id": message.pk, "emoji": "ok"}, "invalid"),
        ({"type": "receipt", "conversation_id": chat.pk, "status": "seen", "seq": 1}, "invalid"),
        ({"type": "receipt", "conversation_id": chat.pk, "status": "read", "seq": -1}, "invalid"),
        ({"type": "receipt", "conversation_id": theirs.pk, "status": "read", "seq": 1}, "not_found"),
        ({"type": "typing", "conversation_id": chat.pk, "state": "dancing"}, "invalid"),
        ({"type": "typing", "conversation_id": theirs.pk, "state": "start"}, "not_found"),
        ({"type": "sync", "cursors": {"abc": 1}}, "invalid"),
        ({"type": "sync", "cursors": [1, 2]}, "invalid"),
        ({"type": "presence.subscribe", "user_ids": "everyone"}, "invalid"),
        ({"type": "message.send", "id": {"nested": 1}}, "malformed"),
    ]

    async def scenario() -> list[dict[str, Any]]:
        ws = await connect(live_server_asgi, login)
        replies = []
        for n, (frame, _) in enumerate(bad_frames):
            frame = {**frame, "id": frame.get("id", f"bad{n}")}
            await ws.send(frame)
            replies.append(await ws.expect("error"))
        replies.append(await ws.request({"type": "ping", "id": "still-here"}, "pong"))
        await ws.close()
        return replies

    replies = run(scenario())
    assert [r["code"] for r in replies[:-1]] == [code for _, code in bad_frames]
    assert [r["id"] for r in replies[:2]] == ["bad0", "bad1"]
    assert replies[0]["fields"] == {"client_msg_id": ["This field is required."]}
    assert replies[-1]["type"] == "pong"
    assert Message.objects.count() == 1  # only bob's original
    assert Message.objects.get(pk=message.pk).body == "bob's"


def test_removed_member_stops_receiving_at_once(
    live_server_asgi: LiveServer, alice: User, bob: User, carol: User
) -> None:
    group = services.create_group(creator=alice, title="Club", member_ids=[bob.pk, carol.pk])
    alice_login, bob_login, carol_login = app_login(alice), app_login(bob), app_login(carol)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], WSClient]:
        b = await connect(live_server_asgi, bob_login)
        c = await connect(live_server_asgi, carol_login)
        await b.request(send_frame(group.pk, "everyone sees this"), "message.ack")
        await c.expect("message.new", lambda f: f["message"]["body"] == "everyone sees this")
        async with httpx.AsyncClient(base_url=live_server_asgi.http_url) as http:
            response = await http.delete(
                f"/api/v1/conversations/{group.pk}/members/{carol.pk}/",
                headers={"Authorization": f"Bearer {alice_login.access}"},
            )
            assert response.status_code == 204, response.text
        removed = await c.expect("conversation.removed")
        await b.request(send_frame(group.pk, "carol is gone"), "message.ack")
        refused = await c.request(send_frame(group.pk, "let me back"), "message.ack")
        pong = await c.request({"type": "ping", "id": "p"}, "pong")
        for ws in (b, c):
            await ws.close()
        return removed, refused, pong, c

    removed, refused, pong, carol_ws = run(scenario())
    assert removed["conversation_id"] == group.pk
    assert refused["type"] == "error" and refused["code"] == "not_found"
    assert pong["type"] == "pong"
    bodies = [f["message"]["body"] for f in carol_ws.received if f["type"] == "message.new"]
    assert "carol is gone" not in bodies
    assert not Message.objects.filter(body="let me back").exists()


def test_typing_reaches_the_others_and_expires_by_itself(live_server_asgi: LiveServer, alice: User, bob: User) -> None:
    chat = direct(alice, bob)
    alice_login, bob_login = app_login(alice), app_login(bob)

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        a = await connect(live_server_asgi, alice_login)
        b = await connect(live_server_asgi, bob_login)
        await a.send({"type": "typing", "conversation_id": chat.pk, "state": "start"})
        typing = await b.expect("typing")
        await a.request({"type": "ping", "id": "p"}, "pong")
        own = [f for f in a.received if f["type"] == "typing"]
        for ws in (a, b):
            await ws.close()
        return typing, own

    typing, own = run(scenario())
    assert typing == {
        "type": "typing",
        "conversation_id": chat.pk,
        "user_id": alice.pk,
        "state": "start",
        "expires_in": 6,
    }
    assert own == []


def test_presence_online_then_last_seen_and_privacy(
    live_server_asgi: LiveServer, alice: User, bob: User, carol: User
) -> None:
    carol.last_seen_visibility = User.LastSeenVisibility.NOBODY
    carol.save(update_fields=["last_seen_visibility"])
    alice_login, bob_login, carol_login = app_login(alice), app_login(bob), app_login(carol)

    async def scenario() -> list[dict[str, Any]]:
        a = await connect(live_server_asgi, alice_login)
        await a.send({"type": "presence.subscribe", "user_ids": [bob.pk, carol.pk]})
        initial_bob = await a.expect("presence", lambda f: f["user_id"] == bob.pk)
        initial_carol = await a.expect("presence", lambda f: f["user_id"] == carol.pk)
        b = await connect(live_server_asgi, bob_login)
        online = await a.expect("presence", lambda f: f["user_id"] == bob.pk)
        c = await connect(live_server_asgi, carol_login)
        await b.close()
        offline = await a.expect("presence", lambda f: f["user_id"] == bob.pk)
        await c.close()
        await a.request({"type": "ping", "id": "p"}, "pong")
        carol_frames = [f for f in a.received if f["type"] == "presence" and f["user_id"] == carol.pk]
        await a.close()
        return [initial_bob, initial_carol, online, offline, *carol_frames]

    initial_bob, initial_carol, online, offline, *carol_frames = run(scenario())
    assert (initial_bob["online"], initial_bob["last_seen"]) == (False, None)
    assert (initial_carol["online"], initial_carol["last_seen"]) == (None, None)
    assert online["online"] is True
    assert offline["online"] is False and offline["last_seen"] is not None
    bob.refresh_from_db()
    assert bob.last_seen is not None
    assert carol_frames == [initial_carol]  # nothing announced for someone who hides it


def test_a_socket_dropped_while_events_reach_it_still_goes_offline(
    live_server_asgi: LiveServer, alice: User, bob: User
) -> None:
    """A connection that vanishes (no close frame) or closes while messages are being
    delivered to it goes offline at once, not when its presence lease runs out a minute
    later (meanwhile it would suppress pushes)."""
    chat = direct(alice, bob)
    alice_login, bob_login = app_login(alice), app_login(bob)

    async def scenario() -> list[dict[str, Any]]:
        b = await connect(live_server_asgi, bob_login)
        await b.send({"type": "presence.subscribe", "user_ids": [alice.pk]})
        await b.expect("presence", lambda f: f["user_id"] == alice.pk)
        seen = []
        for leave in ("abort", "close", "abort", "close"):
            a = await connect(live_server_asgi, alice_login)
            seen.append(await b.expect("presence", lambda f: f["user_id"] == alice.pk))
            for n in range(6):  # 24 sends in all: within bob's per-socket burst
                if n == 3 and leave == "abort":
                    a.conn.transport.abort()  # no close frame, no FIN handshake: the socket is gone
                elif n == 3:
                    leaving = asyncio.create_task(a.close())  # a close frame, then the server's reply
                await b.send(send_frame(chat.pk, f"into the void {n}"))
            if leave == "close":
                await leaving
            seen.append(await b.expect("presence", lambda f: f["user_id"] == alice.pk, timeout=10))
            await b.expect("message.ack", lambda f: f["message"]["body"] == "into the void 5")
        await b.close()
        return seen

    seen = run(scenario(), timeout=90)
    assert [f["online"] for f in seen] == [True, False] * 4


def test_sync_pages_in_version_order_and_reports_removed(
    live_server_asgi: LiveServer, alice: User, bob: User, carol: User
) -> None:
    chat = direct(alice, bob)
    for i in range(230):
        services.send_message(sender=alice, conversation_id=chat.pk, client_msg_id=f"m{i}", body=f"message {i}")
    left = services.create_group(creator=carol, title="Old", member_ids=[bob.pk])
    services.remove_member(actor=carol, conversation_id=left.pk, user_id=bob.pk)
    login = app_login(bob)

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        ws = await connect(live_server_asgi, login)
        await ws.send({"type": "sync", "id": "s", "cursors": {str(chat.pk): 0, str(left.pk): 1}})
        done = await ws.expect("sync.done")
        batches = [f for f in ws.received if f["type"] == "sync.batch"]
        await ws.close()
        return batches, done

    batches, done = run(scenario())
    assert [b["has_more"] for b in batches] == [True, True, False]
    assert all(b["conversation_id"] == chat.pk and b["id"] == "s" for b in batches)
    versions = [m["version"] for b in batches for m in b["messages"]]
    assert versions == sorted(versions) and len(versions) == 230
    assert batches[0]["conversation"]["id"] == chat.pk and "conversation" not in batches[1]
    assert batches[-1]["version"] == 230
    assert done["removed"] == [left.pk]


def test_rate_limits_answer_then_close_sustained_abuse(alice: User, bob: User, tmp_path: Any) -> None:
    chat = direct(alice, bob)
    login = app_login(alice)
    server = start_server(
        tmp_path, name="limited", WS_SENDS_PER_SECOND="0.5", WS_SEND_BURST="3", WS_ABUSE_CLOSE_AFTER="5"
    )
    try:

        async def scenario() -> tuple[list[str], int]:
            ws = await WSClient.connect(server.ws_url, token=login.access)
            codes = []
            for _ in range(9):
                reply = await ws.request(send_frame(chat.pk, "spam"), "message.ack")
                codes.append(reply.get("code") or reply["type"])
            return codes, await ws.expect_close()

        codes, close_code = run(scenario())
    finally:
        stop_server(server)
    assert codes[:3] == ["message.ack"] * 3
    assert codes[3:] == ["rate_limited"] * 6
    assert close_code == 4429
    assert Message.objects.filter(conversation=chat).count() == 3


def test_silent_sockets_are_closed(alice: User, tmp_path: Any) -> None:
    login = app_login(alice)
    server = start_server(tmp_path, name="idle", WS_IDLE_TIMEOUT_SECONDS="1")
    try:

        async def scenario() -> int:
            ws = await WSClient.connect(server.ws_url, token=login.access)
            return await ws.expect_close(timeout=15)

        assert run(scenario()) == 4408
    finally:
        stop_server(server)


def test_edit_and_delete_reach_members_live(live_server_asgi: LiveServer, alice: User, bob: User) -> None:
    chat = direct(alice, bob)
    alice_login, bob_login = app_login(alice), app_login(bob)

    async def scenario() -> list[dict[str, Any]]:
        a = await connect(live_server_asgi, alice_login)
        b = await connect(live_server_asgi, bob_login)
        ack = await a.request(send_frame(chat.pk, "tpyo"), "message.ack")
        mid = ack["message"]["id"]
        edit = {"type": "message.edit", "id": frame_id(), "conversation_id": chat.pk, "message_id": mid}
        edited_ack = await a.request({**edit, "body": "typo"}, "message.updated")
        edited = await b.expect("message.updated")
        react = {"type": "reaction.set", "id": frame_id(), "conversation_id": chat.pk, "message_id": mid}
        await b.request({**react, "emoji": "❤️"}, "message.updated")
        reacted = await a.expect("message.updated", lambda f: bool(f["message"]["reactions"]))
        delete = {"type": "message.delete", "id": frame_id(), "conversation_id": chat.pk, "message_id": mid}
        await a.request(delete, "message.updated")
        deleted = await b.expect("message.updated", lambda f: f["message"]["deleted"])
        for ws in (a, b):
            await ws.close()
        return [ack, edited_ack, edited, reacted, deleted]

    ack, edited_ack, edited, reacted, deleted = run(scenario())
    assert edited_ack["id"] is not None and edited_ack["message"]["body"] == "typo"
    assert edited["message"]["body"] == "typo" and edited["message"]["edited_at"]
    assert edited["message"]["version"] > ack["message"]["version"]
    assert reacted["message"]["reactions"] == [{"user_id": bob.pk, "emoji": "❤️"}]
    assert deleted["message"]["body"] == "" and deleted["message"]["reactions"] == []
    assert deleted["message"]["seq"] == ack["message"]["seq"]
