"""Signing up, logging in and out in a real Chromium, found by accessible names only."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, ViewportSize, expect

from accounts.models import Device, User
from accounts.services import DUPLICATE_USERNAME
from tests.browser import DESKTOP, PHONE, Browsing, has_horizontal_scroll, screenshot
from tests.conftest import PASSWORD

pytest_plugins = ("tests.browser",)
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STYLESHEET_LOADED = "[...document.styleSheets].some((s) => s.href?.includes('/css/app') && s.cssRules.length > 0)"


def sign_up(page: Page, *, username: str, display_name: str, password: str = PASSWORD) -> None:
    page.goto("/signup/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Display name").fill(display_name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign up").click()


def log_in(page: Page, *, username: str, password: str = PASSWORD) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def expect_path(page: Page, path: str) -> None:
    expect(page).to_have_url(re.compile(rf"^https?://[^/]+{re.escape(path)}(\?.*)?$"))


def test_sign_up_lands_on_home_showing_the_name(browser_page: Page) -> None:
    sign_up(browser_page, username="dora", display_name="Dora Explorer")

    expect_path(browser_page, "/")
    expect(browser_page.get_by_role("banner")).to_contain_text("Dora Explorer")
    user = User.objects.get(username="dora")
    assert user.display_name == "Dora Explorer"
    assert user.devices.filter(platform=Device.Platform.WEB, revoked_at=None).count() == 1


def test_log_out_then_log_back_in(browser_page: Page, alice: User) -> None:
    browser_page.goto("/login/")
    log_in(browser_page, username="alice")
    expect(browser_page.get_by_role("banner")).to_contain_text("Alice")

    browser_page.get_by_role("button", name="Log out").click()

    expect_path(browser_page, "/login/")
    expect(browser_page.get_by_role("button", name="Log in")).to_be_visible()
    first_device = alice.devices.get()
    assert first_device.revoked_at is not None
    browser_page.goto("/")
    expect_path(browser_page, "/login/")  # the session is gone: home asks to log in again

    log_in(browser_page, username="ALICE")  # usernames match regardless of case

    expect_path(browser_page, "/")
    expect(browser_page.get_by_role("banner")).to_contain_text("Alice")
    assert alice.devices.filter(revoked_at=None).exclude(pk=first_device.pk).count() == 1


def test_wrong_password_shows_an_error_and_stays_on_login(browser_page: Page, alice: User) -> None:
    browser_page.goto("/login/")
    log_in(browser_page, username="alice", password="not-the-password")

    expect(browser_page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect_path(browser_page, "/login/")
    expect(browser_page.get_by_label("Username")).to_have_value("alice")
    expect(browser_page.get_by_label("Password")).to_have_value("")
    assert not alice.devices.exists()


def test_duplicate_username_in_other_case_is_shown_next_to_the_field(browser_page: Page, alice: User) -> None:
    sign_up(browser_page, username="ALICE", display_name="Another Alice")

    expect_path(browser_page, "/signup/")
    username = browser_page.get_by_label("Username")
    expect(username).to_have_attribute("aria-invalid", "true")
    expect(username).to_have_accessible_description(DUPLICATE_USERNAME)
    # Next to the field: the message sits in the username field's own group.
    expect(browser_page.locator(".field", has=username)).to_contain_text(DUPLICATE_USERNAME)
    expect(browser_page.get_by_label("Display name")).to_have_value("Another Alice")
    assert User.objects.filter(username__iexact="alice").count() == 1


def test_pages_set_a_csp_and_log_no_errors(browsing: Browsing) -> None:
    page = browsing.new_page()

    for path in ("/login/", "/signup/"):
        response = page.goto(path)
        assert response is not None
        assert response.status == 200
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "style-src 'self'" in policy
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        assert page.evaluate(STYLESHEET_LOADED)
    sign_up(page, username="casey", display_name="")
    expect(page.get_by_role("banner")).to_contain_text("casey")

    assert browsing.errors == []
    # The check is not vacuous: an inline style attribute is refused, and the refusal is seen.
    with page.expect_console_message(lambda m: m.type == "error" and "Content Security Policy" in m.text):
        page.evaluate("document.body.setAttribute('style', 'color: red')")
    assert any("Content Security Policy" in error for error in browsing.errors)


@pytest.mark.parametrize("viewport", [pytest.param(DESKTOP, id="desktop"), pytest.param(PHONE, id="phone")])
def test_pages_fit_the_viewport(browsing: Browsing, viewport: ViewportSize, alice: User) -> None:
    """No horizontal scroll at desktop or phone size; screenshots go to test-artifacts/."""
    size = "desktop" if viewport == DESKTOP else "phone"
    page = browsing.new_page(viewport)

    page.goto("/login/")
    card = page.get_by_role("main")
    expect(card).to_be_visible()
    expect(page.get_by_role("button", name="Log in")).to_be_in_viewport()
    assert not has_horizontal_scroll(page)
    box = card.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= viewport["width"]
    screenshot(page, f"login-{size}")

    sign_up(page, username="Alice", display_name="", password="short")
    expect(page.get_by_label("Username")).to_have_attribute("aria-invalid", "true")
    assert not has_horizontal_scroll(page)
    screenshot(page, f"signup-error-{size}")

    sign_up(page, username=f"zoe_{size}", display_name="Zoë Washburne")
    expect(page.get_by_role("banner")).to_contain_text("Zoë Washburne")
    assert not has_horizontal_scroll(page)
    screenshot(page, f"home-{size}")
