"""The accounts REST API over DRF's test client: registration, login, JWT, profile, directory.

Real PostgreSQL and Redis (throttling counters live in the cache); no mocks.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import connection
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import Device, User
from tests.conftest import PASSWORD, app_login

REGISTER = "/api/v1/auth/register/"
TOKEN = "/api/v1/auth/token/"
REFRESH = "/api/v1/auth/token/refresh/"
LOGOUT = "/api/v1/auth/logout/"
ME = "/api/v1/me/"
USERS = "/api/v1/users/"

pytestmark = pytest.mark.django_db


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def stable_login_window(settings: Any) -> None:
    """Throttling counts in fixed windows; a long one keeps a test from straddling two."""
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 24 * 60 * 60


def post(client: APIClient, url: str, data: Any) -> Any:
    return client.post(url, data, format="json")


def error_of(response: Any, status: int) -> dict[str, Any]:
    """Assert the status and the one error shape; return the error object."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "detail", "fields"}
    assert isinstance(body["error"]["detail"], str)
    assert body["error"]["detail"]
    return dict(body["error"])


def bearer(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def login(client: APIClient, username: str, password: str = PASSWORD, **extra: str) -> Any:
    return post(client, TOKEN, {"username": username, "password": password, **extra})


def access_token(device: Device, *, lifetime: timedelta) -> str:
    """An access token for ``device`` signed with the real key, expiring after ``lifetime``."""
    token = AccessToken.for_user(device.user)
    token["device_id"] = device.pk
    token.set_exp(lifetime=lifetime)
    return str(token)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def with_claims(token: str, **claims: Any) -> str:
    """The token with its payload changed and its (now wrong) signature kept."""
    header, payload, signature = token.split(".")
    data = {**json.loads(_unb64(payload)), **claims}
    return ".".join([header, _b64(json.dumps(data).encode()), signature])


def with_bad_signature(token: str) -> str:
    """The token with one character in the middle of its signature changed."""
    header, payload, signature = token.split(".")
    i = len(signature) // 2
    swapped = "A" if signature[i] != "A" else "B"
    return ".".join([header, payload, signature[:i] + swapped + signature[i + 1 :]])


def make_people(*people: tuple[str, str], active: bool = True) -> list[User]:
    """Bulk directory data: users with a real (shared) password hash, in one insert."""
    password = make_password(PASSWORD)
    return User.objects.bulk_create(
        User(username=username, display_name=name, password=password, is_active=active) for username, name in people
    )


# --- registration -----------------------------------------------------------------------


def test_register_creates_the_user_and_returns_public_fields_only(api):
    response = post(api, REGISTER, {"username": "dave", "password": PASSWORD, "display_name": " Dave D "})

    assert response.status_code == 201
    user = User.objects.get(username="dave")
    assert response.json() == {"id": user.pk, "username": "dave", "display_name": "Dave D"}
    assert user.check_password(PASSWORD)
    assert user.password not in response.content.decode()
    assert PASSWORD not in response.content.decode()


def test_register_refuses_a_username_taken_in_another_case(api, alice):
    response = post(api, REGISTER, {"username": "ALICE", "password": PASSWORD, "display_name": "Impostor"})

    error = error_of(response, 400)
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["username"]
    assert error["fields"]["username"] == ["A user with that username already exists."]
    assert list(User.objects.values_list("username", flat=True)) == ["alice"]


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        pytest.param("dave", "x7#Lq", "too short", id="too-short"),
        pytest.param("dave", "password", "too common", id="common"),
        pytest.param("dave", "83749201573", "entirely numeric", id="numeric"),
        pytest.param("davidsonic", "davidsonic!", "too similar to the username", id="similar-to-username"),
    ],
)
def test_register_refuses_weak_passwords(api, username, password, message):
    response = post(api, REGISTER, {"username": username, "password": password})

    error = error_of(response, 400)
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["password"]
    assert any(message in text for text in error["fields"]["password"]), error["fields"]
    assert not User.objects.exists()


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        pytest.param({}, {"username", "password"}, id="empty"),
        pytest.param({"username": "dave"}, {"password"}, id="no-password"),
        pytest.param({"password": PASSWORD, "display_name": "Dave"}, {"username"}, id="no-username"),
    ],
)
def test_register_names_each_missing_field(api, body, missing):
    error = error_of(post(api, REGISTER, body), 400)

    assert error["code"] == "invalid"
    assert set(error["fields"]) == missing
    assert not User.objects.exists()


