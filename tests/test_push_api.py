"""Push notifications in process: the REST API (subscriptions, config, deliveries,
preferences, mute), the hooks' cost, and the decide/send services run by hand against a
local push service over real HTTP (the Celery path is in tests/test_push.py).

Tests here run inside a transaction, so ``on_commit`` work never fires: each test drives
the outbox and the sends itself, exactly as the tasks would.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Device, User
from accounts.selectors import DEVICE_SESSION_KEY
from conversations import services as chat
from conversations.models import Conversation, Membership
from notifications import services, vapid
from notifications.models import DeadLetter, PushDelivery, PushOutbox, PushPreference, PushSubscription
from tests.conftest import AppLogin, app_login, make_user
from tests.push_service import FakePushService, Reply, Subscriber, b64url, b64url_decode, verify_vapid

pytestmark = pytest.mark.django_db
PUSH = "/api/v1/push/"
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def push_service() -> Iterator[FakePushService]:
    service = FakePushService()
    yield service
    service.close()


@pytest.fixture(scope="module")
def apns_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def push_settings(settings: Any, push_service: FakePushService, apns_key: ec.EllipticCurvePrivateKey) -> Iterator[Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    settings.VAPID_PRIVATE_KEY = b64url(key.private_numbers().private_value.to_bytes(32, "big"))
    settings.VAPID_PUBLIC_KEY = vapid.public_key_b64(key)
    settings.VAPID_SUBJECT = "mailto:ops@example.com"
    settings.WEBPUSH_ENDPOINT_HOSTS = ["127.0.0.1"]
    settings.WEBPUSH_ALLOW_HTTP = True
    settings.FCM_ENDPOINT = push_service.origin
    settings.FCM_PROJECT_ID = "chat-test"
    settings.FCM_ACCESS_TOKEN = "fcm-access-token"
    settings.APNS_ENDPOINT = push_service.origin
    settings.APNS_TEAM_ID, settings.APNS_KEY_ID, settings.APNS_TOPIC = "TEAM123456", "KEY1234567", "org.example.chat"
    settings.APNS_PRIVATE_KEY = apns_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings.PUSH_COALESCE_SECONDS = 0
    vapid.private_key.cache_clear()
    vapid._tokens.clear()
    yield settings
    vapid.private_key.cache_clear()
    vapid._tokens.clear()


def bearer(login: AppLogin) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {login.access}")
    return client


def browser(user: User) -> tuple[APIClient, Device]:
    """A logged-in browser session with its device, as the login page leaves it."""
    device = Device.objects.create(user=user, platform=Device.Platform.WEB, name="browser")
    client = APIClient()
    client.force_login(user)
    session = client.session
    session[DEVICE_SESSION_KEY] = device.pk
    session.save()
    return client, device


def send(sender: User, conversation: Conversation, body: str = "hello") -> Any:
    message, _ = chat.send_message(
        sender=sender, conversation_id=conversation.pk, client_msg_id=f"m{next(_ids)}", body=body
    )
    return message


def decide_and_send(service: FakePushService) -> list[PushDelivery]:
    """Run what the tasks run: every outbox row, then every due send."""
    for row in PushOutbox.objects.order_by("id"):
        services.process_outbox(outbox_id=row.pk)
    due = PushDelivery.objects.filter(status__in=PushDelivery.PENDING).order_by("id")
    for delivery in due:
        assert services.send_delivery(delivery_id=delivery.pk) is None
    return list(PushDelivery.objects.order_by("id"))


# --- the REST API -----------------------------------------------------------------------------


def test_config_hands_out_the_vapid_public_key(push_settings: Any, alice: User) -> None:
    client, _ = browser(alice)

    response = client.get(f"{PUSH}config/")

    assert response.status_code == 200
    body = response.json()
    assert body["vapid_public_key"] == push_settings.VAPID_PUBLIC_KEY
    assert b64url_decode(body["vapid_public_key"])[0] == 4 and len(b64url_decode(body["vapid_public_key"])) == 65
    assert set(body["kinds"]) == {"webpush", "fcm", "apns"}
    assert APIClient().get(f"{PUSH}config/").status_code in (401, 403)


def test_without_configured_keys_one_pair_is_generated_into_var_dir(settings: Any, tmp_path: Path) -> None:
    settings.VAR_DIR, settings.VAPID_PRIVATE_KEY, settings.VAPID_PUBLIC_KEY = tmp_path, "", ""
    vapid.private_key.cache_clear()
    try:
        first = vapid.public_key()
        vapid.private_key.cache_clear()
        assert vapid.public_key() == first  # read back, not made again
        key_file = tmp_path / vapid.KEY_FILE
        assert key_file.stat().st_mode & 0o777 == 0o600
    finally:
        vapid.private_key.cache_clear()


def test_a_browser_session_subscribes_its_own_device_and_can_replace_it(
    push_settings: Any, push_service: FakePushService, alice: User
) -> None:
    client, device = browser(alice)
    first, second = Subscriber(push_service, "a1"), Subscriber(push_service, "a2")

    created = client.post(f"{PUSH}subscriptions/", first.subscription(), format="json")
    replaced = client.post(f"{PUSH}subscriptions/", second.subscription(), format="json")

    assert created.status_code == 201, created.json()
    assert created.json()["device_id"] == device.pk and created.json()["kind"] == "webpush"
    assert replaced.status_code == 200 and replaced.json()["id"] == created.json()["id"]
    stored = PushSubscription.objects.get(device=device)
    assert (stored.endpoint, stored.user_id) == (second.endpoint, alice.pk)
    assert [s["endpoint"] for s in client.get(f"{PUSH}subscriptions/").json()] == [second.endpoint]


def test_an_app_subscribes_its_token_device_with_jwt(push_settings: Any, alice: User) -> None:
    login = app_login(alice)

    response = bearer(login).post(f"{PUSH}subscriptions/", {"kind": "fcm", "token": "fcm:token-123456"}, format="json")

    assert response.status_code == 201
    assert PushSubscription.objects.get(device=login.device).token == "fcm:token-123456"


def test_an_endpoint_moves_to_the_account_that_registers_it_last(
    push_settings: Any, push_service: FakePushService, alice: User, bob: User
) -> None:
    """Two accounts in one browser: pushes follow the one that subscribed last."""
    subscriber = Subscriber(push_service, "shared")
    alice_client, _ = browser(alice)
    bob_client, bob_device = browser(bob)

    assert alice_client.post(f"{PUSH}subscriptions/", subscriber.subscription(), format="json").status_code == 201
    assert bob_client.post(f"{PUSH}subscriptions/", subscriber.subscription(), format="json").status_code == 201

    assert list(PushSubscription.objects.values_list("device_id", flat=True)) == [bob_device.pk]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"endpoint": "https://evil.example.com/collect"}, "endpoint"),
        ({"endpoint": "http://127.0.0.1@evil.example.com/x"}, "endpoint"),
        ({"keys": {"p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}, "keys.p256dh"),
        ({"keys": {"p256dh": None, "auth": "x"}}, "keys"),
        ({"kind": "carrier-pigeon"}, "kind"),
    ],
)
def test_bad_subscriptions_are_refused_in_the_error_shape(
    push_settings: Any, push_service: FakePushService, alice: User, change: dict[str, Any], field: str
) -> None:
    client, _ = browser(alice)
    data = {**Subscriber(push_service, "bad").subscription(), **change}

    response = client.post(f"{PUSH}subscriptions/", data, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == "invalid"
    assert field in response.json()["error"]["fields"]
    assert not PushSubscription.objects.exists()


def test_unconfigured_kinds_and_sessions_without_a_device_get_409(
    push_settings: Any, push_service: FakePushService, alice: User
) -> None:
    push_settings.FCM_ACCESS_TOKEN = ""
    client, _ = browser(alice)
    deviceless = APIClient()
    deviceless.force_login(alice)

    unavailable = client.post(f"{PUSH}subscriptions/", {"kind": "fcm", "token": "fcm:token-123456"}, format="json")
    no_device = deviceless.post(f"{PUSH}subscriptions/", Subscriber(push_service, "x").subscription(), format="json")

    assert (unavailable.status_code, unavailable.json()["error"]["code"]) == (409, "push_unavailable")
    assert (no_device.status_code, no_device.json()["error"]["code"]) == (409, "no_device")
    assert "fcm" not in client.get(f"{PUSH}config/").json()["kinds"]


def test_delete_removes_only_your_own_subscriptions(
    push_settings: Any, push_service: FakePushService, alice: User, bob: User
) -> None:
    alice_client, _ = browser(alice)
    bob_client, _ = browser(bob)
    subscription_id = alice_client.post(
        f"{PUSH}subscriptions/", Subscriber(push_service, "del").subscription(), format="json"
    ).json()["id"]

    foreign = bob_client.delete(f"{PUSH}subscriptions/{subscription_id}/")
    own = alice_client.delete(f"{PUSH}subscriptions/{subscription_id}/")

    assert (foreign.status_code, foreign.json()["error"]["code"]) == (404, "not_found")
    assert own.status_code == 204
    assert not PushSubscription.objects.exists()


def test_preferences_default_on_and_change_with_patch(alice: User) -> None:
    client, _ = browser(alice)

    before = client.get(f"{PUSH}preferences/").json()
    patched = client.patch(f"{PUSH}preferences/", {"previews": False}, format="json")

    assert before == {"enabled": True, "previews": True}
    assert patched.status_code == 200 and patched.json() == {"enabled": True, "previews": False}
    assert PushPreference.objects.get(user=alice).previews is False


def test_mute_until_a_time_forever_and_unmute(alice: User, bob: User, carol: User) -> None:
    conversation, _ = chat.get_or_create_direct(user=alice, other_user_id=bob.pk)
    client, _ = browser(bob)
    url = f"/api/v1/conversations/{conversation.pk}/mute/"
    later = (timezone.now() + timedelta(hours=8)).isoformat()

    until = client.post(url, {"until": later}, format="json")
    forever = client.post(url, {"forever": True}, format="json")
    membership = Membership.objects.get(conversation=conversation, user=bob)
    unmuted = client.post(url, {"until": None}, format="json")
    past = client.post(url, {"until": "2001-01-01T00:00:00+00:00"}, format="json")
    naive = client.post(url, {"until": "2999-01-01T00:00:00"}, format="json")
    outsider = browser(carol)[0].post(url, {"forever": True}, format="json")

    assert until.status_code == 200 and until.json()["muted_until"] is not None
    assert forever.json()["muted_until"].startswith("9999-12-31")
    assert membership.muted_until == services.MUTED_FOREVER
    assert unmuted.json() == {"conversation_id": conversation.pk, "muted_until": None}
    assert (past.status_code, naive.status_code) == (400, 400)
    assert (outsider.status_code, outsider.json()["error"]["code"]) == (404, "not_found")
    assert Membership.objects.get(conversation=conversation, user=bob).muted_until is None


def test_the_push_api_is_documented(client: Any) -> None:
    paths = client.get("/api/schema/", {"format": "json"}).json()["paths"]

    for path in ("config/", "subscriptions/", "subscriptions/{subscription_id}/", "deliveries/", "preferences/"):
        assert f"{PUSH}{path}" in paths, path
    assert "post" in paths["/api/v1/conversations/{conversation_id}/mute/"]


# --- the hooks: what a send and a read cost ----------------------------------------------------------


def test_a_send_costs_one_insert_and_a_read_one_probe(
    alice: User, bob: User, django_assert_num_queries: Any, django_assert_max_num_queries: Any
) -> None:
    conversation, _ = chat.get_or_create_direct(user=alice, other_user_id=bob.pk)
    message = send(alice, conversation)
    membership = Membership.objects.get(conversation=conversation, user=bob)
    membership.read_seq = message.seq

    with django_assert_num_queries(1):
        services.notify_on_commit(messages=[message])
    with django_assert_num_queries(1):  # nothing shown anywhere: no outbox row
        services.clear_on_commit(membership=membership)

    assert PushOutbox.objects.filter(message=message).count() == 2  # send_message's own hook and ours


# --- decisions and sends, run by hand --------------------------------------------------------------


def subscribe(user: User, subscriber: Subscriber, platform: str = Device.Platform.WEB) -> Device:
    device = app_login(user, platform).device
    data = subscriber.subscription()
    services.register_subscription(device=device, kind="webpush", endpoint=data["endpoint"], keys=data["keys"])
    return device


def test_offline_member_gets_an_encrypted_vapid_signed_push(
    push_settings: Any, push_service: FakePushService, alice: User, bob: User
) -> None:
    conversation, _ = chat.get_or_create_direct(user=alice, other_user_id=bob.pk)
    subscriber = Subscriber(push_service, "proc-offline")
    device = subscribe(bob, subscriber)
    message = send(alice, conversation, "Lunch at one?")

    deliveries = decide_and_send(push_service)

    (received,) = push_service.to(subscriber.path)
    payload = subscriber.decrypt(received)
    assert payload == {
        "v": 1,
        "type": "message",
        "conversation_id": conversation.pk,
        "message_id": message.pk,
        "seq": message.seq,
        "tag": f"conversation-{conversation.pk}",
        "title": "Alice",
        "body": "Lunch at one?",
        "sender_name": "Alice",
        "preview": True,
        "unread": 1,
        "badge": 1,
    }
    verify_vapid(
        received,
        public_key=push_settings.VAPID_PUBLIC_KEY,
        origin=push_service.origin,
        subject="mailto:ops@example.com",
    )
    assert received.headers["topic"] == f"conversation-{conversation.pk}"
    assert (received.headers["urgency"], received.headers["ttl"]) == ("high", str(push_settings.PUSH_TTL_SECONDS))
    assert [(d.device_id, d.status, d.attempts, d.preview) for d in deliveries] == [
        (device.pk, PushDelivery.Status.ACCEPTED, 1, True)
    ]
    assert not PushOutbox.objects.exists()


def test_decisions_are_taken_once_per_message_and_device(
    push_settings: Any, push_service: FakePushService, alice: User, bob: User
) -> None:
    conversation, _ = chat.get_or_create_direct(user=alice, other_user_id=bob.pk)
    subscribe(bob, Subscriber(push_service, "proc-once"))
    message = send(alice, conversation)
    (row,) = PushOutbox.objects.all()
    duplicate = PushOutbox.objects.create(
        kind=PushOutbox.Kind.MESSAGE, conversation=conversation, message=message, seq=message.seq
    )

    services.process_outbox(outbox_id=row.pk)
    services.process_outbox(outbox_id=row.pk)  # redelivered task: nothing left to do
    services.process_outbox(outbox_id=duplicate.pk)  # a second row for the same message

    assert PushDelivery.objects.filter(message=message).count() == 1


def test_a_batch_of_outbox_rows_is_decided_as_one_by_one_would_be(
    push_settings: Any, push_service: FakePushService, alice: User, bob: User, carol: User
) -> None:
    """Rows decided together (one task per group commit): the second message to an offline
    device coalesces into the first one's push, as it would if decided after it."""
    with_bob, _ = chat.get_or_create_direct(user=alice, other_user_id=bob.pk)
    with_carol, _ = chat.get_or_create_direct(user=alice, other_user_id=carol.pk)
    bobs = subscribe(bob, Subscriber(push_service, "proc-batch-bob"))
    bare = app_login(carol).device
    first, second, third = send(alice, with_bob), send(alice, with_bob), send(alice, with_carol)

    services.process_outboxes(list(PushOutbox.objects.order_by("-id").values_list("pk", flat=True)))

    decided = {
        (d.message_id, d.device_id): (d.status, d.reason, d.coalesced_into_id) for d in PushDelivery.objects.all()
    }
    pushed = PushDelivery.objects.get(message=first, device=bobs)
    assert decided == {
        (first.pk, bobs.pk): ("computed", "", None),
        (second.pk, bobs.pk): ("suppressed", "coalesced", pushed.pk),
        (third.pk, bare.pk): ("suppressed", "no_subscription", None),
    }
    assert not PushOutbox.objects.exists()


