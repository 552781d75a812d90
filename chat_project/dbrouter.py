"""History reads from a streaming replica (docs/operations.md, "Read replica").

With ``DATABASE_REPLICA_URL`` set, settings add the database alias ``replica`` and install
:class:`PrimaryReplicaRouter`. Everything goes to the primary except the reads that name the
replica explicitly: the history selectors (``conversations.selectors.message_page`` and
``changes_since``), through :func:`fresh_replica`. Without the setting there is no alias, and
:func:`fresh_replica` answers the primary without a query.

Why explicit, and why a freshness check rather than "pin a user who wrote to the primary for a
few seconds":

- Django's router sees a model and a few hints, never the request: it cannot tell a history page
  from the read a service makes before it writes. Routing every message read to the replica
  would feed stale rows into writes. So the two selectors choose, and nothing else changes.
- A time window is a guess about replication lag, and it needs a hook in every write path
  (sends are stored in bulk by a group commit, with no per-row signal). When the guess is
  wrong the sender does not see their own message.
- Pinning only the writer is not enough: a device that syncs takes the conversation's version,
  as the primary reports it, as its new cursor (``conversations.consumers``, ``on_sync``). Had
  the page come from a replica that lags, the device would skip the missing changes for good.

So a history read goes to the replica only once the replica has replayed the conversation at
least as far as the primary had when the caller read the membership (one primary-key lookup on
the replica, :func:`fresh_replica`); otherwise it goes to the primary. The sender always reads
their own writes, every reader's sync stays complete, and the replica serves every conversation
that did not change in the last moment, which is nearly all of them.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.models import Model, QuerySet

PRIMARY = DEFAULT_DB_ALIAS
REPLICA = "replica"

log = logging.getLogger(__name__)


def replica_configured() -> bool:
    return REPLICA in connections.settings


def fresh_replica(probe: QuerySet[Any]) -> str:
    """The alias to read from: the replica if ``probe`` finds a row there, else the primary.

    ``probe`` is a query that finds a row only once the replica has replayed far enough (a
    version at least the one the primary reported). Reads inside a transaction on the primary
    stay there, as do all reads when the replica is not configured (no query then) or down.
    """
    if not replica_configured() or connections[PRIMARY].in_atomic_block:
        return PRIMARY
    try:
        fresh = probe.using(REPLICA).exists()
    except DatabaseError:
        log.warning("the read replica is unavailable; reading history from the primary", exc_info=True)
        return PRIMARY
    return REPLICA if fresh else PRIMARY


class PrimaryReplicaRouter:
    """Writes and migrations go to the primary, whichever alias an object was read from.

    Reads that name no alias go to the primary too, except lookups that follow a row read from
    the replica (its reactions, its attachments), which Django sends to the same replica.
    """

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        return PRIMARY

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool:
        # One database, two copies of it: a row read from either may point at a row of the other.
        return {obj1._state.db, obj2._state.db} <= {PRIMARY, REPLICA}

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        return db == PRIMARY
