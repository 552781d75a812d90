"""Hands committed push work to RabbitMQ without making the sender wait for the broker.

``transaction.on_commit`` callbacks of a send run on the request's thread (and, for a
WebSocket frame, on the one database thread of the process). Publishing with publisher
confirms costs a broker round trip, and minutes of blocked retries when the broker is
down, so the hook only queues the outbox ids here and one background thread per process
publishes them, as many as are waiting in one task message. When publishing fails the
thread pauses for PUSH_PUBLISH_BACKOFF_SECONDS and drops what comes meanwhile: nothing is
lost, because the outbox rows stay in PostgreSQL and the periodic sweep enqueues
them (docs/architecture.md, "Push notifications").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

# Celery retries a failed publish this often before we give up and leave it to the sweep.
PUBLISH_RETRY_POLICY: dict[str, Any] = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_paused_until = 0.0
# Outbox ids committed but not yet handed to the broker; the publisher thread takes them all
# at once, so a burst of sends costs one broker message, not one each.
_pending: deque[int] = deque()
# At most this many ids ride in one task message.
MAX_IDS_PER_TASK = 500


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-publisher")
        return _executor


def submit_outbox(outbox_ids: list[int]) -> None:
    """Enqueue the decision task for these outbox rows, in the background (call after commit)."""
    if time.monotonic() < _paused_until:
        return  # the broker failed moments ago: the sweep will pick these rows up
    _pending.extend(outbox_ids)
    _pool().submit(_publish_pending)


def _take_pending() -> list[int]:
    taken: list[int] = []
    while _pending and len(taken) < MAX_IDS_PER_TASK:
        taken.append(_pending.popleft())
    return taken


def _publish_pending() -> None:
    """Publish whatever is pending (an earlier call may have taken it all already), after
    lingering a moment so that the sends committing meanwhile ride in the same task."""
    if not _pending:
        return
    time.sleep(settings.PUSH_PUBLISH_LINGER_SECONDS)
    while outbox_ids := _take_pending():
        _publish(outbox_ids)


def _publish(outbox_ids: list[int]) -> None:
    global _paused_until
    from notifications.tasks import process_outbox_task

    if settings.CELERY_TASK_ALWAYS_EAGER:  # embedded default: run it here, off the request thread
        try:
            process_outbox_task.apply(tuple(outbox_ids))
        except Exception:
            logger.exception("push: deciding outbox rows %s failed", outbox_ids)
        finally:
            from django.db import close_old_connections

            close_old_connections()
        return
    try:
        process_outbox_task.apply_async(tuple(outbox_ids), retry=True, retry_policy=PUBLISH_RETRY_POLICY)
    except Exception as exc:  # any broker failure: the rows wait in PostgreSQL for the sweep
        _paused_until = time.monotonic() + settings.PUSH_PUBLISH_BACKOFF_SECONDS
        _pending.clear()
        logger.warning("push: could not enqueue %d outbox rows (%s); the sweep will", len(outbox_ids), exc)


def drain(timeout: float = 10.0) -> None:
    """Wait until everything submitted so far was published (tests, shutdown)."""
    _pool().submit(lambda: None).result(timeout=timeout)
