"""Push notifications end to end: real RabbitMQ, real Celery worker (and beat) processes,
real web processes, and a local HTTP server playing the push service.

Every push the service receives is decrypted with the subscription's own keys, the way the
browser would read it. Nothing waits by sleeping: tests wait for the push service to
receive, or for the database to show a decision, with a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import Device, User
from chat_project.celery import app as celery_app
from chat_project.queues import QUEUE_NAMES
from conversations import services as chat
from conversations.models import Conversation
from notifications.models import DeadLetter, PushDelivery, PushOutbox, PushSubscription
from notifications.vapid import public_key_b64
from tests.conftest import (
    ROOT,
    AppLogin,
    LiveServer,
    Worker,
    app_login,
    free_port,
    make_user,
    server_env,
    start_server,
    start_worker,
    stop_server,
    stop_worker,
    wait_until,
)
from tests.push_service import FakePushService, Reply, Subscriber, b64url, verify_vapid
from tests.wsclient import WSClient, run

pytestmark = pytest.mark.django_db(transaction=True)
SUBJECT = "mailto:ops@example.com"
_ids = itertools.count(1)
_names = itertools.count(1)


@pytest.fixture(scope="module")
def vapid_env() -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    return {
        "VAPID_PRIVATE_KEY": b64url(key.private_numbers().private_value.to_bytes(32, "big")),
        "VAPID_PUBLIC_KEY": public_key_b64(key),
        "VAPID_SUBJECT": SUBJECT,
    }


@dataclass
class Stack:
    """The push service, and the web/worker/beat processes a test started (stopped after it).

    Each test has queues of its own (CELERY_QUEUE_PREFIX), so that no other worker of this
    run (a session-wide media worker, say) takes its tasks, and sends go through a web
    process of the test, which publishes to those queues.
    """

    tmp: Path
    service: FakePushService | None
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)
    servers: list[LiveServer] = field(default_factory=list)

    def worker(self, name: str = "push-worker", **env: str) -> Worker:
        worker = start_worker(self.tmp, name=f"{name}-{next(_names)}", **{**self.env, **env})  # unique: pidbox
        self.workers.append(worker)
        return worker

    def beat(self, **env: str) -> Worker:
        log_path = self.tmp / "beat.log"
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "chat_project", "beat", "--loglevel", "INFO"),
                *("--schedule", str(self.tmp / "beat-schedule")),
            ],
            cwd=ROOT,
            env=server_env(**{**self.env, **env}),
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        beat = Worker(process=process, log_path=log_path)
        self.workers.append(beat)
        wait_until(lambda: "beat: Starting" in beat.log(), timeout=30, what="celery beat to start")
        return beat

    def web(self, **env: str) -> LiveServer:
        server = start_server(self.tmp, name=f"push-web-{len(self.servers)}", **{**self.env, **env})
        self.servers.append(server)
        return server

    def send(self, sender: AppLogin, conversation: Conversation, body: str, server: LiveServer | None = None) -> int:
        """Send over REST through a web process of this test; return the message id."""
        server = server or (self.servers[0] if self.servers else self.web())
        response = httpx.post(
            f"{server.http_url}/api/v1/conversations/{conversation.pk}/messages/",
            json={"client_msg_id": f"p{next(_ids)}", "body": body},
            headers={"Authorization": f"Bearer {sender.access}"},
            timeout=30,
        )
        assert response.status_code == 201, f"{response.status_code}; the server's log:\n{server.log()[-3000:]}"
        message_id: int = response.json()["id"]
        return message_id

    def stop(self) -> None:
        from notifications import vapid

        for process in reversed(self.workers):
            stop_worker(process)
        for server in self.servers:
            stop_server(server)
        with celery_app.connection_for_write() as conn:  # the queues were this stack's alone
            channel: Any = conn.default_channel  # an amqp channel; kombu types it loosely
            for name in QUEUE_NAMES:
                channel.queue_delete(f"{self.env['CELERY_QUEUE_PREFIX']}{name}")
        if self.service is not None:
            self.service.close()
        vapid.private_key.cache_clear()

    @property
    def push(self) -> FakePushService:
        assert self.service is not None
        return self.service


_prefixes = itertools.count(1)
# The processes most tests share: short coalescing window, fast retries, three attempts.
SHARED_ENV = {"PUSH_COALESCE_SECONDS": "2", "PUSH_MAX_ATTEMPTS": "3", "PUSH_RETRY_BASE_SECONDS": "0.2"}


def process_env(vapid_env: dict[str, str]) -> dict[str, str]:
    """What every process of a stack gets: queues of its own, the keys, the local push service."""
    from django.conf import settings

    return {
        **vapid_env,
        "CELERY_QUEUE_PREFIX": f"{settings.CACHE_KEY_PREFIX}-push{next(_prefixes)}-",
        "WEBPUSH_ENDPOINT_HOSTS": "127.0.0.1",
        "WEBPUSH_ALLOW_HTTP": "1",
        "PUSH_COALESCE_SECONDS": "0",
    }


@pytest.fixture(scope="module")
def shared_processes(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory, vapid_env: dict[str, str]
) -> Iterator[Stack]:
    """One web process and one worker for the tests of this module that need nothing special."""
    processes = Stack(tmp=tmp_path_factory.mktemp("push"), service=None, env={**process_env(vapid_env), **SHARED_ENV})
    processes.web()
    processes.worker()
    yield processes
    processes.stop()


def _in_process_settings(settings: Any, vapid_env: dict[str, str]) -> None:
    """The test process validates subscriptions (REST) like the web processes do."""
    from notifications import vapid

    settings.VAPID_PRIVATE_KEY = vapid_env["VAPID_PRIVATE_KEY"]
    settings.VAPID_PUBLIC_KEY = vapid_env["VAPID_PUBLIC_KEY"]
    settings.WEBPUSH_ENDPOINT_HOSTS, settings.WEBPUSH_ALLOW_HTTP = ["127.0.0.1"], True
    vapid.private_key.cache_clear()


@pytest.fixture
def stack(transactional_db: None, settings: Any, tmp_path: Path, vapid_env: dict[str, str]) -> Iterator[Stack]:
    """A push service and processes of this test's own (started by the test, stopped after it)."""
    _in_process_settings(settings, vapid_env)
    stack = Stack(tmp=tmp_path, service=FakePushService(), env=process_env(vapid_env))
    yield stack
    stack.stop()  # before the database is flushed


