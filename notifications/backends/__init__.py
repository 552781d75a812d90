"""Pluggable push backends, one per subscription kind (settings.PUSH_BACKENDS)."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from notifications.backends.base import Outcome, Push, PushBackend, Result

__all__ = ["Outcome", "Push", "PushBackend", "Result", "backend_for"]


@cache
def backend_for(kind: str) -> PushBackend | None:
    """The backend for a subscription kind, or None if none is set up for it."""
    path = settings.PUSH_BACKENDS.get(kind)
    if not path:
        return None
    backend: PushBackend = import_string(path)()
    return backend
