"""The browser pages for signing up, logging in and out, over Django's test client."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.test import Client

from accounts.models import Device, User
from accounts.selectors import DEVICE_SESSION_KEY
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


class PageParser(HTMLParser):
    """Collects what a person (or a screen reader) finds on a page: labels, inputs, buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: dict[str, str] = {}  # label text -> the id it is for
        self.inputs: dict[str, dict[str, str | None]] = {}  # id -> attributes
        self.buttons: list[str] = []
        self.inline_scripts = 0
        self.inline_handlers: list[str] = []
        self._open: tuple[str, str] | None = None  # ("label", for) or ("button", "")
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.inline_handlers += [name for name in attributes if name.startswith("on")]
        if tag == "label":
            self._open, self._text = ("label", attributes.get("for") or ""), []
        elif tag == "button":
            self._open, self._text = ("button", ""), []
        elif tag == "input" and attributes.get("id"):
            self.inputs[str(attributes["id"])] = attributes
        elif tag == "script" and not attributes.get("src"):
            self.inline_scripts += 1

    def handle_data(self, data: str) -> None:
        if self._open:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag == self._open[0]:
            text = " ".join("".join(self._text).split())
            if tag == "label":
                self.labels[text] = self._open[1]
            else:
                self.buttons.append(text)
            self._open = None

    def field_named(self, label: str) -> str | None:
        """The ``name`` of the input the label with this text points at."""
        target = self.inputs.get(self.labels.get(label, ""))
        return target.get("name") if target else None


def parse(response: Any) -> PageParser:
    parser = PageParser()
    parser.feed(response.content.decode())
    return parser


def page_login(client: Client, username: str, password: str = PASSWORD, **extra: str) -> Any:
    return client.post("/login/", {"username": username, "password": password, **extra})


def logged_in_user_id(client: Client) -> str | None:
    value = client.session.get(SESSION_KEY)
    return None if value is None else str(value)


def csp_directives(response: Any) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    directives: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


@pytest.fixture
def stable_login_window(settings: Any) -> None:
    """Throttling counts in fixed windows; a long one keeps a test from straddling two."""
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 24 * 60 * 60


# --- the forms ----------------------------------------------------------------------------


def test_signup_page_has_labelled_fields_and_a_sign_up_button(client):
    response = client.get("/signup/")

    assert response.status_code == 200
    page = parse(response)
    assert page.field_named("Username") == "username"
    assert page.field_named("Display name") == "display_name"
    assert page.field_named("Password") == "password"
    assert page.inputs[page.labels["Password"]]["type"] == "password"
    assert "Sign up" in page.buttons


def test_login_page_has_labelled_fields_and_a_log_in_button(client):
    response = client.get("/login/")

    assert response.status_code == 200
    page = parse(response)
    assert page.field_named("Username") == "username"
    assert page.field_named("Password") == "password"
    assert page.inputs[page.labels["Password"]]["type"] == "password"
    assert "Display name" not in page.labels
    assert "Log in" in page.buttons


# --- signing up ---------------------------------------------------------------------------


def test_signup_logs_in_as_a_new_web_device_and_goes_home(client):
    response = client.post(
        "/signup/",
        {"username": "dave", "display_name": "Dave", "password": PASSWORD},
        HTTP_USER_AGENT="Firefox test",
    )

    assert response.status_code == 302
    assert response["Location"] == "/"
    dave = User.objects.get(username="dave")
    assert logged_in_user_id(client) == str(dave.pk)
    device = Device.objects.get(user=dave)
    assert (device.platform, device.name, device.revoked_at) == (Device.Platform.WEB, "Firefox test", None)
    assert client.session[DEVICE_SESSION_KEY] == device.pk
    home = client.get("/")
    assert home.status_code == 200
    assert "@dave" in home.content.decode()


def test_signup_with_a_username_taken_in_another_case_shows_the_error(client, alice):
    response = client.post("/signup/", {"username": "Alice", "password": PASSWORD})

    assert response.status_code == 400
    assert "A user with that username already exists." in response.content.decode()
    assert User.objects.count() == 1
    assert logged_in_user_id(client) is None


def test_signup_with_a_weak_password_shows_the_error(client):
    response = client.post("/signup/", {"username": "dave", "password": "password"})

    assert response.status_code == 400
    assert "This password is too common." in response.content.decode()
    assert not User.objects.exists()


# --- logging in ---------------------------------------------------------------------------