@pytest.fixture
def shared(
    transactional_db: None, settings: Any, vapid_env: dict[str, str], shared_processes: Stack
) -> Iterator[Stack]:
    """A push service of this test's own, and the module's shared web process and worker."""
    _in_process_settings(settings, vapid_env)
    stack = Stack(tmp=shared_processes.tmp, service=FakePushService(), env=shared_processes.env)
    stack.servers = shared_processes.servers
    yield stack
    assert stack.service is not None
    stack.service.close()


def subscribe(user: User, subscriber: Subscriber) -> AppLogin:
    """A browser-like device of ``user`` registers over the REST API."""
    login = app_login(user, Device.Platform.WEB)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {login.access}")
    response = client.post("/api/v1/push/subscriptions/", subscriber.subscription(), format="json")
    assert response.status_code == 201, response.json()
    return login


def settled(**filters: Any) -> list[PushDelivery]:
    """Deliveries matching ``filters`` once none of them is still in progress."""
    rows = list(PushDelivery.objects.filter(**filters).order_by("id"))
    return rows if rows and all(r.status in PushDelivery.FINAL for r in rows) else []


def wait_settled(timeout: float = 30, **filters: Any) -> list[PushDelivery]:
    wait_until(lambda: bool(settled(**filters)), timeout=timeout, what=f"push decisions for {filters} to settle")
    return settled(**filters)


def test_offline_member_gets_exactly_one_web_push_and_reads_it(shared: Stack, alice: User, bob: User) -> None:
    stack = shared
    service = stack.push
    conversation, _ = chat.get_or_create_direct(user=alice, other_user_id=bob.pk)
    subscriber = Subscriber(service, "bob")
    login = subscribe(bob, subscriber)

    message_id = stack.send(app_login(alice), conversation, "Are you coming tonight?")

    (delivery,) = wait_settled(message_id=message_id)
    (received,) = service.to(subscriber.path)
    payload = subscriber.decrypt(received)
    assert payload["type"] == "message"
    assert (payload["conversation_id"], payload["message_id"]) == (conversation.pk, message_id)
    assert (payload["sender_name"], payload["body"], payload["badge"]) == ("Alice", "Are you coming tonight?", 1)
    verify_vapid(received, public_key=stack.env["VAPID_PUBLIC_KEY"], origin=service.origin, subject=SUBJECT)
    assert received.headers["topic"] == f"conversation-{conversation.pk}"
    assert (delivery.device_id, delivery.status, delivery.attempts) == (login.device.pk, "accepted", 1)
    assert PushSubscription.objects.get(device=login.device).last_success_at is not None
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {login.access}")
    trace = client.get("/api/v1/push/deliveries/", {"message_id": message_id}).json()
    assert [(t["device_id"], t["status"], t["reason"]) for t in trace] == [(login.device.pk, "accepted", "")]
    assert not PushOutbox.objects.exists()


