"""Graceful drain: SIGTERM on a web process during a rolling restart (docs/operations.md,
"Rolling restarts"). The process stops listening, closes every socket with 1012 and exits
within its bound; a send caught in flight is never half done: its retry on another process,
with the same ``client_msg_id``, ends with exactly one message.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import websockets
from django.conf import settings

from accounts.models import User
from conversations import services
from conversations.models import Conversation, Message
from tests.conftest import AppLogin, LiveServer, app_login, start_server, stop_server
from tests.wsclient import WSClient, run

pytestmark = pytest.mark.django_db(transaction=True)

SHUTDOWN_TIMEOUT = 5  # WEB_SHUTDOWN_TIMEOUT_SECONDS of the server under test


def dsn() -> str:
    db = settings.DATABASES["default"]
    return f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


async def connect(server: LiveServer, login: AppLogin) -> WSClient:
    return await WSClient.connect(server.ws_url, token=login.access)


def send_frame(conversation_id: int, frame_id: str) -> dict[str, Any]:
    return {
        "type": "message.send",
        "id": frame_id,
        "conversation_id": conversation_id,
        "client_msg_id": "in-flight-at-sigterm",
        "body": "sent while the server drains",
    }


async def wait_for_lock_wait(watcher: psycopg.AsyncConnection[Any], timeout: float) -> None:
    """Until some session of this database waits for a row lock (the send we hold up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cursor = await watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        row = await cursor.fetchone()
        if row and row[0]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no session waited for the held row lock within {timeout}s")


@pytest.mark.parametrize("held", ["briefly", "past_the_bound"])
def test_sigterm_drains_sockets_with_1012_and_a_send_in_flight_is_never_half_done(
    alice: User, bob: User, carol: User, tmp_path: Path, held: str
) -> None:
    """``briefly``: the held-up send commits during the drain (its ack cannot reach the closed
    socket). ``past_the_bound``: it is still waiting when the bound runs out, the process exits
    anyway and its transaction dies with the connection."""
    chat, _ = services.get_or_create_direct(user=alice, other_user_id=bob.pk)
    logins = [app_login(u) for u in (alice, bob, carol)]
    server = start_server(tmp_path, name="draining", WEB_SHUTDOWN_TIMEOUT_SECONDS=str(SHUTDOWN_TIMEOUT))
    table = Conversation._meta.db_table

    async def scenario() -> dict[str, Any]:
        clients = [await connect(server, login) for login in logins]
        sender = clients[0]
        locker = await psycopg.AsyncConnection.connect(dsn())
        watcher = await psycopg.AsyncConnection.connect(dsn(), autocommit=True)
        try:
            # Hold the conversation row: the send below takes its frame and then waits inside
            # its transaction, as a slow commit would.
            await locker.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE", [chat.pk])  # noqa: S608
            await sender.send(send_frame(chat.pk, "in-flight"))
            await wait_for_lock_wait(watcher, timeout=10)

            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            codes = [await client.expect_close(timeout=5) for client in clients]
            # Still draining (the send still waits), and a new connection is refused.
            draining = server.process.poll() is None
            try:
                await websockets.connect(server.ws_url, open_timeout=3)
                refused = False
            except OSError:
                refused = True
            if held == "briefly":
                await locker.commit()  # the held-up send goes on with its transaction
            returncode = await asyncio.to_thread(server.process.wait, SHUTDOWN_TIMEOUT + 10)
            exited_after = time.monotonic() - started
            await locker.commit()
        finally:
            await locker.close()
            await watcher.close()
        return {
            "codes": codes,
            "draining": draining,
            "refused": refused,
            "returncode": returncode,
            "exited_after": exited_after,
            "acked": [f for f in sender.received if f.get("type") == "message.ack"],
        }

    try:
        drained = run(scenario())
    finally:
        if server.process.poll() is None:
            stop_server(server)
    assert drained["codes"] == [1012, 1012, 1012]
    assert drained["draining"] and drained["refused"]
    # uvicorn re-raises the SIGTERM it handled once it is done.
    assert drained["returncode"] in (0, -signal.SIGTERM), server.log()
    assert drained["exited_after"] < SHUTDOWN_TIMEOUT + 3
    stored = list(Message.objects.filter(conversation=chat, client_msg_id="in-flight-at-sigterm"))
    # Never acked without being stored; stored without an ack is what the retry is for.
    if drained["acked"]:
        assert [m.pk for m in stored] == [drained["acked"][0]["message"]["id"]]
    if held == "past_the_bound":
        assert not drained["acked"]
        assert not stored
        assert "timeout graceful shutdown exceeded" in server.log()

    # The client reconnects to another process and sends the unacked message again.
    other = start_server(tmp_path, name="other")
    try:

        async def retry() -> dict[str, Any]:
            client = await connect(other, logins[0])
            ack = await client.request(send_frame(chat.pk, "retry"), "message.ack")
            await client.close()
            return ack

        ack = run(retry())
    finally:
        stop_server(other)
    assert ack["type"] == "message.ack", ack
    rows = list(Message.objects.filter(conversation=chat, client_msg_id="in-flight-at-sigterm"))
    assert [m.pk for m in rows] == [ack["message"]["id"]]
    if stored:
        assert rows[0].pk == stored[0].pk


def test_daphne_has_no_drain_its_sockets_just_drop(alice: User, tmp_path: Path) -> None:
    """daphne (``WEB_SERVER=daphne``) cancels the application on SIGTERM and drops its sockets
    without a close frame: clients see 1006 and come back with their usual backoff."""
    login = app_login(alice)
    server = start_server(tmp_path, name="daphne", WEB_SERVER="daphne")

    async def scenario() -> tuple[int, int]:
        client = await connect(server, login)
        server.process.send_signal(signal.SIGTERM)
        code = await client.expect_close(timeout=15)
        return code, await asyncio.to_thread(server.process.wait, 20)

    try:
        code, returncode = run(scenario())
    finally:
        if server.process.poll() is None:
            stop_server(server)
    assert code == 1006, server.log()
    assert returncode == 0, server.log()