def test_deciding_a_batch_costs_the_same_queries_for_two_messages_or_twenty(
    push_settings: Any, alice: User, django_assert_max_num_queries: Any
) -> None:
    peers = [make_user(f"quiet{i}") for i in range(20)]
    chats = [chat.get_or_create_direct(user=alice, other_user_id=p.pk)[0] for p in peers]
    for peer in peers:
        app_login(peer)  # a device without a push subscription

    def cost(conversations: list[Conversation]) -> int:
        for conversation in conversations:
            send(alice, conversation)
        rows = list(PushOutbox.objects.values_list("pk", flat=True))
        with CaptureQueriesContext(connection) as captured:
            services.process_outboxes(rows)
        assert not PushOutbox.objects.exists()
        return len(captured.captured_queries)

    assert cost(chats[:2]) == cost(chats[2:])


def test_without_previews_the_push_says_only_new_message(
    push_settings: Any, push_service: FakePushService, alice: User, bob: User, carol: User
) -> None:
    group = chat.create_group(creator=alice, title="Trip", member_ids=[bob.pk, carol.pk])
    subscriber = Subscriber(push_service, "proc-private")
    subscribe(bob, subscriber)
    services.update_preferences(user=bob, previews=False)
    send(alice, group, "the secret plan")

    (delivery,) = [d for d in decide_and_send(push_service) if d.user_id == bob.pk]

    payload = subscriber.decrypt(push_service.to(subscriber.path)[0])
    assert (payload["title"], payload["body"], payload["sender_name"]) == ("Trip", "New message", "Alice")
    assert "secret" not in str(payload)
    assert delivery.preview is False


