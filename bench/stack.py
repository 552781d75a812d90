"""The server side of the benchmark: the stack started as production would, and what the
harness measures about it (CPU seconds, RSS, Redis keys, the push backlog).

Everything the harness writes is its own, so that a benchmark can run next to test runs on
the same services: a database (``BENCH_DB``), a Redis database and key prefix
(``BENCH_REDIS_URL``, ``BENCH_PREFIX``: channel layer, cache and presence keys), Celery
queues (``<BENCH_PREFIX>-push`` ...) and web ports from ``BENCH_PORT``.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DB_NAME = os.environ.get("BENCH_DB", "chat_bench")
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
PREFIX = os.environ.get("BENCH_PREFIX", "bench")
PORT_BASE = int(os.environ.get("BENCH_PORT", "8700"))


def _vapid_keys() -> dict[str, str]:
    """One VAPID key pair for every process of the run (web processes validate, workers sign)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {
        "VAPID_PRIVATE_KEY": _b64url(key.private_numbers().private_value.to_bytes(32, "big")),
        "VAPID_PUBLIC_KEY": _b64url(point),
        "VAPID_SUBJECT": "mailto:bench@localhost",
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bench_env() -> dict[str, str]:
    """The full stack, with limits meant for abuse raised so they do not cap the measurement."""
    shards = os.environ.get("BENCH_REDIS_SHARD_URLS", "")  # several Redis: the layer's own sharding
    return {
        **({"REDIS_SHARD_URLS": shards} if shards else {}),
        "DATABASE_URL": f"{PG}/{DB_NAME}",
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
        "CHANNEL_LAYER_PREFIX": PREFIX,
        "CACHE_KEY_PREFIX": PREFIX,
        "CELERY_QUEUE_PREFIX": f"{PREFIX}-",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": os.environ.setdefault("BENCH_SECRET_KEY", _b64url(os.urandom(36))),
        "JWT_ACCESS_SECONDS": "86400",
        "WS_SENDS_PER_SECOND": "100000",
        "WS_SEND_BURST": "100000",
        "WS_USER_SENDS_PER_MINUTE": "10000000",
        "LOG_LEVEL": "WARNING",
        "WEB_SERVER": os.environ.get("WEB_SERVER", "uvicorn"),
        "UVICORN_ARGS": "--no-access-log --log-level warning",
        # Push (W6): the push endpoints are the harness's own HTTP server on loopback. Every
        # message is pushed on its own unless BENCH_PUSH_COALESCE_SECONDS says otherwise.
        **_vapid_keys(),
        "WEBPUSH_ENDPOINT_HOSTS": "127.0.0.1",
        "WEBPUSH_ALLOW_HTTP": "1",
        "PUSH_COALESCE_SECONDS": os.environ.get("BENCH_PUSH_COALESCE_SECONDS", "0"),
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


# --- the services: our own database, Redis keys and queues -------------------------------------------


def reset_database(env: dict[str, str]) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )
    delete_redis_keys(env)


def _redis_clients(env: dict[str, str]) -> list[Any]:
    import redis

    urls = [env["REDIS_URL"], *filter(None, env.get("REDIS_SHARD_URLS", "").split(","))]
    return [redis.Redis.from_url(url) for url in dict.fromkeys(u.strip() for u in urls)]


def redis_keys(env: dict[str, str]) -> int:
    """How many keys of this run's prefix Redis holds (presence leases, rate windows, cache),
    over every shard."""
    return sum(sum(1 for _ in client.scan_iter(match=f"{PREFIX}:*", count=1000)) for client in _redis_clients(env))


def redis_leftovers(env: dict[str, str]) -> dict[str, int]:
    """After every client left: keys that never expire, and users whose presence still holds
    a current lease (they look online, so they get no push, until it runs out)."""
    now = time.time()
    forever = online = 0
    for client in _redis_clients(env):
        names = list(client.scan_iter(match=f"{PREFIX}:*", count=1000))
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.ttl(name)
        forever += sum(1 for ttl in pipe.execute() if ttl == -1)
        presence = [n for n in names if n.startswith(f"{PREFIX}:presence:".encode())]
        pipe = client.pipeline(transaction=False)
        for name in presence:
            pipe.zcount(name, now, "+inf")
        online += sum(1 for count in pipe.execute() if count)
    return {"redis_keys_without_ttl": forever, "users_online_after_all_left": online}


def delete_redis_keys(env: dict[str, str]) -> None:
    """Only our prefix: other runs may share the Redis database."""
    for client in _redis_clients(env):
        batch: list[bytes] = []
        for name in client.scan_iter(match=f"{PREFIX}:*", count=1000):
            batch.append(name)
            if len(batch) >= 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)


