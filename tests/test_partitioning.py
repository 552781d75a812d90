"""Messages hash-partitioned by conversation (conversations/migrations/0004_partition_messages.py).

The migration must convert a database that already holds messages: on a database of its own,
this test migrates to the schema every deployment had before partitioning, fills it (several
conversations, replies, reactions, an attachment, a report, a push outbox row), migrates
forward and checks that every row, index and constraint survived, that the table really is
partitioned, that ids continue and the unique indexes still refuse duplicates, and that the
app's services work on the result. Then it migrates back (the migration is reversible) and
finds the original schema again.

The normal test database is partitioned too (pytest-django runs every migration), so the
whole suite exercises the partitioned table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

PARTITIONS = 16
TABLE = "conversations_message"
# The schema of every deployment before partitioning: each app just before its own migration.
BEFORE = [
    ("conversations", "0002_moderation_fields"),
    ("media", "0001_initial"),
    ("moderation", "0003_moderator_group"),
    ("notifications", "0001_initial"),
]
CONVERSATIONS = 24  # spread over the partitions by hash(conversation_id)
MESSAGES_PER_CONVERSATION = 5


def _admin_connection() -> psycopg.Connection[Any]:
    db = connections[DEFAULT_DB_ALIAS].settings_dict
    return psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname="postgres", autocommit=True
    )


@contextmanager
def _default_database_named(name: str) -> Iterator[None]:
    """Point Django's default connection at another database, as Django's own test-database
    creation does (the pool is per alias, so it is closed on the way in and out)."""
    default = connections[DEFAULT_DB_ALIAS]
    saved = default.settings_dict["NAME"]

    def reset() -> None:
        default.close()
        default.close_pool()  # type: ignore[attr-defined]  # PostgreSQL's wrapper has it

    reset()
    default.settings_dict["NAME"] = name
    try:
        yield
    finally:
        reset()
        default.settings_dict["NAME"] = saved


@pytest.fixture
def scratch_database(django_db_setup: None, django_db_blocker: Any) -> Iterator[str]:
    """An empty database of this test's own, named after this worker's test database."""
    name = f"{connections[DEFAULT_DB_ALIAS].settings_dict['NAME']}_partitioning"[:63]
    with _admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with django_db_blocker.unblock(), _default_database_named(name):
            yield name
    finally:
        with _admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- what the catalog says ------------------------------------------------------------------


def _fetch(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return list(cursor.fetchall())


def _rows() -> list[tuple[Any, ...]]:
    return _fetch(f"SELECT * FROM {TABLE} ORDER BY id")  # noqa: S608  # a constant


def _indexes() -> dict[str, str]:
    """Index definitions of the (parent) table; a partitioned parent's read "ON ONLY"."""
    return {
        name: definition.replace(" ON ONLY ", " ON ")
        for name, definition in _fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [TABLE])
    }


def _constraints() -> dict[str, str]:
    """Constraints on the table, and foreign keys of any table that point at it."""
    return dict(
        _fetch(
            "SELECT conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = %s::regclass OR confrelid = %s::regclass",
            [TABLE, TABLE],
        )
    )


