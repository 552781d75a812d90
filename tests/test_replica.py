"""History reads from a real streaming replica (chat_project/dbrouter.py, DATABASE_REPLICA_URL).

A session fixture makes a hot standby of the test cluster (pg_basebackup -R, then pg_ctl on a
free port) and tears it down afterwards. Pausing its WAL replay (``pg_wal_replay_pause()``)
freezes what it shows, which lets the tests tell which database answered:

- a change made behind the services' back (an UPDATE that takes no version) is still missing
  from what a reader sees while the replica is paused: the page came from the replica;
- once the conversation takes a new version (a send), the sender, and every other reader of
  that conversation, read it from the primary and see the message at once;
- a conversation that did not change keeps being served by the paused replica.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from django.db import DEFAULT_DB_ALIAS, connections
from django.test.utils import CaptureQueriesContext, override_settings

from accounts.models import User
from chat_project.dbrouter import PRIMARY, REPLICA
from conversations import events, selectors, services
from conversations.models import Conversation, Message
from tests.conftest import app_login, free_port, start_server, stop_server, wait_until

# The primary must let a local standby stream its WAL. Added (once) if missing, then reloaded.
HBA_LINE = "host replication all 127.0.0.1/32 trust"

pytestmark = pytest.mark.django_db(transaction=True, databases=[DEFAULT_DB_ALIAS, REPLICA])


def _primary() -> dict[str, Any]:
    return connections[DEFAULT_DB_ALIAS].settings_dict


def _connect(port: int | str, dbname: str = "postgres") -> psycopg.Connection[Any]:
    return psycopg.connect(host="127.0.0.1", port=port, user=_primary()["USER"], dbname=dbname, autocommit=True)


def _query(port: int | str, sql: str, params: list[Any] | None = None, dbname: str = "postgres") -> list[Any]:
    with _connect(port, dbname) as conn:
        return list(conn.execute(sql, params or []).fetchall())


def _as_postgres(*args: str) -> None:
    """Run a PostgreSQL tool as the postgres user (the server refuses to run as root)."""
    subprocess.run(args, check=True, user="postgres", group="postgres", capture_output=True, timeout=120)


@dataclass
class Standby:
    port: int
    directory: Path

    def sql(self, sql: str) -> list[Any]:
        return _query(self.port, sql)

    def wait_caught_up(self) -> None:
        """Until the standby has replayed everything the primary has committed so far."""
        (lsn,) = _query(_primary()["PORT"] or 5432, "SELECT pg_current_wal_lsn()")[0]
        wait_until(
            lambda: self.sql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn")[0][0],
            timeout=30,
            what="the standby to replay the primary's WAL",
        )

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Replay stops: the standby keeps showing what it had (WAL still arrives)."""
        self.sql("SELECT pg_wal_replay_pause()")
        try:
            wait_until(
                lambda: self.sql("SELECT pg_get_wal_replay_pause_state()")[0][0] == "paused",
                timeout=10,
                what="the standby to pause replay",
            )
            yield
        finally:
            self.sql("SELECT pg_wal_replay_resume()")


def _allow_local_replication(primary_port: int | str) -> None:
    (hba_file,) = _query(primary_port, "SHOW hba_file")[0]
    hba = Path(hba_file)
    if any(line.split() == HBA_LINE.split() for line in hba.read_text().splitlines()):
        return
    with hba.open("a") as f:
        f.write(f"\n# Added by the chat test suite (tests/test_replica.py): local streaming replicas.\n{HBA_LINE}\n")
    _query(primary_port, "SELECT pg_reload_conf()")


