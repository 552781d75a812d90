"""Celery queue names, prefixed so that deployments (or test runs) can share one broker."""

from __future__ import annotations

from typing import Any

from kombu import Queue

QUEUE_NAMES = ("default", "media", "push")
ROUTED_APPS = {"media": "media", "notifications": "push"}


def celery_queue_settings(prefix: str) -> dict[str, Any]:
    """``task_default_queue``, ``task_queues`` and ``task_routes`` for a prefix."""
    return {
        "task_default_queue": f"{prefix}default",
        "task_queues": [Queue(f"{prefix}{name}") for name in QUEUE_NAMES],
        "task_routes": {f"{app}.tasks.*": {"queue": f"{prefix}{queue}"} for app, queue in ROUTED_APPS.items()},
    }
