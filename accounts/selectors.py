"""Reads of accounts: the user directory and the credentials-to-device lookups."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import Device, User

DEVICE_SESSION_KEY = "_device_id"
USER_SEARCH_MAX = 50


def search_users(*, q: str, viewer: User, limit: int = 20) -> QuerySet[User]:
    """Active users in good standing whose username or display name starts with ``q``
    (case-insensitive); banned and suspended accounts are not offered."""
    q = q.strip()
    if not q:
        return User.objects.none()
    return (
        User.objects.filter(is_active=True)
        .filter(in_good_standing())
        .filter(Q(username__istartswith=q) | Q(display_name__istartswith=q))
        .exclude(pk=viewer.pk)
        .only("id", "username", "display_name")
        .order_by("username")[: min(limit, USER_SEARCH_MAX)]
    )


def in_good_standing(prefix: str = "") -> Q:
    """Users neither banned nor suspended now (``prefix`` reaches them through a relation)."""
    return Q(**{f"{prefix}banned_at__isnull": True}) & (
        Q(**{f"{prefix}suspended_until__isnull": True}) | Q(**{f"{prefix}suspended_until__lte": timezone.now()})
    )


def active_device(*, user_id: int | str | None, device_id: int | str | None) -> Device | None:
    """The device, with its user, if neither is revoked, deactivated, suspended or banned; one query."""
    if user_id is None or device_id is None:
        return None
    try:
        return (
            Device.objects.select_related("user")
            .filter(in_good_standing("user__"), revoked_at__isnull=True, user__is_active=True)
            .get(pk=device_id, user_id=user_id)
        )
    except (Device.DoesNotExist, ValueError, TypeError):  # unknown, or a malformed claim
        return None


def device_for_access_token(raw_token: str) -> Device | None:
    """The device an access token was issued to, or None if the token or device is not valid."""
    try:
        token = AccessToken(raw_token)  # verifies signature, expiry and token type
    except TokenError:
        return None
    return active_device(user_id=token.get("user_id"), device_id=token.get("device_id"))


def device_for_session(session_key: str) -> Device | None:
    """The device of a logged-in browser session, or None if the session is not valid.

    Checks the session's auth hash like Django's own ``get_user`` does, so a password
    change ends other sessions' sockets too.
    """
    from importlib import import_module

    from django.conf import settings

    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    if not store.get(SESSION_KEY) or not store.get(BACKEND_SESSION_KEY):
        return None
    device = active_device(user_id=store.get(SESSION_KEY), device_id=store.get(DEVICE_SESSION_KEY))
    if device is None:
        return None
    if not constant_time_compare(store.get(HASH_SESSION_KEY, ""), device.user.get_session_auth_hash()):
        return None
    return device


@dataclass(frozen=True)
class PresenceProfile:
    shows_presence: bool
    last_seen: datetime | None


def presence_profiles(*, user_ids: list[int]) -> dict[int, PresenceProfile]:
    """Presence settings and last-seen times of active users (unknown ids are left out)."""
    rows = User.objects.filter(pk__in=user_ids, is_active=True).values_list("pk", "last_seen_visibility", "last_seen")
    return {
        pk: PresenceProfile(shows_presence=visibility == User.LastSeenVisibility.EVERYONE, last_seen=last_seen)
        for pk, visibility, last_seen in rows
    }
