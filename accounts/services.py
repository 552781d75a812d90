"""Writes of accounts: registration, login, devices, tokens and logout.

The REST endpoints and the browser pages call the same functions, so the two ways in
cannot drift apart (throttling, device creation, revocation).
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Device, User, username_validator
from accounts.selectors import active_device, in_good_standing
from accounts.throttling import check_login_allowed, clear_login_failures, record_login_failure
from chat_project.errors import ApplicationError, InvalidInput
from notifications import realtime


class InvalidCredentials(ApplicationError):
    code = "invalid_credentials"
    status_code = 401
    default_detail = "Wrong username or password."


class TokenNotValid(ApplicationError):
    code = "token_not_valid"
    status_code = 401
    default_detail = "Token is invalid, expired or revoked."


class AccountSuspended(ApplicationError):
    code = "account_suspended"
    status_code = 403
    default_detail = "This account is suspended."


class AccountBanned(ApplicationError):
    code = "account_banned"
    status_code = 403
    default_detail = "This account is banned."


class TokenPair(TypedDict):
    access: str
    refresh: str


DUPLICATE_USERNAME = "A user with that username already exists."


def register_user(*, username: str, password: str, display_name: str = "") -> User:
    """Create an account; usernames are unique regardless of case."""
    username = username.strip()
    display_name = display_name.strip()
    errors: dict[str, list[str]] = {}
    try:
        username_validator(username)
    except ValidationError as exc:
        errors["username"] = list(exc.messages)
    if "username" not in errors and User.objects.filter(username__iexact=username).exists():
        errors["username"] = [DUPLICATE_USERNAME]
    user = User(username=username, display_name=display_name)
    try:
        validate_password(password, user)
    except ValidationError as exc:
        errors["password"] = list(exc.messages)
    if errors:
        raise InvalidInput(fields=errors)

    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:  # a concurrent registration took the name first
        raise InvalidInput(fields={"username": [DUPLICATE_USERNAME]}) from None
    return user


def check_login(*, username: str, password: str, ip: str, request: HttpRequest | None = None) -> User:
    """Authenticate a username and password, throttled per username and per address."""
    check_login_allowed(username=username, ip=ip)
    user = authenticate(request, username=username, password=password)
    if user is None:
        record_login_failure(username=username, ip=ip)
        raise InvalidCredentials()
    if not isinstance(user, User):
        raise InvalidCredentials()
    clear_login_failures(username=username)
    check_standing(user)
    return user


def check_standing(user: User) -> None:
    """Refuse a suspended or banned account, saying which and until when (moderation sets them)."""
    if user.banned_at is not None:
        raise AccountBanned()
    if not user.in_good_standing() and user.suspended_until is not None:
        until = timezone.localtime(user.suspended_until).strftime("%Y-%m-%d %H:%M %Z")
        raise AccountSuspended(f"This account is suspended until {until}.")


def register_device(*, user: User, platform: str = Device.Platform.OTHER, name: str = "") -> Device:
    """Create a device for a freshly authenticated client."""
    return Device.objects.create(user=user, platform=platform, name=name[:100], last_seen_at=timezone.now())


def issue_tokens(*, device: Device) -> TokenPair:
    """A new JWT pair bound to a device: the device id travels in both tokens."""
    refresh = RefreshToken.for_user(device.user)
    refresh["device_id"] = device.pk
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def login_app(*, username: str, password: str, ip: str, platform: str, device_name: str) -> tuple[Device, TokenPair]:
    """Log an app in: check credentials, register its device, issue its tokens."""
    user = check_login(username=username, password=password, ip=ip)
    device = register_device(user=user, platform=platform, name=device_name)
    return device, issue_tokens(device=device)


def _device_of_refresh(raw_refresh: str, *, logging_out: bool = False) -> tuple[RefreshToken, Device]:
    try:
        refresh = RefreshToken(raw_refresh)  # signature, expiry, type and blacklist
    except TokenError as exc:
        raise TokenNotValid(str(exc)) from None
    user_id, device_id = refresh.get("user_id"), refresh.get("device_id")
    device = active_device(user_id=user_id, device_id=device_id)
    if device is None:
        restricted = User.objects.filter(pk=user_id, is_active=True).exclude(in_good_standing()).first()
        if restricted is not None and logging_out:  # a suspended app may still log out
            device = Device.objects.filter(pk=device_id, user=restricted, revoked_at__isnull=True).first()
        elif restricted is not None:
            check_standing(restricted)  # a suspended app keeps its refresh token and is told why
    if device is None:
        raise TokenNotValid("The device was logged out or the account is disabled.")
    return refresh, device


def rotate_tokens(*, raw_refresh: str) -> TokenPair:
    """Exchange a refresh token for a new pair; the old refresh token stops working."""
    with transaction.atomic():
        refresh, device = _device_of_refresh(raw_refresh)
        _, created = refresh.blacklist()
        if not created:  # the same token was rotated concurrently: only one use wins
            raise TokenNotValid("Token is blacklisted")
        Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now())
    return issue_tokens(device=device)


def logout_app(*, raw_refresh: str) -> None:
    """Log an app's device out: blacklist the refresh token, revoke the device, close its sockets."""
    refresh, device = _device_of_refresh(raw_refresh, logging_out=True)
    with transaction.atomic():
        refresh.blacklist()
        revoke_device(device=device)


def revoke_device_of(*, user: User, device_id: int) -> None:
    """Revoke one of the user's own devices (a browser session logging out)."""
    device = Device.objects.filter(pk=device_id, user=user).first()
    if device is not None:
        revoke_device(device=device)


def revoke_device(*, device: Device) -> None:
    """Revoke a device: its tokens stop working and its open sockets are closed after commit."""
    if device.revoked_at is None:
        device.revoked_at = timezone.now()
        device.save(update_fields=["revoked_at"])
    user_id, device_id = device.user_id, device.pk
    transaction.on_commit(lambda: realtime.revoke_device_sockets(user_id=user_id, device_id=device_id))


def update_profile(*, user: User, display_name: str | None = None, last_seen_visibility: str | None = None) -> User:
    """Change a user's own display name or last-seen privacy."""
    changed: list[str] = []
    if display_name is not None:
        user.display_name = display_name.strip()
        changed.append("display_name")
    if last_seen_visibility is not None:
        user.last_seen_visibility = last_seen_visibility
        changed.append("last_seen_visibility")
    if changed:
        user.save(update_fields=changed)
    return user


def touch_last_seen(*, user_id: int) -> datetime:
    """Record that the user's last socket closed now (one write per going offline)."""
    now = timezone.now()
    User.objects.filter(pk=user_id).update(last_seen=now)
    return now
