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
import redis
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
    from chat_project.celery import app as celery_app
    from chat_project.queues import celery_queue_settings

    celery_app.conf.update(celery_queue_settings(f"{prefix}-"))
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


class LoopbackURLs:
    """The addresses of a server listening on 127.0.0.1:``port``."""

    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    @property
    def origin(self) -> str:
        return self.http_url


@dataclass
class LiveServer(LoopbackURLs):
    """A web process (scripts/serve.sh: daphne, or uvicorn with WEB_SERVER=uvicorn) on this
    worker's test database."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)

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
        "CELERY_QUEUE_PREFIX": f"{settings.CACHE_KEY_PREFIX}-",
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


def wait_for_redis(
    *,
    port: int,
    what: str,
    host: str = "127.0.0.1",
    timeout: float = 15,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Until the redis-server at host:port answers PING; fail at once if its process exited."""
    client = redis.Redis(host=host, port=port, socket_timeout=1, socket_connect_timeout=1)

    def answers() -> bool:
        if process is not None and process.poll() is not None:
            log = log_path.read_text() if log_path is not None else ""
            raise AssertionError(f"redis-server exited with {process.returncode}: {log}")
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until(answers, timeout=timeout, what=what)
    finally:
        client.close()


def start_server(tmp_dir: Path, name: str = "web", **extra_env: str) -> LiveServer:
    port = free_port()
    log_path = tmp_dir / f"{name}-{port}.log"
    # The server the project runs in production, chosen the same way (WEB_SERVER).
    env = server_env(HOST="127.0.0.1", PORT=str(port), VENV_BIN=str(Path(sys.executable).parent), **extra_env)
    log = log_path.open("wb")
    process = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "serve.sh")],
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


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_server(server: LiveServer) -> None:
    stop_process(server.process, timeout=10)


@pytest.fixture(scope="session")
def live_server_asgi(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real daphne process per worker, shared by the tests that need a server."""
    server = start_server(tmp_path_factory.mktemp("asgi"))
    yield server
    stop_server(server)


# --- S3 over real HTTP (moto's server) and a real Celery worker ---------------------------


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str

    def env(self) -> dict[str, str]:
        return {
            "AWS_S3_ENDPOINT_URL": self.endpoint,
            "AWS_STORAGE_BUCKET_NAME": self.bucket,
            "AWS_ACCESS_KEY_ID": "test-key",
            "AWS_SECRET_ACCESS_KEY": "test-secret",  # moto accepts any credentials
            "AWS_S3_REGION_NAME": "us-east-1",
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="test-key",
            aws_secret_access_key="test-secret",
            region_name="us-east-1",
        )

    def storages(self) -> dict[str, Any]:
        return {
            **settings.STORAGES,
            "default": {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {
                    "bucket_name": self.bucket,
                    "endpoint_url": self.endpoint,
                    "access_key": "test-key",
                    "secret_key": "test-secret",
                    "region_name": "us-east-1",
                    "default_acl": None,
                    "querystring_auth": True,
                    "querystring_expire": 300,
                    "file_overwrite": False,
                },
            },
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3]:
    """moto's S3 server on a loopback port, with one private bucket."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3(endpoint=f"http://127.0.0.1:{port}", bucket="chat-media")
    s3.client().create_bucket(Bucket=s3.bucket)
    yield s3
    server.stop()


@pytest.fixture
def s3(s3_server: S3, settings: Any) -> S3:
    """Route this test's default storage to the S3 server."""
    settings.STORAGES = s3_server.storages()
    settings.AWS_STORAGE_BUCKET_NAME = s3_server.bucket
    return s3_server


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_worker(tmp_dir: Path, *, name: str = "worker", queues: str = "", **extra_env: str) -> Worker:
    """A real Celery worker process on RabbitMQ, consuming this run's queues (or only ``queues``,
    comma-separated names without the prefix:
    a worker kept for a whole session must not take other tests' tasks, e.g. pushes for the
    messages of the messaging tests, while their database is being flushed)."""
    log_path = tmp_dir / f"{name}.log"
    log = log_path.open("wb")
    env = server_env(**extra_env)
    only = ("--queues", ",".join(env["CELERY_QUEUE_PREFIX"] + q for q in queues.split(","))) if queues else ()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "chat_project", "worker", "--loglevel", "INFO"),
            *("--concurrency", "1", "--pool", "prefork", "--without-mingle", "--without-gossip"),
            *("--hostname", f"{name}-{os.getpid()}@%h"),
            *only,
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    worker = Worker(process=process, log_path=log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"worker exited with {process.returncode}:\n{worker.log()}")
        return " ready." in worker.log()

    wait_until(ready, timeout=60, what="the Celery worker to be ready")
    return worker


def stop_worker(worker: Worker) -> None:
    stop_process(worker.process, timeout=20)


@dataclass
class MediaStack:
    server: LiveServer
    worker: Worker
    s3: S3


@pytest.fixture(scope="session")
def media_stack(django_db_setup: None, s3_server: S3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaStack]:
    """A web process and a worker that both store files in the S3 server."""
    from chat_project.celery import app as celery_app

    celery_app.control.purge()  # tasks left in this run's queues by an earlier run
    tmp = tmp_path_factory.mktemp("media")
    # Queues of their own: the in-process tests' tasks (which nobody needs processed) must not
    # reach this worker, nor its work overlap their database flushes.
    env = {**s3_server.env(), "CELERY_QUEUE_PREFIX": f"{settings.CACHE_KEY_PREFIX}-stack-"}
    server = start_server(tmp, name="media-web", **env)
    worker = start_worker(tmp, queues="media", **env)
    yield MediaStack(server=server, worker=worker, s3=s3_server)
    stop_worker(worker)
    stop_server(server)
