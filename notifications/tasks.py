"""Push tasks: thin, take ids, re-read, call services; idempotent and safe to run twice.

All of them acknowledge late and are rejected back to the queue when their worker dies
(settings: CELERY_TASK_ACKS_LATE, CELERY_TASK_REJECT_ON_WORKER_LOST), so a task in flight
when a worker is killed runs again on another one. Countdowns stay short (seconds to
minutes), far below RabbitMQ's consumer timeout for unacknowledged messages.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from notifications import services

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def process_outbox_task(*outbox_ids: int) -> None:
    """Decide who gets a push for some messages (or reads), then enqueue the sends.

    One task carries every row a group commit wrote, decided together. If that fails, each
    row is tried on its own, so one bad row cannot hold back the others; a row that still
    fails stays in the outbox for the sweep.
    """
    try:
        services.process_outboxes(list(outbox_ids))
        return
    except Exception:
        if len(outbox_ids) == 1:
            raise
        logger.exception("push: deciding outbox rows %s together failed; trying them one by one", outbox_ids)
    for outbox_id in outbox_ids:
        try:
            services.process_outbox(outbox_id=outbox_id)
        except Exception:
            logger.exception("push: deciding outbox row %s failed; the sweep will retry it", outbox_id)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def send_push_task(self: Task[Any, Any], delivery_id: int) -> None:
    """Send one push; come back later when the service asks for a retry or the send is not due.

    The number of attempts is bounded in the database (PUSH_MAX_ATTEMPTS), not by Celery:
    a task re-enqueued by the sweep keeps counting where the last one stopped. The embedded
    default (eager tasks) makes one attempt and does not come back.
    """
    again_in = services.send_delivery(delivery_id=delivery_id)
    if again_in is not None and not self.request.is_eager:
        raise self.retry(countdown=again_in, max_retries=None)


@shared_task(acks_late=True)
def sweep_task() -> dict[str, int]:
    """Periodic (beat): re-enqueue committed push work that never reached a worker."""
    return services.sweep()


@shared_task(acks_late=True)
def purge_task() -> int:
    """Periodic (beat): forget old push decisions and subscriptions of logged-out devices."""
    return services.purge_old()
