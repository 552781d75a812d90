"""Deployment checks of our own, run by `manage.py check --deploy`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def secret_key_from_environment(app_configs: Any, **kwargs: Any) -> list[Warning]:
    """Several hosts must share one key, so production sets it rather than generating it."""
    if settings.SECRET_KEY_FROM_ENV:
        return []
    return [
        Warning(
            "DJANGO_SECRET_KEY is not set: this host generated its own key under VAR_DIR, "
            "so sessions and tokens would not be valid on any other host.",
            hint="Set DJANGO_SECRET_KEY to the same long random value on every host.",
            id="chat.W001",
        )
    ]