def _relkind() -> str:
    return str(_fetch("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [TABLE])[0][0])


def _last_issued_id() -> int:
    last_value, is_called = _fetch(f"SELECT last_value, is_called FROM {TABLE}_id_seq")[0]  # noqa: S608
    return int(last_value if is_called else last_value - 1)


def _partitions_read(plan: str) -> set[str]:
    return set(re.findall(rf"on ({TABLE}_p\d\d)\b", plan))


def _migrate(targets: list[tuple[str, str]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def _latest() -> list[tuple[str, str]]:
    leaves: list[tuple[str, str]] = MigrationExecutor(connection).loader.graph.leaf_nodes()
    return leaves


# --- data written with the schema of before -----------------------------------------------


def _fill_old_schema() -> dict[str, Any]:
    """Users, conversations and messages written through the historical models."""
    apps = MigrationExecutor(connection).loader.project_state(BEFORE).apps
    User = apps.get_model("accounts", "User")
    Conversation = apps.get_model("conversations", "Conversation")
    Membership = apps.get_model("conversations", "Membership")
    Message = apps.get_model("conversations", "Message")
    Reaction = apps.get_model("conversations", "Reaction")
    Attachment = apps.get_model("media", "Attachment")
    Report = apps.get_model("moderation", "Report")
    PushOutbox = apps.get_model("notifications", "PushOutbox")

    alice, bob, carol = (User.objects.create(username=n, display_name=n.title()) for n in ("alice", "bob", "carol"))
    start = timezone.now() - timedelta(days=1)
    messages = []
    for c in range(CONVERSATIONS):
        conversation = Conversation.objects.create(
            kind="group", title=f"group {c}", created_by=alice, last_seq=0, version=0
        )
        for user in (alice, bob, carol):
            Membership.objects.create(conversation=conversation, user=user)
        previous = None
        for seq in range(1, MESSAGES_PER_CONVERSATION + 1):
            system = seq == 1
            sender = (alice, bob, carol)[seq % 3]
            message = Message.objects.create(
                conversation=conversation,
                seq=seq,
                version=seq,
                sender=None if system else sender,
                client_msg_id=None if system else f"c{c}-m{seq}",
                kind="system" if system else "text",
                body="" if system else f"message {seq} in {c}: ünïcode ✓",
                meta={"event": "group_created", "user_ids": [alice.pk]} if system else None,
                reply_to=previous if seq == 4 else None,
                created_at=start + timedelta(minutes=c * 10 + seq),
                edited_at=start if seq == 3 else None,
                deleted_at=start if seq == 5 and c % 4 == 0 else None,
                hidden_at=start if seq == 2 and c % 5 == 0 else None,
                hidden_reason="spam" if seq == 2 and c % 5 == 0 else "",
            )
            messages.append(message)
            previous = message
            if seq == 3:
                Reaction.objects.create(message=message, user=alice, emoji="👍")
                Reaction.objects.create(message=message, user=bob, emoji="🎉")
        Conversation.objects.filter(pk=conversation.pk).update(
            last_seq=MESSAGES_PER_CONVERSATION, version=MESSAGES_PER_CONVERSATION, last_message_at=start
        )
    attached = messages[7]
    Attachment.objects.create(uploader=attached.sender, message=attached, key="k/1", filename="a.png")
    Report.objects.create(
        reporter=alice, reported_user=bob, conversation=messages[8].conversation, message=messages[8], reason="spam"
    )
    PushOutbox.objects.create(kind="message", conversation=messages[9].conversation, message=messages[9])
    # The newest message is gone, so the sequence stands past the highest id in the table.
    doomed = Message.objects.create(
        conversation=messages[0].conversation, seq=99, version=99, sender=alice, created_at=start, body="gone"
    )
    Message.objects.filter(pk=doomed.pk).delete()
    return {
        "users": {"alice": alice.pk, "bob": bob.pk, "carol": carol.pk},
        "first_conversation": messages[0].conversation_id,
        "reaction_message_ids": sorted(Reaction.objects.values_list("message_id", flat=True)),
        "references": {
            "attachment": Attachment.objects.get().message_id,
            "report": Report.objects.get().message_id,
            "outbox": PushOutbox.objects.get().message_id,
            "replies": sorted(Message.objects.filter(reply_to__isnull=False).values_list("id", "reply_to_id")),
        },
        "deleted_id": doomed.pk,
    }


def _references() -> dict[str, Any]:
    from conversations.models import Message
    from media.models import Attachment
    from moderation.models import Report
    from notifications.models import PushOutbox

    return {
        "attachment": Attachment.objects.get().message_id,
        "report": Report.objects.get().message_id,
        "outbox": PushOutbox.objects.get().message_id,
        "replies": sorted(Message.objects.filter(reply_to__isnull=False).values_list("id", "reply_to_id")),
    }


# --- the test ---------------------------------------------------------------------------------


def test_partitioning_converts_a_database_that_holds_messages(scratch_database: str) -> None:
    _migrate(BEFORE)
    assert _relkind() == "r"
    old = _fill_old_schema()
    rows_before = _rows()
    indexes_before = _indexes()
    constraints_before = _constraints()
    issued_before = _last_issued_id()
    assert len(rows_before) == CONVERSATIONS * MESSAGES_PER_CONVERSATION
    assert issued_before == old["deleted_id"] > max(row[0] for row in rows_before)

    _migrate(_latest())

    # Every message, exactly as it was (LIKE kept the column order).
    assert _rows() == rows_before
    assert _references() == old["references"]
    from conversations.models import Reaction

    assert sorted(Reaction.objects.values_list("message_id", flat=True)) == old["reaction_message_ids"]

    # Partitioned by hash of conversation_id, into PARTITIONS partitions, several of them used.
    assert _relkind() == "p"
    assert _fetch(
        "SELECT partstrat, pg_get_partkeydef(partrelid) FROM pg_partitioned_table WHERE partrelid = %s::regclass",
        [TABLE],
    ) == [("h", "HASH (conversation_id)")]
    partitions = [
        p
        for (p,) in _fetch(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass ORDER BY 1", [TABLE]
        )
    ]
    assert partitions == [f"{TABLE}_p{r:02d}" for r in range(PARTITIONS)]
    used = _fetch(f"SELECT tableoid::regclass::text, count(*) FROM {TABLE} GROUP BY 1")  # noqa: S608
    assert len(used) >= 6, used
    assert sum(n for _, n in used) == len(rows_before)

    # Every index and constraint is still there, by name; only the primary key gained the
    # partition key. Foreign keys pointing at messages are gone (db_constraint=False).
    pkey = f"{TABLE}_pkey"
    expected_indexes = {
        **indexes_before,
        pkey: indexes_before[pkey].replace("(id)", "(id, conversation_id)"),
    }
    assert _indexes() == expected_indexes
    referencing = {name for name, d in constraints_before.items() if f"REFERENCES {TABLE}(id)" in d}
    assert len(referencing) == 6  # reply_to, reactions, attachments, reports, two push tables
    expected_constraints = {n: d for n, d in constraints_before.items() if n not in referencing}
    expected_constraints[f"{TABLE}.{pkey}"] = "PRIMARY KEY (id, conversation_id)"
    assert _constraints() == expected_constraints
    # Each partition carries every index of the parent.
    assert _fetch("SELECT count(*) FROM pg_indexes WHERE tablename = %s", [f"{TABLE}_p00"]) == [
        (len(expected_indexes),)
    ]

    # Ids continue after every id ever handed out, not only after those still in the table.
    from accounts.models import User
    from conversations import selectors, services
    from conversations.models import Conversation, Message

    alice = User.objects.get(pk=old["users"]["alice"])
    bob = User.objects.get(pk=old["users"]["bob"])
    cid = old["first_conversation"]
    sent, created = services.send_message(sender=alice, conversation_id=cid, client_msg_id="after", body="hello again")
    assert created
    assert sent.pk == issued_before + 1
    assert sent.seq == MESSAGES_PER_CONVERSATION + 1
    assert services.send_message(sender=alice, conversation_id=cid, client_msg_id="after", body="hello again") == (
        sent,
        False,
    )

    # The unique indexes still refuse duplicates, in the database itself.
    duplicate = {"conversation_id": cid, "version": 1000, "created_at": timezone.now(), "body": "x"}
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(seq=1000, sender=alice, client_msg_id="after", **duplicate)
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(seq=sent.seq, sender=bob, client_msg_id="another", **duplicate)

    # The services work on the partitioned table: reply, edit, react, read history and sync.
    reply, _ = services.send_message(
        sender=bob, conversation_id=cid, client_msg_id="reply", body="a reply", reply_to=sent.pk
    )
    assert reply.reply_to_id == sent.pk
    services.edit_message(user=alice, conversation_id=cid, message_id=sent.pk, body="hello, edited")
    services.set_reaction(user=bob, conversation_id=cid, message_id=sent.pk, emoji="❤️")
    membership = selectors.access_membership(user_id=bob.pk, conversation_id=cid)
    page, has_more = selectors.message_page(membership=membership, limit=100)
    assert [m.seq for m in page] == list(range(1, MESSAGES_PER_CONVERSATION + 3))
    assert not has_more
    assert page[-2].body == "hello, edited"
    assert [r.emoji for r in page[-2].reactions.all()] == ["❤️"]
    changed = selectors.changes_since(membership=membership, version=MESSAGES_PER_CONVERSATION)
    assert [m.pk for m in changed] == [reply.pk, sent.pk]  # in version order: the edit came last
    assert Conversation.objects.get(pk=cid).last_seq == MESSAGES_PER_CONVERSATION + 2

    # A lookup with its conversation reads one partition; by id alone, every partition.
    assert len(_partitions_read(Message.objects.filter(conversation_id=cid, pk=sent.pk).explain())) == 1
    assert len(_partitions_read(Message.objects.filter(pk=sent.pk).explain())) == PARTITIONS

    # Backwards: a plain table again, every row kept (the new ones too), the original
    # indexes and constraints, the foreign keys that point at messages included.
    rows_after = _rows()
    _migrate(BEFORE)
    assert _relkind() == "r"
    assert _rows() == rows_after
    assert _indexes() == indexes_before
    assert _constraints() == constraints_before
    assert _last_issued_id() >= reply.pk
    assert _fetch("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", [TABLE]) == [(0,)]


@pytest.mark.django_db
def test_the_models_and_the_migrations_agree() -> None:
    """Every model change has its migration (a missing one would surface on an operator's
    first `migrate` as a drift, or worse, as a column the code expects and the table lacks)."""
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