@pytest.mark.parametrize(
    "username",
    [
        pytest.param("ab", id="too-short"),
        pytest.param("a" * 33, id="too-long"),
        pytest.param("a" * 151, id="far-too-long"),
        pytest.param("bad name", id="space"),
        pytest.param("dave/../x", id="slash"),
        pytest.param("d\u00e9j\u00e0vu", id="non-ascii"),
        pytest.param("dave<script>", id="markup"),
        pytest.param("   ", id="blank"),
    ],
)
def test_register_refuses_invalid_usernames(api, username):
    error = error_of(post(api, REGISTER, {"username": username, "password": PASSWORD}), 400)

    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["username"]
    assert not User.objects.exists()


def test_register_refuses_a_display_name_too_long(api):
    error = error_of(post(api, REGISTER, {"username": "dave", "password": PASSWORD, "display_name": "D" * 65}), 400)

    assert list(error["fields"]) == ["display_name"]
    assert not User.objects.exists()


def test_register_with_malformed_json_answers_malformed(api):
    response = api.post(REGISTER, data='{"username": "dave", "password": ', content_type="application/json")

    error = error_of(response, 400)
    assert error["code"] == "malformed"
    assert error["fields"] == {}
    assert not User.objects.exists()


def test_register_is_rate_limited_per_address(api):
    allowed, _ = ScopedRateThrottle().parse_rate(ScopedRateThrottle.THROTTLE_RATES["register"])
    assert allowed is not None
    for _ in range(allowed):  # invalid attempts count too; they are cheap to send
        assert post(api, REGISTER, {}).status_code == 400

    response = post(api, REGISTER, {"username": "dave", "password": PASSWORD})

    error = error_of(response, 429)
    assert error["code"] == "rate_limited"
    assert int(response["Retry-After"]) > 0
    assert not User.objects.exists()


def test_register_limit_is_not_escaped_with_a_forged_forwarded_for_header():
    allowed, _ = ScopedRateThrottle().parse_rate(ScopedRateThrottle.THROTTLE_RATES["register"])
    assert allowed is not None
    for n in range(allowed):
        assert post(APIClient(HTTP_X_FORWARDED_FOR=f"198.51.100.{n}"), REGISTER, {}).status_code == 400

    response = post(
        APIClient(HTTP_X_FORWARDED_FOR="198.51.100.250"), REGISTER, {"username": "dave", "password": PASSWORD}
    )

    assert error_of(response, 429)["code"] == "rate_limited"
    assert not User.objects.exists()


# --- login --------------------------------------------------------------------------------


def test_login_returns_tokens_device_and_user_case_insensitively(api, alice):
    response = login(api, "ALICE", platform="ios", device_name="Alice's phone")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access", "refresh", "device_id", "user"}
    assert body["user"] == {"id": alice.pk, "username": "alice", "display_name": "Alice"}
    device = Device.objects.get(pk=body["device_id"])
    assert (device.user_id, device.platform, device.name, device.revoked_at) == (
        alice.pk,
        "ios",
        "Alice's phone",
        None,
    )
    me = bearer(body["access"]).get(ME)
    assert me.status_code == 200
    assert me.json()["id"] == alice.pk


def test_each_successful_login_registers_its_own_device(api, alice):
    first = login(api, "alice").json()["device_id"]
    second = login(api, "alice").json()["device_id"]

    assert first != second
    assert sorted(Device.objects.filter(user=alice).values_list("pk", flat=True)) == sorted([first, second])
    assert Device.objects.get(pk=first).platform == Device.Platform.OTHER


def test_login_with_the_wrong_password_is_refused(api, alice):
    error = error_of(login(api, "alice", "not-the-password"), 401)

    assert error["code"] == "invalid_credentials"
    assert not Device.objects.exists()


def test_unknown_user_gets_the_same_answer_as_a_wrong_password(api, alice):
    wrong_password = error_of(login(api, "alice", "not-the-password"), 401)
    unknown_user = error_of(login(api, "nobody-here", PASSWORD), 401)

    assert unknown_user == wrong_password
    assert not Device.objects.exists()


def test_deactivated_user_cannot_log_in(api, alice):
    User.objects.filter(pk=alice.pk).update(is_active=False)

    error = error_of(login(api, "alice"), 401)

    assert error["code"] == "invalid_credentials"
    assert not Device.objects.exists()