def queue_names() -> list[str]:
    from chat_project.queues import QUEUE_NAMES

    return [f"{PREFIX}-{name}" for name in QUEUE_NAMES]


def purge_push_work() -> dict[str, int]:
    """Forget the push work a run left behind (queued tasks, outbox rows), so that the next
    run measures only its own; return what was left (the backlog at the end of the run)."""
    from chat_project.celery import app
    from notifications.models import PushOutbox

    purged = 0
    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        for name in queue_names():
            with suppress(Exception):  # a queue nobody declared yet
                purged += int(channel.queue_purge(name) or 0)
    outbox, _ = PushOutbox.objects.all().delete()
    return {"push_tasks_purged": purged, "push_outbox_left": outbox}


def delete_queues() -> None:
    from chat_project.celery import app

    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        for name in queue_names():
            with suppress(Exception):
                channel.queue_delete(name)


# --- processes ----------------------------------------------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (a prefork worker's pool, nginx's workers)."""
    total = 0.0
    for proc in _tree(pid):
        with suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def rss_kb(pid: int) -> int:
    total = 0
    for proc in _tree(pid):
        with suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss // 1024
    return int(total)


def _stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


LOGS = RESULTS / "logs"


class Logs:
    """The server processes' logs (bench/results/logs/), and the problems they report during a run."""

    PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|^Traceback")

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.marks: dict[Path, int] = {}

    def mark(self) -> None:
        self.marks = {p: p.stat().st_size if p.exists() else 0 for p in self.paths}

    def problems(self) -> tuple[int, str]:
        """How many warnings, errors and tracebacks were logged since ``mark``, and the first."""
        count, first = 0, ""
        for path in self.paths:
            if not path.exists():
                continue
            with path.open("rb") as log:
                log.seek(self.marks.get(path, 0))
                for raw in log:
                    line = raw.decode(errors="replace").rstrip()
                    if self.PROBLEM.search(line):
                        count += 1
                        first = first or f"{path.stem}: {line[:200]}"
        return count, first


def log_file(name: str) -> Any:
    LOGS.mkdir(parents=True, exist_ok=True)
    return (LOGS / f"{name}.log").open("ab")


@dataclass
class Web:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Server:
    """What clients connect to: the web processes directly, or nginx in front of them."""

    layout: str  # "direct" or "nginx"
    webs: list[Web]
    balancer: subprocess.Popen[bytes] | None = None
    balancer_port: int = 0
    extra: list[int] = field(default_factory=list)  # other server pids whose CPU counts (none yet)

    @property
    def ws_urls(self) -> list[str]:
        if self.balancer is not None:
            return [f"ws://127.0.0.1:{self.balancer_port}/ws/"]
        return [w.ws_url for w in self.webs]

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.balancer_port}" if self.balancer is not None else self.webs[0].http_url

    def params(self) -> dict[str, Any]:
        return {"layout": self.layout, "web_processes": len(self.webs)}

    def log_paths(self) -> list[Path]:
        return [LOGS / f"web-{w.port}.log" for w in self.webs] + ([LOGS / "nginx.log"] if self.balancer else [])

    def cpu_seconds(self) -> float:
        """The web processes, and nginx when it is in front (its CPU is server CPU too)."""
        pids = [w.process.pid for w in self.webs]
        if self.balancer is not None:
            pids.append(self.balancer.pid)
        return sum(cpu_seconds(pid) for pid in pids)

    def rss_kb(self) -> int:
        """The web processes only (W1's per-socket figure, W7's drift)."""
        return sum(rss_kb(w.process.pid) for w in self.webs)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.2)


def _nginx_conf(directory: Path, listen: str, upstreams: list[str]) -> None:
    """The cluster's own nginx configuration (scripts/run_cluster.sh renders its template);
    a minimal equivalent of our own where that script is missing."""
    script = ROOT / "scripts" / "run_cluster.sh"
    if script.exists() and (ROOT / "scripts" / "nginx.conf.template").exists():
        subprocess.run(["bash", str(script), "nginx-conf", str(directory), listen, *upstreams], cwd=ROOT, check=True)
        return
    (directory / "temp").mkdir(parents=True, exist_ok=True)
    servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=2s;" for u in upstreams)
    user = "user root;" if os.geteuid() == 0 else ""
    (directory / "nginx.conf").write_text(
        f"""daemon off;
worker_processes auto;
pid {directory}/nginx.pid;
error_log stderr warn;
{user}
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {directory}/temp/body;
    proxy_temp_path {directory}/temp/proxy;
    fastcgi_temp_path {directory}/temp/fastcgi;
    uwsgi_temp_path {directory}/temp/uwsgi;
    scgi_temp_path {directory}/temp/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream chat_web {{
        least_conn;
{servers}
        keepalive 32;
    }}
    server {{
        listen {listen};
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        location /ws/ {{
            proxy_pass http://chat_web;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
        }}
        location / {{ proxy_pass http://chat_web; }}
    }}
}}
"""
    )


