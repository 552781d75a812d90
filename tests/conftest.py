"""Shared fixtures: named users, a real ASGI server process, isolation between xdist workers.

Tests run against real PostgreSQL, Redis and RabbitMQ (see the Makefile's TEST_ENV).
Each xdist worker, and each concurrent run, gets its own test database (pytest-django
names it after DATABASE_URL and the worker) and its own Redis key and channel prefixes,
so workers never see each other's users, events or throttling counters.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.test import override_settings

from accounts import services
from accounts.models import Device, User

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery-staple"


def _run_prefix() -> str:
    """A prefix unique to this run and worker: the database name plus the xdist worker."""
    db_name = settings.DATABASES["default"]["NAME"]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"t-{db_name}-{worker}"


def pytest_configure(config: pytest.Config) -> None:
    prefix = _run_prefix()
    layers = {**settings.CHANNEL_LAYERS}
    layers["default"] = {**layers["default"], "CONFIG": {**layers["default"].get("CONFIG", {}), "prefix": prefix}}
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "KEY_PREFIX": prefix}
    override_settings(
        CHANNEL_LAYERS=layers,
        CACHES=caches,
        CHANNEL_LAYER_PREFIX=prefix,
        CACHE_KEY_PREFIX=prefix,
    ).enable()


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    """Forget throttling counters and cached state between tests (only this worker's keys)."""
    yield
    from django.core.cache import cache

    client = getattr(cache, "_cache", None)
    if client is None or not hasattr(client, "get_client"):
        cache.clear()
        return
    redis = client.get_client(write=True)
    keys = list(redis.scan_iter(f"{settings.CACHE_KEY_PREFIX}:*", count=1000))
    if keys:
        redis.delete(*keys)


# --- named users -----------------------------------------------------------------------


def make_user(username: str, display_name: str = "") -> User:
    return services.register_user(username=username, password=PASSWORD, display_name=display_name)


@pytest.fixture
def alice(db: None) -> User:
    return make_user("alice", "Alice")


@pytest.fixture
def bob(db: None) -> User:
    return make_user("bob", "Bob")


@pytest.fixture
def carol(db: None) -> User:
    return make_user("carol", "Carol")


@dataclass
class AppLogin:
    """An app install logged in over the real token endpoint's service."""

    device: Device
    access: str
    refresh: str


def app_login(user: User, platform: str = Device.Platform.ANDROID) -> AppLogin:
    device = services.register_device(user=user, platform=platform, name="test phone")
    tokens = services.issue_tokens(device=device)
    return AppLogin(device=device, access=tokens["access"], refresh=tokens["refresh"])


# --- a real ASGI server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    """A daphne process serving the project against this worker's test database."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def server_env(**extra: str) -> dict[str, str]:
    """The environment a server or worker subprocess needs to share this test's state."""
    db = settings.DATABASES["default"]
    database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chat_project.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_URL": database_url,
        "CHANNEL_LAYER_PREFIX": settings.CHANNEL_LAYER_PREFIX,
        "CACHE_KEY_PREFIX": settings.CACHE_KEY_PREFIX,
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def wait_until(predicate: Any, *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_server(tmp_dir: Path, name: str = "web", **extra_env: str) -> LiveServer:
    port = free_port()
    log_path = tmp_dir / f"{name}-{port}.log"
    env = server_env(**extra_env)
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chat_project.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(port=port, process=process, log_path=log_path, env=env)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            return httpx.get(f"{server.http_url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(healthy, timeout=30, what="the ASGI server to answer /healthz")
    return server


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def live_server_asgi(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real daphne process per worker, shared by the tests that need a server."""
    server = start_server(tmp_path_factory.mktemp("asgi"))
    yield server
    stop_server(server)
