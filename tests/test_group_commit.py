"""Group commit of WebSocket sends (conversations.services.send_text_messages): many sends in
one transaction, each answered as a single send would be.

The gateway's queue in front of it is exercised end to end by the WebSocket suites (e.g.
ten concurrent senders in tests/test_messaging_ws.py share batches).
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from chat_project.errors import ApplicationError
from conversations import services
from conversations.models import Conversation, Membership, Message
from conversations.selectors import ConversationNotFound
from conversations.services import SendOutcome, TextSend
from moderation.models import Block
from moderation.selectors import Blocked, ConversationFrozen
from notifications.models import PushOutbox
from tests.conftest import make_user, wait_until
from tests.test_messaging_ws import direct


def text(sender: User, conversation: Conversation, client_msg_id: str, body: str = "hi") -> TextSend:
    return TextSend(sender=sender, conversation_id=conversation.pk, client_msg_id=client_msg_id, body=body)


def stored(outcome: SendOutcome) -> tuple[Message, bool]:
    assert not isinstance(outcome, ApplicationError), outcome
    return outcome


@pytest.mark.django_db
def test_a_batch_answers_every_send_as_a_single_send_would(alice: User, bob: User, carol: User) -> None:
    ab, ac, bc = direct(alice, bob), direct(alice, carol), direct(bob, carol)
    Block.objects.create(blocker=bob, blocked=carol)
    frozen = services.create_group(creator=alice, title="Frozen", member_ids=[bob.pk])
    Conversation.objects.filter(pk=frozen.pk).update(frozen_at=timezone.now())
    old, _ = services.send_message(sender=alice, conversation_id=ab.pk, client_msg_id="old", body="before")

    outcomes = services.send_text_messages(
        [
            text(alice, ab, "a1", "one"),
            text(alice, ab, "a2", "two"),
            text(bob, ab, "b1", "three"),
            text(alice, ab, "old", "retry of a stored message"),
            text(alice, ab, "a1", "retry within the batch"),
            text(carol, ab, "c0"),  # not a member
            text(carol, bc, "c1"),  # bob blocked carol
            text(alice, frozen, "f1"),
            text(alice, ac, "x1", "elsewhere"),
        ]
    )

    a1, a2, b1, retry_old, retry_a1 = (stored(o) for o in outcomes[:5])
    assert [(m.seq, m.version, m.body, new) for m, new in (a1, a2, b1)] == [
        (2, 2, "one", True),
        (3, 3, "two", True),
        (4, 4, "three", True),
    ]
    assert (retry_old[0].pk, retry_old[0].body, retry_old[1]) == (old.pk, "before", False)
    assert (retry_a1[0].pk, retry_a1[0].body, retry_a1[1]) == (a1[0].pk, "one", False)
    assert isinstance(outcomes[5], ConversationNotFound)
    assert isinstance(outcomes[6], Blocked)
    assert isinstance(outcomes[7], ConversationFrozen)
    elsewhere, created = stored(outcomes[8])
    assert (elsewhere.conversation_id, elsewhere.seq, created) == (ac.pk, 1, True)

    assert list(Message.objects.filter(conversation=ab).order_by("seq").values_list("seq", "client_msg_id")) == [
        (1, "old"),
        (2, "a1"),
        (3, "a2"),
        (4, "b1"),
    ]
    assert Conversation.objects.values_list("last_seq", "version").get(pk=ab.pk) == (4, 4)
    assert not Message.objects.filter(conversation__in=[bc, frozen], kind=Message.Kind.TEXT).exists()
    # Each sender's cursors moved to their own newest message, and no further.
    cursors = dict(Membership.objects.filter(conversation=ab).values_list("user_id", "read_seq"))
    assert cursors == {alice.pk: 3, bob.pk: 4}
    # One push outbox row per new message.
    outbox = list(PushOutbox.objects.values_list("message__client_msg_id", flat=True))
    assert len(outbox) == 5
    assert set(outbox) == {"old", "a1", "a2", "b1", "x1"}


@pytest.mark.django_db
def test_a_batch_costs_the_same_queries_for_one_send_or_thirty() -> None:
    sender = make_user("busy")
    peers = [make_user(f"peer{i}") for i in range(31)]
    chats = [direct(sender, peer) for peer in peers]

    def queries(sends: list[TextSend]) -> int:
        with CaptureQueriesContext(connection) as captured:
            outcomes = services.send_text_messages(sends)
        assert all(stored(o)[1] for o in outcomes)
        return len(captured.captured_queries)

    one = queries([text(sender, chats[0], "solo")])
    thirty = queries([text(sender, c, f"m{i}") for i, c in enumerate(chats[1:])])
    assert one == thirty


def connect_aside() -> psycopg.Connection[Any]:
    """Another connection to the test database, beside Django's."""
    params = connection.get_connection_params()
    return psycopg.connect(
        dbname=params["dbname"], user=params.get("user"), host=params.get("host"), port=params.get("port")
    )