@pytest.fixture(scope="session")
def standby(django_db_setup: None, django_db_blocker: Any) -> Iterator[Standby]:
    """A hot standby of the test cluster (which holds this worker's test database)."""
    with django_db_blocker.unblock():
        primary_port = _primary()["PORT"] or 5432
        _allow_local_replication(primary_port)
        (version,) = _query(primary_port, "SHOW server_version_num")[0]
        # A hot standby needs at least the primary's values of these.
        limits = {
            name: _query(primary_port, f"SHOW {name}")[0][0]
            for name in (
                "max_connections",
                "max_worker_processes",
                "max_wal_senders",
                "max_prepared_transactions",
                "max_locks_per_transaction",
            )
        }
    bin_dir = Path("/usr/lib/postgresql") / str(int(version) // 10000) / "bin"
    directory = Path(tempfile.mkdtemp(prefix="chat-standby-"))
    shutil.chown(directory, "postgres", "postgres")
    data = directory / "data"
    port = free_port()
    try:
        for attempt in range(20):  # the primary may take a moment to load the pg_hba.conf line
            try:
                _as_postgres(
                    str(bin_dir / "pg_basebackup"),
                    *("-h", "127.0.0.1", "-p", str(primary_port), "-U", _primary()["USER"]),
                    *("-D", str(data), "-R", "-X", "stream", "-c", "fast"),
                )
                break
            except subprocess.CalledProcessError as exc:
                if attempt == 19:
                    raise AssertionError(f"pg_basebackup failed: {exc.stderr.decode()}") from exc
                shutil.rmtree(data, ignore_errors=True)
                time.sleep(0.25)
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{directory}'",
            "hot_standby": "on",
            "shared_buffers": "32MB",
            "fsync": "off",  # a throwaway copy
            **limits,
        }
        (data / "postgresql.conf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        (data / "pg_ident.conf").write_text("")
        for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
            shutil.chown(data / name, "postgres", "postgres")
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(directory / "log"), "-w", "-t", "60", "start")
        node = Standby(port=port, directory=directory)
        assert node.sql("SELECT pg_is_in_recovery()") == [(True,)]
        yield node
    finally:
        if (data / "postmaster.pid").exists():
            _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def replica(standby: Standby) -> Iterator[Standby]:
    """The ``replica`` alias on the standby, as DATABASE_REPLICA_URL configures it, while this
    module's tests run. They name it among their databases; being a test mirror (as settings
    declare it) it is never flushed, which the read-only standby would refuse anyway."""
    primary = _primary()
    connections.settings[REPLICA] = {
        **primary,
        "HOST": "127.0.0.1",
        "PORT": str(standby.port),
        "OPTIONS": {k: v for k, v in primary["OPTIONS"].items() if k != "pool"},
        "TEST": {**primary["TEST"], "MIRROR": DEFAULT_DB_ALIAS},
    }
    routers = override_settings(DATABASE_ROUTERS=["chat_project.dbrouter.PrimaryReplicaRouter"])
    routers.enable()
    try:
        yield standby
    finally:
        routers.disable()
        connections[REPLICA].close()
        del connections[REPLICA]
        del connections.settings[REPLICA]


@contextmanager
def replica_unset() -> Iterator[None]:
    """As if DATABASE_REPLICA_URL were empty."""
    config = connections.settings.pop(REPLICA)
    try:
        yield
    finally:
        connections.settings[REPLICA] = config


@dataclass
class Reads:
    primary: list[str]
    replica: list[str]


@contextmanager
def reads() -> Iterator[Reads]:
    """The SQL each database ran inside the block."""
    with (
        CaptureQueriesContext(connections[PRIMARY]) as on_primary,
        CaptureQueriesContext(connections[REPLICA]) as on_replica,
    ):
        seen = Reads([], [])
        yield seen
    seen.primary = [q["sql"] for q in on_primary.captured_queries]
    seen.replica = [q["sql"] for q in on_replica.captured_queries]


def _chat(user: User, other: User, *bodies: str) -> tuple[Conversation, list[Message]]:
    conversation, _ = services.get_or_create_direct(user=user, other_user_id=other.pk)
    sent = [
        services.send_message(sender=user, conversation_id=conversation.pk, client_msg_id=f"{body}-id", body=body)[0]
        for body in bodies
    ]
    return conversation, sent


def _page_bodies(user: User, conversation: Conversation) -> list[str]:
    membership = selectors.access_membership(user_id=user.pk, conversation_id=conversation.pk)
    page, _ = selectors.message_page(membership=membership)
    return [events.message_payload(m)["body"] for m in page]


def test_history_and_sync_read_a_caught_up_replica(replica: Standby, alice: User, bob: User) -> None:
    conversation, sent = _chat(alice, bob, "one", "two", "three")
    services.set_reaction(user=bob, conversation_id=conversation.pk, message_id=sent[1].pk, emoji="👍")
    replica.wait_caught_up()
    with connections[REPLICA].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        assert cursor.fetchone() == (True,)  # the alias really is the standby

    membership = selectors.access_membership(user_id=bob.pk, conversation_id=conversation.pk)
    with reads() as seen:
        page, has_more = selectors.message_page(membership=membership)
        payloads = [events.message_payload(m) for m in page]
    assert [p["body"] for p in payloads] == ["one", "two", "three"]
    assert not has_more
    assert payloads[1]["reactions"] == [{"user_id": bob.pk, "emoji": "👍"}]
    # The freshness probe, the page and its two prefetches (reactions, attachments): all on
    # the replica, nothing on the primary.
    assert seen.primary == []
    assert len(seen.replica) == 4
    assert "conversations_conversation" in seen.replica[0]

    with reads() as seen:
        changed = selectors.changes_since(membership=membership, version=0)
    assert [m.body for m in changed] == ["one", "three", "two"]  # version order: the reaction came last
    assert seen.primary == []
    assert len(seen.replica) == 4