def test_login_refuses_an_unknown_platform(api, alice):
    error = error_of(login(api, "alice", platform="toaster"), 400)

    assert list(error["fields"]) == ["platform"]
    assert not Device.objects.exists()


# --- login throttling -------------------------------------------------------------------


@pytest.mark.usefixtures("stable_login_window")
def test_too_many_failures_for_one_username_lock_it_even_with_the_right_password(api, alice, bob):
    for attempt in range(settings.LOGIN_FAILURES_PER_USERNAME):
        # Case does not open a second counter.
        name = "alice" if attempt % 2 else "ALICE"
        assert error_of(login(api, name, "wrong-password"), 401)["code"] == "invalid_credentials"

    response = login(api, "alice")

    error = error_of(response, 429)
    assert error["code"] == "rate_limited"
    assert 0 < int(response["Retry-After"]) <= settings.LOGIN_FAILURE_WINDOW_SECONDS
    assert not Device.objects.filter(user=alice).exists()
    # Another username from the same address is not affected.
    assert login(api, "bob").status_code == 200


@pytest.mark.usefixtures("stable_login_window")
def test_too_many_failures_from_one_address_lock_every_username(api, settings, alice, bob):
    settings.LOGIN_FAILURES_PER_IP = 3
    assert settings.LOGIN_FAILURES_PER_USERNAME > 1  # so only the address limit can trigger
    for name in ("alice", "carol", "dave"):
        assert login(api, name, "wrong-password").status_code == 401

    response = login(api, "bob")

    assert error_of(response, 429)["code"] == "rate_limited"
    assert int(response["Retry-After"]) > 0
    # A client on another address still logs in.
    assert login(APIClient(REMOTE_ADDR="10.1.2.3"), "bob").status_code == 200


@pytest.mark.usefixtures("stable_login_window")
def test_a_forged_forwarded_for_header_does_not_escape_the_address_limit(api, settings, bob):
    settings.LOGIN_FAILURES_PER_IP = 2
    for n in range(2):
        forged = APIClient(HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
        assert login(forged, f"user{n}", "wrong-password").status_code == 401

    response = login(APIClient(HTTP_X_FORWARDED_FOR="203.0.113.99"), "bob")

    assert error_of(response, 429)["code"] == "rate_limited"


@pytest.mark.usefixtures("stable_login_window")
def test_a_successful_login_clears_the_usernames_failures(api, alice):
    below_limit = settings.LOGIN_FAILURES_PER_USERNAME - 1
    assert below_limit * 2 >= settings.LOGIN_FAILURES_PER_USERNAME  # the counts would add up to a lock
    for _ in range(2):
        for _ in range(below_limit):
            assert login(api, "alice", "wrong-password").status_code == 401
        assert login(api, "alice").status_code == 200

    assert Device.objects.filter(user=alice).count() == 2


# --- JWT access ---------------------------------------------------------------------------


def test_access_token_reads_me(alice):
    session = app_login(alice)

    response = bearer(session.access).get(ME)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "username", "display_name", "last_seen_visibility", "date_joined"}
    assert (body["id"], body["username"], body["display_name"], body["last_seen_visibility"]) == (
        alice.pk,
        "alice",
        "Alice",
        "everyone",
    )


def test_no_token_is_not_authenticated(api, alice):
    response = api.get(ME)

    assert error_of(response, 401)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(with_bad_signature, id="signature-changed"),
        pytest.param(lambda token: with_claims(token, user_id=0), id="payload-changed"),
        pytest.param(lambda token: token[:-1], id="truncated"),
        pytest.param(lambda token: "not-a-jwt", id="garbage"),
    ],
)
def test_tampered_access_token_is_refused(alice, forge):
    session = app_login(alice)
    assert bearer(session.access).get(ME).status_code == 200

    error = error_of(bearer(forge(session.access)).get(ME), 401)

    assert error["code"] == "token_not_valid"


def test_payload_pointing_at_another_user_is_refused(alice, bob):
    session = app_login(alice)

    forged = with_claims(session.access, user_id=bob.pk)

    assert error_of(bearer(forged).get(ME), 401)["code"] == "token_not_valid"


def test_expired_access_token_is_refused(alice):
    device = app_login(alice).device
    fresh = access_token(device, lifetime=timedelta(minutes=5))
    expired = access_token(device, lifetime=-timedelta(seconds=1))

    assert bearer(fresh).get(ME).status_code == 200
    assert error_of(bearer(expired).get(ME), 401)["code"] == "token_not_valid"


