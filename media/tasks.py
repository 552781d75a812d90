"""Media tasks: thin, take ids, re-read, call services; safe to run twice."""

from __future__ import annotations

from celery import shared_task

from conversations.services import announce_message_change
from media import services


@shared_task(acks_late=True, reject_on_worker_lost=True, max_retries=3, default_retry_delay=10)
def process_attachment_task(attachment_id: int) -> None:
    """Process an upload; tell the message's members when it is ready."""
    message_id = services.process_attachment(attachment_id)
    if message_id is not None:
        announce_message_change(message_id=message_id)


@shared_task(acks_late=True)
def delete_orphans_task() -> int:
    """Periodic: delete uploads that were never attached to a message."""
    return services.delete_orphans()
