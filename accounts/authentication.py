"""DRF authentication for apps: a JWT access token bound to a device that is still active."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.tokens import Token

from accounts.models import User
from accounts.selectors import active_device


class DeviceJWTAuthentication(JWTAuthentication):  # type: ignore[misc]  # simplejwt is read as untyped
    """Like simplejwt's, but a token of a logged-out device or disabled user stops working at once.

    One query loads the device and its user together.
    """

    def authenticate(self, request: Request) -> tuple[User, Token] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user, token = result
        assert isinstance(user, User)  # noqa: S101  (get_user below only returns our User)
        request.auth_device = getattr(user, "_auth_device", None)  # type: ignore[attr-defined]  # our own request attribute
        return user, token

    def get_user(self, validated_token: Token) -> User:
        device = active_device(user_id=validated_token.get("user_id"), device_id=validated_token.get("device_id"))
        if device is None:
            raise InvalidToken(
                {"detail": "The device was logged out or the account is disabled.", "code": "token_not_valid"}
            )
        user: Any = device.user
        user._auth_device = device
        return user  # type: ignore[no-any-return]
