"""The authentication backend: Django's ModelBackend, whose sessions end while an account is
suspended or banned.

``authenticate`` is left as it is, so that ``services.check_login`` can tell a suspended user
why once the password has proved who they are. ``get_user``, which turns a browser session
into its user on every request, refuses the account while it is restricted: REST calls with
a session and pages then see an anonymous visitor, as sockets and tokens do through
``selectors.active_device``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend

from accounts.models import User


class AccountBackend(ModelBackend):
    def get_user(self, user_id: Any) -> User | None:
        user = super().get_user(user_id)
        if isinstance(user, User) and user.in_good_standing():
            return user
        return None