def test_a_device_without_subscription_and_a_user_who_disabled_push_are_traced(
    push_settings: Any, push_service: FakePushService, alice: User, bob: User, carol: User
) -> None:
    group = chat.create_group(creator=alice, title="Trace", member_ids=[bob.pk, carol.pk])
    bare = app_login(bob).device
    subscribe(carol, Subscriber(push_service, "proc-disabled"))
    services.update_preferences(user=carol, enabled=False)
    message = send(alice, group)

    decisions = {(d.device_id, d.user_id): (d.status, d.reason) for d in decide_and_send(push_service)}

    assert decisions[(bare.pk, bob.pk)] == ("suppressed", "no_subscription")
    assert ("suppressed", "disabled") in decisions.values()
    assert not push_service.to("/wp/proc-disabled")
    rows = bearer(app_login(bob)).get(f"{PUSH}deliveries/", {"message_id": message.pk}).json()
    assert [(r["device_id"], r["status"], r["reason"]) for r in rows] == [(bare.pk, "suppressed", "no_subscription")]


def test_reading_on_one_device_clears_the_notification_on_the_others(
    push_settings: Any, push_service: FakePushService, alice: User, bob: User
) -> None:
    conversation, _ = chat.get_or_create_direct(user=alice, other_user_id=bob.pk)
    subscriber = Subscriber(push_service, "proc-clear")
    subscribe(bob, subscriber)
    message = send(alice, conversation, "ping")
    decide_and_send(push_service)

    chat.mark_cursor(user=bob, conversation_id=conversation.pk, status="read", seq=message.seq)
    (row,) = PushOutbox.objects.all()
    deliveries = decide_and_send(push_service)

    notify, clear = push_service.to(subscriber.path)
    assert subscriber.decrypt(clear) == {
        "v": 1,
        "type": "clear",
        "conversation_id": conversation.pk,
        "read_seq": message.seq,
        "tag": f"conversation-{conversation.pk}",
        "badge": 0,
    }
    assert clear.headers["topic"] == notify.headers["topic"]  # replaces the notification if still stored
    assert clear.headers["urgency"] == "normal"
    assert (row.kind, [d.kind for d in deliveries]) == ("read", ["notify", "clear"])
    assert deliveries[0].cleared_at is not None
    services.clear_on_commit(membership=Membership.objects.get(conversation=conversation, user=bob))
    assert not PushOutbox.objects.exists()  # nothing shown any more: a read writes no outbox row