def _nginx_binary() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx", "/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("nginx is not installed (apt-get install -y nginx)")


@contextmanager
def serve(env: dict[str, str], layout: str, count: int) -> Iterator[Server]:
    """``count`` web processes (scripts/serve.sh), with nginx in front when ``layout`` is "nginx"."""
    webs: list[Web] = []
    balancer: subprocess.Popen[bytes] | None = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    behind_proxy = {"TRUSTED_PROXY_COUNT": "1"} if layout == "nginx" else {}
    try:
        for i in range(count):
            port = PORT_BASE + 1 + i
            process = subprocess.Popen(
                ["bash", str(ROOT / "scripts" / "serve.sh")],
                cwd=ROOT,
                env={
                    **os.environ,
                    **env,
                    **behind_proxy,
                    "PORT": str(port),
                    "VENV_BIN": str(Path(sys.executable).parent),
                },
                stdout=(log := log_file(f"web-{port}")),
                stderr=subprocess.STDOUT,
            )
            log.close()  # the child has its own descriptor
            webs.append(Web(port, process))
        for web in webs:
            _wait_healthy(web.http_url, web.process, f"web process on {web.port}")
        server = Server(layout, webs)
        if layout == "nginx":
            _nginx_conf(tmp, f"127.0.0.1:{PORT_BASE}", [f"127.0.0.1:{w.port}" for w in webs])
            balancer = subprocess.Popen(
                [_nginx_binary(), "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", "stderr"],
                cwd=tmp,
                stdout=(log := log_file("nginx")),
                stderr=subprocess.STDOUT,
            )
            log.close()
            server.balancer, server.balancer_port = balancer, PORT_BASE
            _wait_healthy(server.http_url, balancer, "nginx")
        yield server
    finally:
        if balancer is not None:
            _stop(balancer)
        for web in webs:
            if web.process.poll() is None:
                web.process.terminate()
        for web in webs:
            _stop(web.process)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)


@contextmanager
def celery_worker(env: dict[str, str], concurrency: int) -> Iterator[Worker]:
    """The Procfile's worker (prefork) with beat embedded (the push sweep), on our queues."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    log_path = LOGS / "worker.log"
    LOGS.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "chat_project", "worker", "--loglevel", "WARNING"),
            *("--concurrency", str(concurrency), "--pool", "prefork", "--without-mingle", "--without-gossip"),
            *("--hostname", f"{PREFIX}-{os.getpid()}@%h", "--queues", ",".join(queue_names())),
            *("-B", "--schedule", str(tmp / "beat-schedule")),
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=(log := log_path.open("ab")),
        stderr=subprocess.STDOUT,
    )
    log.close()
    worker = Worker(process, log_path)
    try:
        deadline = time.monotonic() + 60
        while not _worker_ready(worker):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield worker
    finally:
        _stop(process, timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)


def _worker_ready(worker: Worker) -> bool:
    """Ready once it consumes: ask over the broker (its log says nothing at WARNING)."""
    from chat_project.celery import app

    with suppress(Exception):
        replies = app.control.ping(timeout=0.5, destination=[f"{PREFIX}-{os.getpid()}@{os.uname().nodename}"])
        return bool(replies)
    return False


# --- a push service that accepts everything -----------------------------------------------------------


class PushEndpoint:
    """Plays every subscription's push service on loopback: answers 201 to any POST, counts them."""

    def __init__(self) -> None:
        self.received = 0
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with endpoint.lock:
                    endpoint.received += 1
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def webpush_subscription(endpoint: str) -> dict[str, Any]:
    """What a browser's ``subscription.toJSON()`` holds: a fresh P-256 key and auth secret."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {
        "kind": "webpush",
        "endpoint": endpoint,
        "keys": {"p256dh": _b64url(point), "auth": _b64url(os.urandom(16))},
    }