def wait_for_a_lock_wait() -> None:
    """Until some backend of the test database waits for a lock (the batch, blocked)."""
    dbname = connection.get_connection_params()["dbname"]
    with connect_aside() as probe:

        def waiting() -> bool:
            found = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'", [dbname]
            ).fetchone()
            return found is not None and found[0] > 0

        wait_until(waiting, timeout=10, what="the batch to wait for a conversation's lock")


def in_thread(sends: list[TextSend]) -> tuple[threading.Thread, list[SendOutcome]]:
    """Run a batch on its own thread (and database connection)."""
    outcomes: list[SendOutcome] = []

    def batch() -> None:
        try:
            outcomes.extend(services.send_text_messages(sends))
        finally:
            connections.close_all()

    worker = threading.Thread(target=batch)
    worker.start()
    return worker, outcomes


@pytest.mark.django_db(transaction=True)
def test_a_retry_racing_its_original_from_another_connection_is_answered_with_it() -> None:
    """The batch checked for duplicates before another transaction stored the same client id:
    its INSERT then fails on the unique index, and the sends are stored one by one instead,
    the retry answered with the original and the order still gap-free."""
    alice, bob = make_user("racer_a"), make_user("racer_b")
    chat = direct(alice, bob)
    other = connect_aside()
    try:
        # The other copy allocates its seq and inserts, holding the conversation's row lock.
        with other.cursor() as cursor:
            cursor.execute(
                "UPDATE conversations_conversation SET last_seq = last_seq + 1, version = version + 1"
                " WHERE id = %s RETURNING last_seq, version",
                [chat.pk],
            )
            row = cursor.fetchone()
            assert row is not None
            cursor.execute(
                "INSERT INTO conversations_message (conversation_id, seq, version, sender_id, client_msg_id, kind,"
                " body, created_at, hidden_reason) VALUES (%s, %s, %s, %s, 'same', 'text', 'original', now(), '')"
                " RETURNING id",
                [chat.pk, row[0], row[1], alice.pk],
            )
            original = cursor.fetchone()
            assert original is not None
        worker, outcomes = in_thread([text(alice, chat, "same", "retry"), text(bob, chat, "b", "reply")])
        wait_for_a_lock_wait()
        other.commit()
        worker.join(timeout=30)
        assert not worker.is_alive()
    finally:
        other.close()

    retry, reply = (stored(o) for o in outcomes)
    assert (retry[0].pk, retry[0].body, retry[1]) == (original[0], "original", False)
    assert (reply[0].seq, reply[1]) == (2, True)
    assert list(Message.objects.filter(conversation=chat).order_by("seq").values_list("seq", "client_msg_id")) == [
        (1, "same"),
        (2, "b"),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_batch_that_loses_a_deadlock_stores_its_sends_one_by_one() -> None:
    """Another transaction holds the batch's second conversation, then asks for its first:
    PostgreSQL aborts the batch (the other side waits longer before checking for deadlocks),
    and its sends are stored one by one once the other side commits; nobody sees an error."""
    alice, bob, carol = make_user("locked_a"), make_user("locked_b"), make_user("locked_c")
    first, second = direct(alice, bob), direct(alice, carol)
    other = connect_aside()
    try:
        other.execute("SET deadlock_timeout = '60s'")
        other.execute("SELECT id FROM conversations_conversation WHERE id = %s FOR UPDATE", [second.pk])
        worker, outcomes = in_thread([text(alice, first, "c1", "one"), text(alice, second, "c2", "two")])
        wait_for_a_lock_wait()  # the batch holds the first conversation and waits for the second
        other.execute("SELECT id FROM conversations_conversation WHERE id = %s FOR UPDATE", [first.pk])
        other.commit()  # reached only once PostgreSQL aborted the batch
        worker.join(timeout=30)
        assert not worker.is_alive()
    finally:
        other.close()

    assert [(m.conversation_id, m.seq, m.body, created) for m, created in map(stored, outcomes)] == [
        (first.pk, 1, "one", True),
        (second.pk, 1, "two", True),
    ]
