"""Users and their devices."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.models import AbstractUser, UserManager
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

username_validator = RegexValidator(
    r"^[A-Za-z0-9_.-]{3,32}\Z",
    "Use 3 to 32 characters: letters, digits, and _ . - only.",
    code="invalid_username",
)


class CaseInsensitiveUserManager(UserManager["User"]):
    """Finds users by username regardless of case, as login and uniqueness do."""

    def get_by_natural_key(self, username: str | None) -> User:
        return self.get(username__iexact=username)


class User(AbstractUser):
    """A person with an account. Usernames are unique regardless of case."""

    class LastSeenVisibility(models.TextChoices):
        EVERYONE = "everyone", "Everyone"
        NOBODY = "nobody", "Nobody"

    username = models.CharField(
        "username",
        max_length=32,
        unique=True,
        validators=[username_validator],
        error_messages={"unique": "A user with that username already exists."},
    )
    display_name = models.CharField(max_length=64, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    last_seen_visibility = models.CharField(
        max_length=16, choices=LastSeenVisibility.choices, default=LastSeenVisibility.EVERYONE
    )
    # Set only by moderators (moderation.services); see in_good_standing().
    suspended_until = models.DateTimeField(null=True, blank=True)
    banned_at = models.DateTimeField(null=True, blank=True)

    objects: ClassVar[CaseInsensitiveUserManager] = CaseInsensitiveUserManager()

    class Meta:
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(Lower("username"), name="accounts_user_username_ci_unique"),
        ]

    def __str__(self) -> str:
        return self.username

    @property
    def name(self) -> str:
        """What other people see: the display name, or the username when there is none."""
        return self.display_name or self.username

    def in_good_standing(self) -> bool:
        """Neither banned nor suspended now: the account may log in, hold tokens and sockets."""
        return self.banned_at is None and (self.suspended_until is None or self.suspended_until <= timezone.now())


class Device(models.Model):
    """One browser or app install of a user; every connection and push target belongs to one.

    Logging out revokes the device: its tokens and sockets stop working at once.
    """

    class Platform(models.TextChoices):
        WEB = "web", "Web browser"
        ANDROID = "android", "Android"
        IOS = "ios", "iOS"
        DESKTOP = "desktop", "Desktop"
        OTHER = "other", "Other"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="devices")
    platform = models.CharField(max_length=16, choices=Platform.choices, default=Platform.OTHER)
    name = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes: ClassVar[list[Any]] = [models.Index(fields=["user", "revoked_at"])]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.platform}:{self.pk}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
