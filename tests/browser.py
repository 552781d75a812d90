"""Browser tests: Debian's Chromium driven by Playwright's sync API against a live ASGI server.

A test module uses these fixtures by naming this module in ``pytest_plugins``, which also
registers the report hook that saves screenshots of a failed test under ``test-artifacts/``.
(PYTEST_DONT_REWRITE: test modules import this module before pytest loads it as a plugin.)

The server is deployed as production deploys it: ``collectstatic`` first (hashed, compressed
files served by WhiteNoise), then daphne with ``DJANGO_DEBUG=0``, against the test database.

Each test gets its own Playwright and Chromium. Playwright's sync API keeps an asyncio loop
marked as running while it is alive, so a browser shared across tests would break the
``asyncio.run`` of the WebSocket tests that run later in the same worker.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, ViewportSize, sync_playwright

from tests.conftest import ROOT, LiveServer, server_env, start_server, stop_server

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"  # Debian's package, installed by scripts/ensure_chromium.sh
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=390, height=844)

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell that the test failed."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@dataclass
class Browsing:
    """One Chromium for one test: pages on the live server, and every error they logged."""

    browser: Browser
    base_url: str
    pages: list[Page] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def new_page(self, viewport: ViewportSize = DESKTOP) -> Page:
        """A page in a fresh context (no cookies), light mode, relative URLs on the server."""
        context = self.browser.new_context(
            base_url=self.base_url,
            viewport=viewport,
            color_scheme="light",
            is_mobile=viewport["width"] < 600,
            has_touch=viewport["width"] < 600,
        )
        page = context.new_page()
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)
        self.pages.append(page)
        return page

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _on_page_error(self, error: Error) -> None:
        self.errors.append(f"uncaught: {error.message}")


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as ``test-artifacts/<name>.png`` and return its path."""
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


def has_horizontal_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth > document.documentElement.clientWidth"))


@pytest.fixture(scope="session")
def browser_server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A daphne process serving pages with their collected static files (one per worker).

    Its ``VAR_DIR`` is a temporary directory, so the collected files and any media stay
    out of the working tree.
    """
    var_dir = tmp_path_factory.mktemp("browser-var")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=server_env(VAR_DIR=str(var_dir)),
        check=True,
    )
    server = start_server(var_dir, "browser-web", VAR_DIR=str(var_dir))
    yield server
    stop_server(server)


@pytest.fixture
def browsing(
    request: pytest.FixtureRequest, browser_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Browsing]:
    """A headless Chromium for this test; on failure, screenshots of its pages are saved."""
    # While Playwright runs, its event loop looks running to Django, which would refuse the
    # test's own ORM calls; they run on this thread, between Playwright's calls. Django then
    # keeps those connections apart from the thread's own, so they are closed below.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        session = Browsing(browser=browser, base_url=browser_server.http_url)
        try:
            yield session
        finally:
            call = request.node.stash.get(_REPORTS, {}).get("call")
            if call is not None and call.failed:
                slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
                for number, page in enumerate(session.pages):
                    if not page.is_closed():
                        screenshot(page, f"failures/{slug}-{number}")
            browser.close()
            connections.close_all()


@pytest.fixture
def browser_page(browsing: Browsing) -> Page:
    """A fresh desktop-sized page (1280x800) on the live server."""
    return browsing.new_page(DESKTOP)
