"""Group commit of the WebSocket send path.

Each socket handles its frames one at a time, but a web process holds thousands of sockets.
Sends that arrive while a commit is running wait here and are stored together by the next
one (``services.send_text_messages``): one transaction, a few statements, one commit for the
whole batch. Every sender is answered only after that commit, so an ack still means
"durable", and a message is still delivered only after it committed. Under light load a
batch holds one send and costs what a single send did; under heavy load the cost per
message falls as batches grow, instead of the queue of single transactions growing.
"""

from __future__ import annotations

import asyncio
import weakref

from django.conf import settings

from conversations import services
from conversations.services import SendOutcome, TextSend
from notifications import realtime


class SendQueue:
    """The sends of one event loop waiting for a commit, and the batches in flight."""

    def __init__(self, *, max_batch: int, max_in_flight: int) -> None:
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.waiting: list[tuple[TextSend, asyncio.Future[SendOutcome]]] = []
        self.in_flight = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, item: TextSend) -> SendOutcome:
        """Store ``item`` with the next batch; return once that batch committed (or failed)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SendOutcome] = loop.create_future()
        self.waiting.append((item, future))
        if self.in_flight < self.max_in_flight:
            self.in_flight += 1
            task = loop.create_task(self._commit_batches())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return await future

    async def _commit_batches(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch :]
                try:
                    outcomes = await realtime.run_service(services.send_text_messages, [item for item, _ in batch])
                except Exception as exc:  # the database failed: every sender of the batch hears it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                # A sender whose socket closed meanwhile has a cancelled future: its message is
                # stored all the same, and its retry (same client_msg_id) gets the original.
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
        finally:
            self.in_flight -= 1


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SendQueue] = weakref.WeakKeyDictionary()


def queue() -> SendQueue:
    """The running event loop's send queue."""
    loop = asyncio.get_running_loop()
    found = _queues.get(loop)
    if found is None:
        found = _queues[loop] = SendQueue(
            max_batch=settings.SEND_BATCH_MAX, max_in_flight=settings.SEND_BATCHES_IN_FLIGHT
        )
    return found