def test_fcm_and_apns_backends_speak_their_services_protocols(
    push_settings: Any, push_service: FakePushService, apns_key: ec.EllipticCurvePrivateKey, alice: User, bob: User
) -> None:
    conversation, _ = chat.get_or_create_direct(user=alice, other_user_id=bob.pk)
    android = app_login(bob, Device.Platform.ANDROID).device
    iphone = app_login(bob, Device.Platform.IOS).device
    services.register_subscription(device=android, kind="fcm", token="fcm-token-android")
    services.register_subscription(device=iphone, kind="apns", token="a" * 64)
    send(alice, conversation, "hi phones")

    deliveries = decide_and_send(push_service)

    (fcm,) = push_service.to("/v1/projects/chat-test/messages:send")
    (apns,) = push_service.to(f"/3/device/{'a' * 64}")
    assert fcm.headers["authorization"] == "Bearer fcm-access-token"
    message = fcm.json_body()["message"]
    assert message["token"] == "fcm-token-android"
    assert message["android"]["collapse_key"] == f"conversation-{conversation.pk}"
    assert (message["data"]["body"], message["data"]["badge"]) == ("hi phones", "1")
    scheme, token = apns.headers["authorization"].split(" ")
    claims = jwt.decode(token, apns_key.public_key(), algorithms=["ES256"])
    assert scheme == "bearer" and claims["iss"] == "TEAM123456"
    assert jwt.get_unverified_header(token)["kid"] == "KEY1234567"
    assert (apns.headers["apns-topic"], apns.headers["apns-push-type"]) == ("org.example.chat", "alert")
    assert apns.headers["apns-collapse-id"] == f"conversation-{conversation.pk}"
    assert apns.json_body()["aps"]["alert"] == {"title": "Alice", "body": "hi phones"}
    assert {d.status for d in deliveries} == {"accepted"}


