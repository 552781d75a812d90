"""What every push backend takes (a :class:`Push`) and answers (a :class:`Result`).

A backend does one HTTP request to its push service and classifies the answer; deciding
whether to retry, when, and what to record is the caller's job (notifications.services).
"""

from __future__ import annotations

import email.utils
import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from notifications.models import PushSubscription


class Outcome(enum.Enum):
    ACCEPTED = "accepted"  # the push service took it (2xx)
    RETRY = "retry"  # a transient failure: 5xx, 429, 408, timeout, connection error
    GONE = "gone"  # the subscription or token no longer exists (404/410): remove it
    REJECTED = "rejected"  # a permanent failure for this request: do not retry


@dataclass(frozen=True)
class Push:
    """One push to one device. ``collapse_key`` makes the push service (and the device) keep
    only the latest push of a conversation: Web Push ``Topic``, FCM ``collapse_key``, APNs
    ``apns-collapse-id``."""

    kind: str  # "notify" or "clear"
    data: dict[str, Any]
    collapse_key: str
    urgent: bool
    ttl: int


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    status: int | None = None
    retry_after: float | None = None
    detail: str = ""


class PushBackend(Protocol):
    def configured(self) -> bool:
        """Whether the server has what this backend needs (credentials, endpoint)."""

    def send(self, subscription: PushSubscription, push: Push) -> Result:
        """Send one push; never raises for network or push-service failures."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify(status: int, retry_after: str | None = None, detail: str = "") -> Result:
    """The common meaning of a push service's HTTP status."""
    if 200 <= status < 300:
        return Result(Outcome.ACCEPTED, status)
    if status in (404, 410):
        return Result(Outcome.GONE, status, detail=detail)
    if status in (408, 429) or status >= 500:
        return Result(Outcome.RETRY, status, parse_retry_after(retry_after), detail)
    return Result(Outcome.REJECTED, status, detail=detail)