def test_online_and_muted_members_get_none_and_the_record_says_why(
    shared: Stack, alice: User, bob: User, carol: User
) -> None:
    stack = shared
    web = stack.servers[0]
    alice_login = app_login(alice)
    service = stack.push
    dave = make_user("dave", "Dave")
    group = chat.create_group(creator=alice, title="Weekend", member_ids=[bob.pk, carol.pk, dave.pk])
    online, muted, offline = Subscriber(service, "bob"), Subscriber(service, "carol"), Subscriber(service, "dave")
    bob_login = subscribe(bob, online)
    carol_login = subscribe(carol, muted)
    dave_login = subscribe(dave, offline)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {carol_login.access}")
    assert client.post(f"/api/v1/conversations/{group.pk}/mute/", {"forever": True}, format="json").status_code == 200

    def send_and_wait() -> list[PushDelivery]:
        try:
            return wait_settled(message_id=stack.send(alice_login, group, "Hike on Saturday?"))
        finally:
            connection.close()  # this thread's own connection: the test database is dropped later

    async def scenario() -> list[PushDelivery]:
        ws = await WSClient.connect(web.ws_url, token=bob_login.access)
        await ws.request({"type": "ping", "id": "p1"}, "pong")  # its connect, presence included, is done
        decisions = await asyncio.to_thread(send_and_wait)
        await ws.close()
        return decisions

    decisions = {d.device_id: (d.status, d.reason) for d in run(scenario())}

    assert decisions == {
        bob_login.device.pk: ("suppressed", "online"),
        carol_login.device.pk: ("suppressed", "muted"),
        dave_login.device.pk: ("accepted", ""),
    }
    assert [r.path for r in service.received] == [offline.path]
    assert offline.decrypt(service.received[0])["title"] == "Weekend"


def test_a_burst_is_coalesced_into_few_pushes_that_end_with_the_latest(shared: Stack, alice: User, bob: User) -> None:
    stack = shared  # PUSH_COALESCE_SECONDS=2
    service = stack.push
    conversation, _ = chat.get_or_create_direct(user=alice, other_user_id=bob.pk)
    subscriber = Subscriber(service, "bob")
    subscribe(bob, subscriber)

    alice_login = app_login(alice)
    message_ids = [stack.send(alice_login, conversation, f"message {n}") for n in range(1, 7)]

    wait_until(lambda: len(settled(conversation=conversation)) == 6, timeout=30, what="six settled decisions")
    decisions = settled(conversation=conversation)
    pushed = [d for d in decisions if d.status == "accepted"]
    coalesced = [d for d in decisions if d.reason == "coalesced"]
    received = service.to(subscriber.path)
    assert 1 <= len(received) == len(pushed) < 6 and len(pushed) + len(coalesced) == 6
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(received)]
    assert all(gap > 1.5 for gap in gaps), gaps  # at most one push per 2 s window (minus network jitter)
    assert {d.coalesced_into_id for d in coalesced} <= {d.pk for d in pushed}
    last = subscriber.decrypt(received[-1])
    assert (last["body"], last["unread"], last["message_id"]) == ("message 6", 6, message_ids[-1])
    assert len(service.shown_to(subscriber.path)) == 1  # one notification on the device, the latest


def test_a_subscription_the_push_service_calls_gone_is_removed(shared: Stack, alice: User, bob: User) -> None:
    stack = shared
    service = stack.push
    conversation, _ = chat.get_or_create_direct(user=alice, other_user_id=bob.pk)
    subscriber = Subscriber(service, "bob")
    login = subscribe(bob, subscriber)
    service.script(subscriber.path, Reply(410))

    alice_login = app_login(alice)
    (gone,) = wait_settled(message_id=stack.send(alice_login, conversation, "hello?"))
    (after,) = wait_settled(message_id=stack.send(alice_login, conversation, "anyone?"))

    assert (gone.status, gone.reason, gone.response_status) == ("failed", "gone", 410)
    assert not PushSubscription.objects.filter(device=login.device).exists()
    assert (after.status, after.reason) == ("suppressed", "no_subscription")
    assert len(service.to(subscriber.path)) == 1


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def test_a_worker_killed_during_a_push_is_replaced_and_the_user_sees_it_once(
    stack: Stack, alice: User, bob: User
) -> None:
    fast = {"PUSH_HTTP_TIMEOUT_SECONDS": "1"}  # a killed sender's claim expires after 2 x 1 + 2 s
    doomed = stack.worker("doomed", **fast)
    service = stack.push
    conversation, _ = chat.get_or_create_direct(user=alice, other_user_id=bob.pk)
    subscriber = Subscriber(service, "bob")
    subscribe(bob, subscriber)
    service.script(subscriber.path, Reply(201, hold=True))  # the push service takes it, then stalls

    message_id = stack.send(app_login(alice), conversation, "Did you get this?")
    assert service.holding.wait(30), "the push never reached the push service"
    for pid in [doomed.process.pid, *_descendants(doomed.process.pid)]:
        os.kill(pid, signal.SIGKILL)
    doomed.process.wait()
    service.release.set()
    assert PushDelivery.objects.get(message_id=message_id).status == "sent"  # in flight when the worker died

    stack.worker("replacement", **fast)

    (delivery,) = wait_settled(message_id=message_id)
    first, second = service.to(subscriber.path)
    assert subscriber.decrypt(first)["message_id"] == subscriber.decrypt(second)["message_id"] == message_id
    assert first.headers["topic"] == second.headers["topic"]
    assert len(service.shown_to(subscriber.path)) == 1  # the second replaced the first: seen once
    assert (delivery.status, delivery.attempts) == ("accepted", 2)