def test_login_starts_a_session_with_its_own_web_device(client, alice):
    response = page_login(client, "ALICE")

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert logged_in_user_id(client) == str(alice.pk)
    device = Device.objects.get(pk=client.session[DEVICE_SESSION_KEY])
    assert (device.user_id, device.platform) == (alice.pk, Device.Platform.WEB)


def test_login_with_the_wrong_password_shows_an_error(client, alice):
    response = page_login(client, "alice", "not-the-password")

    assert response.status_code == 400
    assert "Wrong username or password." in response.content.decode()
    assert logged_in_user_id(client) is None
    assert not Device.objects.exists()


@pytest.mark.usefixtures("stable_login_window")
def test_login_is_throttled_like_the_api(client, alice):
    for _ in range(settings.LOGIN_FAILURES_PER_USERNAME):
        assert page_login(client, "alice", "not-the-password").status_code == 400

    response = page_login(client, "alice")

    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= settings.LOGIN_FAILURE_WINDOW_SECONDS
    assert "Too many failed logins" in response.content.decode()
    assert logged_in_user_id(client) is None


def test_home_needs_a_login(client):
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_login_follows_a_local_next(client, alice):
    response = page_login(client, "alice", next="/?chat=1")

    assert response.status_code == 302
    assert response["Location"] == "/?chat=1"


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/", "https:/evil.example/", "javascript:alert(1)", "/\\evil.example"],
)
def test_login_does_not_follow_a_next_to_another_site(client, alice, target):
    in_form = page_login(client, "alice", next=target)
    in_query = Client().post(f"/login/?{urlencode({'next': target})}", {"username": "alice", "password": PASSWORD})

    assert (in_form.status_code, in_form["Location"]) == (302, "/")
    assert (in_query.status_code, in_query["Location"]) == (302, "/")


# --- logging out --------------------------------------------------------------------------


def test_logout_revokes_the_sessions_web_device_and_ends_the_session(client, alice):
    page_login(client, "alice")
    other_browser = Client()
    page_login(other_browser, "alice")
    device = Device.objects.get(pk=client.session[DEVICE_SESSION_KEY])

    response = client.post("/logout/")

    assert response.status_code == 302
    assert response["Location"] == "/login/"
    device.refresh_from_db()
    assert device.revoked_at is not None
    assert logged_in_user_id(client) is None
    assert client.get("/")["Location"] == "/login/?next=/"
    # Only this browser's device: the other session carries on.
    other = Device.objects.get(pk=other_browser.session[DEVICE_SESSION_KEY])
    assert other.revoked_at is None
    assert other_browser.get("/").status_code == 200


def test_logout_by_get_is_not_allowed(client, alice):
    page_login(client, "alice")
    device_id = client.session[DEVICE_SESSION_KEY]

    response = client.get("/logout/")

    assert response.status_code == 405
    assert logged_in_user_id(client) == str(alice.pk)
    assert Device.objects.get(pk=device_id).revoked_at is None


def test_logout_needs_a_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post("/logout/")

    assert response.status_code == 403
    assert logged_in_user_id(client) == str(alice.pk)


# --- Content-Security-Policy --------------------------------------------------------------


def _signed_in(client: Client, alice: User) -> Any:
    page_login(client, "alice")
    return client.get("/")


def _throttled(client: Client, alice: User) -> Any:
    for _ in range(settings.LOGIN_FAILURES_PER_USERNAME):
        page_login(client, "alice", "not-the-password")
    return page_login(client, "alice")


@pytest.mark.parametrize(
    ("fetch", "status"),
    [
        pytest.param(lambda client, alice: client.get("/signup/"), 200, id="signup"),
        pytest.param(lambda client, alice: client.get("/login/"), 200, id="login"),
        pytest.param(lambda client, alice: page_login(client, "alice", "nope"), 400, id="login-error"),
        pytest.param(lambda client, alice: client.post("/signup/", {"username": "x"}), 400, id="signup-error"),
        pytest.param(_throttled, 429, id="throttled"),
        pytest.param(_signed_in, 200, id="home"),
        pytest.param(lambda client, alice: client.get("/no-such-page/"), 404, id="not-found"),
    ],
)
@pytest.mark.usefixtures("stable_login_window")
def test_every_html_page_has_a_strict_content_security_policy(client, alice, fetch, status):
    response = fetch(client, alice)

    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    directives = csp_directives(response)
    script_src = directives.get("script-src", directives.get("default-src"))
    assert script_src is not None
    assert "'unsafe-inline'" not in script_src
    assert "'unsafe-eval'" not in script_src
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    # The policy allows no inline script, so the page must not rely on any.
    page = parse(response)
    assert page.inline_scripts == 0
    assert page.inline_handlers == []