def test_fcm_mints_its_access_token_from_a_service_account(
    push_settings: Any, push_service: FakePushService, tmp_path: Path, alice: User, bob: User, carol: User
) -> None:
    from urllib.parse import parse_qs

    from cryptography.hazmat.primitives.asymmetric import rsa

    from notifications.backends import google_auth

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account = {
        "type": "service_account",
        "project_id": "chat-from-account",
        "client_email": "push@chat-from-account.iam.example",
        "private_key_id": "k1",
        "private_key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "token_uri": push_service.url("/token"),
    }
    key_file = tmp_path / "service-account.json"
    key_file.write_text(json.dumps(account))
    push_settings.FCM_ACCESS_TOKEN, push_settings.FCM_PROJECT_ID = "", ""
    push_settings.FCM_SERVICE_ACCOUNT_FILE = str(key_file)
    google_auth.forget_token()
    minted = [json.dumps({"access_token": f"minted-{n}", "expires_in": 3600}).encode() for n in (1, 2)]
    push_service.script("/token", Reply(200, body=minted[0]), Reply(200, body=minted[1]))
    send_path = "/v1/projects/chat-from-account/messages:send"
    push_service.script(send_path, Reply(200), Reply(200), Reply(401))  # then 201s
    # Three chats, so that no push is coalesced with another.
    senders = [alice, carol, make_user("dave")]
    chats = [chat.get_or_create_direct(user=u, other_user_id=bob.pk)[0] for u in senders]
    android = app_login(bob, Device.Platform.ANDROID).device
    services.register_subscription(device=android, kind="fcm", token="fcm-token-android")

    try:
        send(senders[0], chats[0], "first")
        decide_and_send(push_service)
        send(senders[1], chats[1], "second")  # the token is cached: no new assertion
        decide_and_send(push_service)
        send(senders[2], chats[2], "third")  # FCM refuses the token (401): forget it, retry later
        for row in PushOutbox.objects.order_by("id"):
            services.process_outbox(outbox_id=row.pk)
        third = PushDelivery.objects.get(status__in=PushDelivery.PENDING)
        assert services.send_delivery(delivery_id=third.pk) is not None  # a retry is scheduled
        PushDelivery.objects.filter(pk=third.pk).update(next_attempt_at=timezone.now())  # its time comes
        assert services.send_delivery(delivery_id=third.pk) is None  # sent with a newly minted token
        deliveries = list(PushDelivery.objects.order_by("id"))
    finally:
        google_auth.forget_token()

    token_requests = push_service.to("/token")
    assert len(token_requests) == 2
    form = parse_qs(token_requests[0].body.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    claims = jwt.decode(form["assertion"][0], key.public_key(), algorithms=["RS256"], audience=account["token_uri"])
    assert (claims["iss"], claims["scope"]) == (account["client_email"], google_auth.SCOPE)
    assert claims["exp"] - claims["iat"] == 3600
    auths = [r.headers["authorization"] for r in push_service.to(send_path)]
    assert auths[:3] == ["Bearer minted-1"] * 3
    assert auths[3:] == ["Bearer minted-2"]
    assert deliveries[-1].status == "accepted"


@pytest.mark.parametrize(
    ("kind", "reply"),
    [
        ("fcm", Reply(404, body=b'{"error": {"status": "NOT_FOUND"}}')),
        ("apns", Reply(410, body=b'{"reason": "Unregistered"}')),
        ("apns", Reply(400, body=b'{"reason": "BadDeviceToken"}')),
    ],
)
def test_app_tokens_the_service_calls_gone_are_removed(
    push_settings: Any, push_service: FakePushService, alice: User, bob: User, kind: str, reply: Reply
) -> None:
    conversation, _ = chat.get_or_create_direct(user=alice, other_user_id=bob.pk)
    token = f"{kind}-gone-{next(_ids)}" if kind == "fcm" else f"{next(_ids):064x}"
    device = app_login(bob).device
    services.register_subscription(device=device, kind=kind, token=token)
    path = "/v1/projects/chat-test/messages:send" if kind == "fcm" else f"/3/device/{token}"
    push_service.script(path, reply)
    send(alice, conversation)

    (delivery,) = decide_and_send(push_service)

    assert (delivery.status, delivery.reason, delivery.response_status) == ("failed", "gone", reply.status)
    assert not PushSubscription.objects.filter(device=device).exists()


def test_dead_letters_can_be_retried_by_an_operator(
    push_settings: Any, push_service: FakePushService, alice: User, bob: User, admin_client: Any
) -> None:
    push_settings.PUSH_MAX_ATTEMPTS = 1
    conversation, _ = chat.get_or_create_direct(user=alice, other_user_id=bob.pk)
    subscriber = Subscriber(push_service, "proc-dead")
    subscribe(bob, subscriber)
    push_service.script(subscriber.path, Reply(503))
    send(alice, conversation)
    (dead,) = decide_and_send(push_service)

    listing = admin_client.get("/admin/notifications/deadletter/")
    retried = admin_client.post(
        "/admin/notifications/deadletter/", {"action": "retry_now", "_selected_action": [dead.pk]}
    )
    services.send_delivery(delivery_id=dead.pk)

    assert (dead.status, dead.response_status) == ("dead_lettered", 503)
    assert listing.status_code == 200 and str(dead.pk) in listing.content.decode()
    assert retried.status_code == 302
    assert PushDelivery.objects.get(pk=dead.pk).status == "accepted"
    assert not DeadLetter.objects.exists()
    for page in ("pushdelivery", "pushsubscription", "pushoutbox", "pushpreference"):
        assert admin_client.get(f"/admin/notifications/{page}/").status_code == 200, page


def test_deliveries_list_only_your_own_devices(
    push_settings: Any, push_service: FakePushService, alice: User, bob: User, carol: User
) -> None:
    group = chat.create_group(creator=alice, title="Mine", member_ids=[bob.pk, carol.pk])
    subscribe(bob, Subscriber(push_service, "mine-b"))
    subscribe(carol, Subscriber(push_service, "mine-c"))
    send(alice, group)
    decide_and_send(push_service)

    rows = bearer(app_login(bob)).get(f"{PUSH}deliveries/").json()
    bad = bearer(app_login(bob)).get(f"{PUSH}deliveries/", {"message_id": "x"})

    assert {r["device_id"] for r in rows} <= set(Device.objects.filter(user=bob).values_list("pk", flat=True))
    assert [r["status"] for r in rows] == ["accepted"]
    assert bad.status_code == 400
