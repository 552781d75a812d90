"""The chat project: settings, ASGI/Celery entry points and cross-app plumbing."""

from chat_project.celery import app as celery_app

__all__ = ("celery_app",)