def test_refresh_token_is_not_an_access_token(alice):
    session = app_login(alice)

    assert error_of(bearer(session.refresh).get(ME), 401)["code"] == "token_not_valid"
    assert error_of(post(APIClient(), REFRESH, {"refresh": session.access}), 401)["code"] == "token_not_valid"


# --- refresh rotation and logout ------------------------------------------------------------


def test_refresh_rotates_and_the_old_refresh_token_stops_working(api, alice):
    session = app_login(alice)

    rotated = post(api, REFRESH, {"refresh": session.refresh})

    assert rotated.status_code == 200
    pair = rotated.json()
    assert set(pair) == {"access", "refresh"}
    assert pair["refresh"] != session.refresh
    assert bearer(pair["access"]).get(ME).json()["id"] == alice.pk
    assert error_of(post(api, REFRESH, {"refresh": session.refresh}), 401)["code"] == "token_not_valid"
    # The new refresh token rotates in turn, on the same device.
    again = post(api, REFRESH, {"refresh": pair["refresh"]})
    assert again.status_code == 200
    assert AccessToken(again.json()["access"])["device_id"] == session.device.pk


@pytest.mark.django_db(transaction=True)
def test_one_refresh_token_rotated_twice_at_once_succeeds_at_most_once(alice):
    for _ in range(3):  # several rounds make an interleaving bug show up
        raw = app_login(alice).refresh
        barrier = threading.Barrier(2)
        statuses: list[int] = []

        def rotate(raw: str = raw, barrier: threading.Barrier = barrier, statuses: list[int] = statuses) -> None:
            try:
                client = APIClient()
                barrier.wait(timeout=10)
                statuses.append(post(client, REFRESH, {"refresh": raw}).status_code)
            finally:
                connection.close()

        threads = [threading.Thread(target=rotate) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert sorted(statuses) == [200, 401]


def test_logout_revokes_the_device_and_all_its_tokens(api, alice):
    phone, laptop = app_login(alice), app_login(alice, platform=Device.Platform.DESKTOP)
    assert bearer(phone.access).get(ME).status_code == 200

    response = post(api, LOGOUT, {"refresh": phone.refresh})

    assert response.status_code == 204
    phone.device.refresh_from_db()
    assert phone.device.revoked_at is not None
    assert error_of(post(api, REFRESH, {"refresh": phone.refresh}), 401)["code"] == "token_not_valid"
    # The access token has not expired, but its device is gone.
    assert error_of(bearer(phone.access).get(ME), 401)["code"] == "token_not_valid"
    # Alice's other device keeps working.
    assert bearer(laptop.access).get(ME).status_code == 200
    assert post(api, REFRESH, {"refresh": laptop.refresh}).status_code == 200


def test_logout_with_an_invalid_refresh_token_is_refused(api, alice):
    session = app_login(alice)

    error = error_of(post(api, LOGOUT, {"refresh": with_bad_signature(session.refresh)}), 401)

    assert error["code"] == "token_not_valid"
    session.device.refresh_from_db()
    assert session.device.revoked_at is None


def test_tokens_of_a_deactivated_user_are_refused(api, alice):
    session = app_login(alice)
    assert bearer(session.access).get(ME).status_code == 200

    User.objects.filter(pk=alice.pk).update(is_active=False)

    assert error_of(bearer(session.access).get(ME), 401)["code"] == "token_not_valid"
    assert error_of(post(api, REFRESH, {"refresh": session.refresh}), 401)["code"] == "token_not_valid"


def test_me_is_one_query_with_a_token(alice, django_assert_max_num_queries):
    client = bearer(app_login(alice).access)

    with django_assert_max_num_queries(1):
        response = client.get(ME)

    assert response.status_code == 200


# --- profile ------------------------------------------------------------------------------


def test_patch_me_changes_display_name_and_last_seen_visibility(alice):
    client = bearer(app_login(alice).access)

    response = client.patch(ME, {"display_name": "  Alice A.  ", "last_seen_visibility": "nobody"}, format="json")

    assert response.status_code == 200
    assert response.json()["display_name"] == "Alice A."
    assert response.json()["last_seen_visibility"] == "nobody"
    alice.refresh_from_db()
    assert (alice.display_name, alice.last_seen_visibility) == ("Alice A.", "nobody")


def test_patch_me_changes_only_the_fields_sent(alice):
    client = bearer(app_login(alice).access)
    client.patch(ME, {"last_seen_visibility": "nobody"}, format="json")

    response = client.patch(ME, {"display_name": "Al"}, format="json")

    assert response.status_code == 200
    alice.refresh_from_db()
    assert (alice.display_name, alice.last_seen_visibility) == ("Al", "nobody")


def test_patch_me_cannot_change_the_username(alice):
    client = bearer(app_login(alice).access)

    response = client.patch(ME, {"username": "mallory", "id": 12345}, format="json")

    assert response.status_code == 200
    alice.refresh_from_db()
    assert (alice.pk, alice.username) == (response.json()["id"], "alice")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"last_seen_visibility": "friends"}, "last_seen_visibility", id="unknown-choice"),
        pytest.param({"display_name": "A" * 65}, "display_name", id="display-name-too-long"),
    ],
)
def test_patch_me_rejects_invalid_values(alice, body, field):
    client = bearer(app_login(alice).access)

    error = error_of(client.patch(ME, body, format="json"), 400)

    assert error["code"] == "invalid"
    assert list(error["fields"]) == [field]
    alice.refresh_from_db()
    assert (alice.display_name, alice.last_seen_visibility) == ("Alice", "everyone")