def test_sends_succeed_while_the_broker_is_down_and_the_sweep_delivers_each_once(
    stack: Stack, alice: User, bob: User, carol: User
) -> None:
    service = stack.push
    dave = make_user("dave", "Dave")
    subscriber = Subscriber(service, "bob")
    subscribe(bob, subscriber)
    web = stack.web(CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}//")  # nothing listens there
    sent = []
    for sender in (alice, carol, dave):  # three conversations, so that nothing coalesces
        conversation, _ = chat.get_or_create_direct(user=sender, other_user_id=bob.pk)
        sent.append(stack.send(app_login(sender), conversation, f"from {sender.username}", server=web))

    def logged() -> bool:
        return "could not enqueue" in web.log() and "outbox rows" in web.log()

    wait_until(logged, timeout=30, what="the publish failure to be logged")
    assert sorted(PushOutbox.objects.values_list("message_id", flat=True)) == sorted(sent)
    assert not PushDelivery.objects.exists() and not service.received

    worker = stack.worker(PUSH_OUTBOX_GRACE_SECONDS="0")
    stack.beat(PUSH_SWEEP_SECONDS="1", PUSH_OUTBOX_GRACE_SECONDS="0")

    service.wait_for(lambda: len(service.received) >= 3, timeout=60, what="three pushes")
    wait_until(lambda: not PushOutbox.objects.exists(), timeout=30, what="the outbox to empty")
    for message_id in sent:
        wait_settled(message_id=message_id)
    sweeps = worker.log().count("notifications.tasks.sweep_task")
    wait_until(
        lambda: worker.log().count("notifications.tasks.sweep_task") >= sweeps + 4,
        timeout=30,
        what="two more sweeps after recovery",
    )
    bodies = sorted(subscriber.decrypt(r)["body"] for r in service.to(subscriber.path))
    assert bodies == ["from alice", "from carol", "from dave"]  # every one arrived, none twice
    assert PushDelivery.objects.filter(status="accepted").count() == 3


def test_push_service_failures_are_retried_with_backoff_then_dead_lettered(
    shared: Stack, alice: User, bob: User, carol: User
) -> None:
    stack = shared  # PUSH_MAX_ATTEMPTS=3, PUSH_RETRY_BASE_SECONDS=0.2
    service = stack.push
    group = chat.create_group(creator=alice, title="Flaky", member_ids=[bob.pk, carol.pk])
    failing, recovering = Subscriber(service, "bob"), Subscriber(service, "carol")
    bob_login, carol_login = subscribe(bob, failing), subscribe(carol, recovering)
    service.script(failing.path, Reply(503), Reply(429, {"Retry-After": "1"}), Reply(500))
    service.script(recovering.path, Reply(503))

    message_id = stack.send(app_login(alice), group, "status?")

    decisions = {d.device_id: d for d in wait_settled(message_id=message_id)}
    dead, recovered = decisions[bob_login.device.pk], decisions[carol_login.device.pk]
    attempts = service.to(failing.path)
    assert (dead.status, dead.attempts, dead.response_status) == ("dead_lettered", 3, 500)
    assert attempts[2].at - attempts[1].at >= 1.0  # Retry-After honoured
    assert list(DeadLetter.objects.values_list("pk", flat=True)) == [dead.pk]
    assert (recovered.status, recovered.attempts) == ("accepted", 2)
    assert len(service.shown_to(recovering.path)) == 1
