"""Database work from async code, on a pool of threads rather than Django's single one.

``database_sync_to_async`` runs every call of a process on one thread, which caps a web
process near a thousand small transactions a second however many sockets wait. Each call
here is self-contained (it opens, and commits or rolls back, its own transaction), so calls
may run on any thread of the executor, each borrowing a pooled connection
(``DATABASE_POOL_SIZE``) and returning it when the call ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from channels.db import DatabaseSyncToAsync

P = ParamSpec("P")
T = TypeVar("T")


def db(func: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """Wrap a synchronous database function to be awaited from the event loop."""
    return DatabaseSyncToAsync(func, thread_sensitive=False)  # type: ignore[no-any-return]
