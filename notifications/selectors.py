"""Reads of push notifications: a user's subscriptions, preferences and delivery trace."""

from __future__ import annotations

from typing import Any

from django.db.models import F, QuerySet, Sum

from chat_project.errors import InvalidInput
from conversations.models import Membership
from notifications.models import PushDelivery, PushPreference, PushSubscription

DELIVERIES_PAGE_MAX = 100


def preferences_of(user_id: int) -> PushPreference:
    """The user's push preferences; the defaults (unsaved) when the user never changed them."""
    return PushPreference.objects.filter(user_id=user_id).first() or PushPreference(user_id=user_id)


def subscriptions_of(user_id: int) -> QuerySet[PushSubscription]:
    return PushSubscription.objects.filter(user_id=user_id).order_by("id")


def total_unread(user_id: int) -> int:
    """The badge: unread messages over all the user's conversations (one query)."""
    total = Membership.objects.filter(user_id=user_id, left_at__isnull=True).aggregate(
        n=Sum(F("conversation__last_seq") - F("read_seq"))
    )["n"]
    return max(0, int(total or 0))


def _optional_id(value: Any, field: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInput(fields={field: ["An integer id."]}) from None


def deliveries_of(
    *, user_id: int, message_id: Any = None, device_id: Any = None, limit: int = 50
) -> list[PushDelivery]:
    """The decisions for the user's own devices, newest first: why a device got a push or none."""
    rows = PushDelivery.objects.filter(user_id=user_id)
    if (message := _optional_id(message_id, "message_id")) is not None:
        rows = rows.filter(message_id=message)
    if (device := _optional_id(device_id, "device_id")) is not None:
        rows = rows.filter(device_id=device)
    limit = max(1, min(limit, DELIVERIES_PAGE_MAX))
    return list(rows.order_by("-created_at", "-id")[:limit])
