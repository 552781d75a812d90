"""The server's VAPID key pair (RFC 8292): it signs every Web Push request, and browsers bind
their subscriptions to its public key.

From the environment (``VAPID_PRIVATE_KEY``, optionally ``VAPID_PUBLIC_KEY`` to check it);
without it (the embedded default) a key pair is generated once into ``VAR_DIR`` and never
committed, like the secret key. Every process of a deployment must use the same pair:
changing it invalidates every browser subscription.
"""

from __future__ import annotations

import base64
import time
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from chat_project.localkeys import read_or_create

KEY_FILE = "vapid_private_key.pem"
# A token is valid for at most 24 hours (RFC 8292); we sign for 12 and re-sign after 11.
TOKEN_SECONDS = 12 * 60 * 60


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _generated_key_pem(var_dir: Path) -> bytes:
    """The key pair kept in VAR_DIR, made on first use (two processes agree on one)."""
    return read_or_create(
        var_dir / KEY_FILE,
        lambda: ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def parse_private_key(value: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key as PEM, or as the base64url 32-byte scalar that web-push tools print."""
    try:
        if value.lstrip().startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(value.encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise ValueError("not a P-256 key")
            return key
        raw = b64url_decode(value.strip())
        if len(raw) != 32:
            raise ValueError("not 32 bytes")
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError as exc:
        raise ImproperlyConfigured(f"VAPID_PRIVATE_KEY is not a P-256 private key ({exc}).") from None


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as browsers want it: the uncompressed point, base64url without padding."""
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return b64url(point)


@cache
def private_key() -> ec.EllipticCurvePrivateKey:
    """The deployment's VAPID private key (cached for the life of the process)."""
    configured: str = settings.VAPID_PRIVATE_KEY
    key = parse_private_key(configured or _generated_key_pem(Path(settings.VAR_DIR)).decode())
    expected: str = settings.VAPID_PUBLIC_KEY
    if configured and expected and expected.strip() != public_key_b64(key):
        raise ImproperlyConfigured("VAPID_PUBLIC_KEY does not belong to VAPID_PRIVATE_KEY.")
    return key


def public_key() -> str:
    """What GET /api/v1/push/config/ hands to browsers (applicationServerKey)."""
    return public_key_b64(private_key())


_tokens: dict[str, tuple[float, dict[str, str]]] = {}


def authorization(endpoint_origin: str) -> dict[str, str]:
    """The VAPID ``Authorization`` header for a push service origin, re-signed before it expires."""
    from py_vapid import Vapid02  # type: ignore[import-untyped]  # py_vapid ships no type information

    now = time.time()
    cached = _tokens.get(endpoint_origin)
    if cached is not None and cached[0] - now > 60 * 60:
        return cached[1]
    expires = int(now) + TOKEN_SECONDS
    claims: dict[str, Any] = {"aud": endpoint_origin, "exp": expires, "sub": settings.VAPID_SUBJECT}
    headers: dict[str, str] = Vapid02(private_key()).sign(claims)
    _tokens[endpoint_origin] = (float(expires), headers)
    return headers