def test_a_lagging_replica_serves_only_conversations_it_has_caught_up_with(
    replica: Standby, alice: User, bob: User, carol: User
) -> None:
    with_alice, (first, *_) = _chat(alice, bob, "hello bob", "how are you?")
    with_carol, _ = _chat(carol, bob, "hi bob, carol here")
    replica.wait_caught_up()

    with replica.paused():
        # Behind the services' back (no new version), so the version check cannot notice: whoever
        # still sees the old body read the paused replica.
        Message.objects.filter(pk=first.pk).update(body="changed on the primary only")
        with reads() as seen:
            assert _page_bodies(bob, with_alice) == ["hello bob", "how are you?"]
        assert seen.replica and not [q for q in seen.primary if "conversations_message" in q]

        # The sender writes; the replica does not replay it.
        new, _ = services.send_message(
            sender=alice, conversation_id=with_alice.pk, client_msg_id="lag-1", body="sent while the replica lags"
        )
        assert not Message.objects.using(REPLICA).filter(pk=new.pk).exists()  # the replica's stale view

        # The sender reads their own write at once: the replica is behind this conversation's
        # version, so the page comes from the primary (which also has the out-of-band change).
        with reads() as seen:
            assert _page_bodies(alice, with_alice) == [
                "changed on the primary only",
                "how are you?",
                "sent while the replica lags",
            ]
        assert len(seen.replica) == 1  # only the probe
        assert any("conversations_message" in q for q in seen.primary)

        # So does every other reader of that conversation, and a device that syncs gets the
        # change it will take as its cursor (the consumer jumps to the primary's version).
        assert _page_bodies(bob, with_alice)[-1] == "sent while the replica lags"
        membership = selectors.access_membership(user_id=bob.pk, conversation_id=with_alice.pk)
        assert [m.pk for m in selectors.changes_since(membership=membership, version=first.version)][-1] == new.pk

        # A conversation that did not change is still served by the paused replica.
        with reads() as seen:
            assert _page_bodies(bob, with_carol) == ["hi bob, carol here"]
        assert len(seen.replica) == 4
        assert not [q for q in seen.primary if "conversations_message" in q]

    replica.wait_caught_up()
    with reads() as seen:
        assert _page_bodies(bob, with_alice)[-1] == "sent while the replica lags"
    assert len(seen.replica) == 4


def test_without_a_replica_history_reads_the_primary_with_no_extra_query(
    replica: Standby, alice: User, bob: User
) -> None:
    conversation, _ = _chat(alice, bob, "one")
    replica.wait_caught_up()
    membership = selectors.access_membership(user_id=bob.pk, conversation_id=conversation.pk)
    with reads() as seen, replica_unset():
        selectors.message_page(membership=membership)
    assert len(seen.primary) == 3  # the page and its two prefetches: no probe
    assert seen.replica == []


def test_a_replica_that_is_down_sends_history_reads_to_the_primary(
    replica: Standby, alice: User, bob: User, caplog: pytest.LogCaptureFixture
) -> None:
    conversation, _ = _chat(alice, bob, "one")
    membership = selectors.access_membership(user_id=bob.pk, conversation_id=conversation.pk)
    config = connections.settings[REPLICA]
    connections[REPLICA].close()
    del connections[REPLICA]
    connections.settings[REPLICA] = {**config, "PORT": str(free_port())}  # nothing listens there
    try:
        with CaptureQueriesContext(connections[PRIMARY]) as on_primary:
            page, _ = selectors.message_page(membership=membership)
        assert [m.body for m in page] == ["one"]
        assert len(on_primary.captured_queries) == 3
        assert "the read replica is unavailable" in caplog.text
    finally:
        connections[REPLICA].close()
        del connections[REPLICA]
        connections.settings[REPLICA] = config


def test_a_web_process_with_database_replica_url_reads_history_there(
    standby: Standby, alice: User, bob: User, tmp_path: Path
) -> None:
    conversation, (first,) = _chat(alice, bob, "hello")
    primary = _primary()
    replica_url = f"postgres://{primary['USER']}@127.0.0.1:{standby.port}/{primary['NAME']}"
    server = start_server(tmp_path, name="replica-web", DATABASE_REPLICA_URL=replica_url)
    try:
        url = f"{server.http_url}/api/v1/conversations/{conversation.pk}/messages/"

        def client(user: User) -> httpx.Client:
            return httpx.Client(headers={"Authorization": f"Bearer {app_login(user).access}"}, timeout=10)

        with client(alice) as as_alice, client(bob) as as_bob:
            standby.wait_caught_up()
            with standby.paused():
                Message.objects.filter(pk=first.pk).update(body="changed on the primary only")
                page = as_bob.get(url).json()["messages"]
                assert [m["body"] for m in page] == ["hello"]  # served by the paused replica

                sent = as_alice.post(url, json={"client_msg_id": "http-1", "body": "mine"})
                assert sent.status_code == 201, sent.text
                page = as_alice.get(url).json()["messages"]
                assert [m["body"] for m in page] == ["changed on the primary only", "mine"]
            standby.wait_caught_up()
            assert [m["body"] for m in as_bob.get(url).json()["messages"]] == ["changed on the primary only", "mine"]
        # The server's own connections to the standby read the history tables.
        seen = _query(
            standby.port,
            "SELECT query FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [primary["NAME"]],
        )
        assert any("conversations_" in q or "media_attachment" in q for (q,) in seen), seen
    finally:
        stop_server(server)