def test_session_api_write_without_csrf_token_is_forbidden(alice):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get(ME).json()["id"] == alice.pk

    error = error_of(client.patch(ME, {"display_name": "Hijacked"}, format="json"), 403)

    assert error["code"] == "forbidden"
    alice.refresh_from_db()
    assert alice.display_name == "Alice"


# --- user directory -----------------------------------------------------------------------


def test_user_search_matches_prefixes_of_username_or_display_name(alice):
    albert, zed, _ = make_people(("albert", "Bert"), ("zed", "Alfred"), ("xalan", "Xavier"))
    make_people(("alvin", "Alvin"), active=False)
    client = bearer(app_login(alice).access)

    for q in ("al", "AL", " aL "):
        response = client.get(USERS, {"q": q})
        assert response.status_code == 200
        assert response.json() == [
            {"id": albert.pk, "username": "albert", "display_name": "Bert"},
            {"id": zed.pk, "username": "zed", "display_name": "Alfred"},
        ], q


@pytest.mark.parametrize("q", ["", "   "])
def test_user_search_with_an_empty_query_finds_nobody(alice, bob, q):
    client = bearer(app_login(alice).access)

    response = client.get(USERS, {"q": q})

    assert response.status_code == 200
    assert response.json() == []


def test_user_search_respects_the_limit(alice):
    make_people(*((f"user{n:02}", "") for n in range(60)))
    client = bearer(app_login(alice).access)

    two = client.get(USERS, {"q": "user", "limit": "2"})
    default = client.get(USERS, {"q": "user"})
    most = client.get(USERS, {"q": "user", "limit": "50"})

    assert [u["username"] for u in two.json()] == ["user00", "user01"]
    assert len(default.json()) == 20
    assert len(most.json()) == 50


@pytest.mark.parametrize("limit", ["51", "0", "-1", "lots"])
def test_user_search_refuses_a_bad_limit(alice, limit):
    client = bearer(app_login(alice).access)

    error = error_of(client.get(USERS, {"q": "a", "limit": limit}), 400)

    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["limit"]


def test_user_search_needs_authentication(api, alice):
    assert error_of(api.get(USERS, {"q": "al"}), 401)["code"] == "not_authenticated"


def test_user_search_query_count_does_not_grow_with_results(alice, django_assert_max_num_queries):
    make_people(*((f"user{n:02}", f"User {n}") for n in range(50)))
    client = bearer(app_login(alice).access)

    with django_assert_max_num_queries(2):
        response = client.get(USERS, {"q": "user", "limit": "50"})

    assert len(response.json()) == 50


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/nope/", "/api/v2/me/", "/api/"])
def test_unknown_api_path_answers_404_in_the_error_shape(api, path):
    response = api.get(path)

    assert response["Content-Type"] == "application/json"
    assert error_of(response, 404)["code"] == "not_found"


def test_wrong_method_answers_405_in_the_error_shape(alice):
    client = bearer(app_login(alice).access)

    assert error_of(client.delete(ME), 405)["code"] == "method_not_allowed"
