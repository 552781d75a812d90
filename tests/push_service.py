"""A local push service for tests, and a Web Push subscriber that can read what it receives.

:class:`FakePushService` answers on a loopback port the way push services do: Web Push
(RFC 8030, any path), FCM HTTP v1 (``/v1/projects/<id>/messages:send``) and APNs
(``/3/device/<token>``). Like real ones it stores an accepted push until the device takes
it and replaces a stored push that has the same ``Topic`` (Web Push) or collapse id, so
``shown`` is what the device would display. Replies can be scripted per path (statuses,
``Retry-After``, or holding the request open until released).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece  # type: ignore[import-untyped]  # ships no type information
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def collapse_key(self) -> str:
        return (
            self.headers.get("topic")
            or self.headers.get("apns-collapse-id")
            or self.json_body().get("message", {}).get("android", {}).get("collapse_key", "")
        )

    def json_body(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.body)
        except ValueError:
            return {}
        return data


@dataclass
class Reply:
    status: int = 201
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    hold: bool = False  # keep the request open until FakePushService.release is set


class FakePushService:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.shown: dict[tuple[str, str], Received] = {}
        self.scripts: dict[str, list[Reply]] = {}
        self.changed = threading.Condition()
        self.holding = threading.Event()
        self.release = threading.Event()
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                reply = service._next_reply(self.path)
                with service.changed:
                    service.received.append(got)
                    if reply.status < 300:  # stored for the device; a same-topic push replaces it
                        service.shown[(self.path, got.collapse_key or f"#{len(service.received)}")] = got
                    service.changed.notify_all()
                if reply.hold:
                    service.holding.set()
                    service.release.wait(30)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the sender is gone (killed while we held its request)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.origin}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with these replies (then 201)."""
        self.scripts[path] = list(replies)

    def _next_reply(self, path: str) -> Reply:
        with self.changed:
            queue = self.scripts.get(path)
            return queue.pop(0) if queue else Reply()

    def to(self, path: str) -> list[Received]:
        with self.changed:
            return [r for r in self.received if r.path == path]

    def shown_to(self, path: str) -> list[Received]:
        with self.changed:
            return [r for (p, _), r in self.shown.items() if p == path]

    def wait_for(self, predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Wait until ``predicate`` holds, woken by every request (no polling sleeps)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {self.received}")
                self.changed.wait(remaining)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Subscriber:
    """A browser's push subscription: its own P-256 key pair and auth secret (RFC 8291)."""

    def __init__(self, service: FakePushService, name: str) -> None:
        self.path = f"/wp/{name}"
        self.endpoint = service.url(self.path)
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)

    def subscription(self) -> dict[str, Any]:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "kind": "webpush",
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }

    def decrypt(self, received: Received) -> dict[str, Any]:
        """Read an aes128gcm push as the browser would."""
        assert received.headers.get("content-encoding") == "aes128gcm", received.headers
        plain = http_ece.decrypt(
            received.body, private_key=self.private_key, auth_secret=self.auth, version="aes128gcm"
        )
        data: dict[str, Any] = json.loads(plain)
        return data


def verify_vapid(received: Received, *, public_key: str, origin: str, subject: str) -> dict[str, Any]:
    """Check a request's VAPID Authorization (RFC 8292) as a push service does; return the claims."""
    scheme, _, params = received.headers["authorization"].partition(" ")
    assert scheme == "vapid", received.headers["authorization"]
    parts = dict(item.strip().split("=", 1) for item in params.split(","))
    assert parts["k"] == public_key
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(parts["k"]))
    claims: dict[str, Any] = jwt.decode(parts["t"], key, algorithms=["ES256"], audience=origin)
    assert claims["sub"] == subject
    assert claims["exp"] > time.time()
    return claims
