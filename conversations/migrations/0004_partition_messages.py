"""Hash-partition messages by conversation (docs/operations.md, "Partitioned messages").

PostgreSQL only: on any other database (the embedded SQLite default) this does nothing.

It converts a database that already holds messages, in this migration's one transaction:

1. lock the table (ACCESS EXCLUSIVE: nothing reads or writes messages until the commit, so no
   row written during the copy can be lost);
2. read what must survive: every constraint and index on the table (from the catalog, so the
   names and definitions stay exactly those Django created) and where the id sequence stands;
3. create ``conversations_message_rebuilt`` with the same columns, PARTITION BY HASH
   (conversation_id), and its ``PARTITIONS`` partitions; copy every row (INSERT ... SELECT);
4. drop the old table (which fails, rolling everything back, if a foreign key still points at
   it: the ``db_constraint=False`` migrations this one depends on removed them), rename the
   new one into its place;
5. make ``id`` an identity column again whose sequence continues after the highest id ever
   handed out, and recreate every constraint and index under its old name.

The primary key becomes ``(id, conversation_id)`` in the database: PostgreSQL requires every
unique constraint of a partitioned table, the primary key included, to contain the partition
key. ``id`` alone stays unique in practice (one sequence numbers all partitions) and stays
Django's primary key: Django never needs the database to declare which columns form it. The
other unique constraints, ``(conversation_id, seq)`` and ``(conversation_id, sender_id,
client_msg_id)``, already contain ``conversation_id`` (docs/architecture.md, the data model).

Reversible: migrating back rebuilds an unpartitioned table the same way, with ``PRIMARY KEY
(id)``, before the earlier migrations restore the foreign keys that point at messages.
"""

from django.db import migrations

# A row's partition is hash(conversation_id) modulo PARTITIONS, fixed for the life of the table:
# changing it means moving every row again (another migration of this shape). Sixteen keeps each
# partition and its indexes a sixteenth of the whole (vacuum, index builds and the hot part of
# each index stay small) while a query that cannot be pruned to one partition (a lookup by id
# alone) probes only sixteen small indexes; it also divides evenly over 2, 4, 8 or 16 nodes.
PARTITIONS = 16
TABLE = "conversations_message"
REBUILT = f"{TABLE}_rebuilt"
PARTITION_NAME = TABLE + "_p{remainder:02d}"

# Constraints are recreated in this order: keys first, foreign keys (which only read) last.
_CONSTRAINT_ORDER = {"p": 0, "u": 1, "x": 2, "c": 3, "f": 4}


def _relkind(cursor):
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [TABLE])
    return cursor.fetchone()[0]


def _referencing_constraints(cursor):
    cursor.execute(
        "SELECT conrelid::regclass::text || '.' || conname FROM pg_constraint"
        " WHERE confrelid = %s::regclass AND contype = 'f' ORDER BY 1",
        [TABLE],
    )
    return [row[0] for row in cursor.fetchall()]


def _constraints(cursor):
    cursor.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'x', 'c', 'f')",
        [TABLE],
    )
    return sorted(cursor.fetchall(), key=lambda row: (_CONSTRAINT_ORDER[row[1]], row[0]))


def _plain_indexes(cursor):
    """CREATE INDEX statements of the indexes that no constraint owns."""
    cursor.execute(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i"
        " WHERE i.indrelid = %s::regclass AND NOT EXISTS ("
        "   SELECT 1 FROM pg_constraint c WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid)"
        " ORDER BY i.indexrelid::regclass::text",
        [TABLE],
    )
    # A partitioned table's index reads "ON ONLY parent"; replayed, that would skip the
    # partitions (or mean nothing on a plain table). Without ONLY it covers every partition.
    return [row[0].replace(" ON ONLY ", " ON ", 1) for row in cursor.fetchall()]


def _next_id(cursor):
    """The first id the rebuilt table may hand out: after every id the old sequence gave."""
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
    sequence = cursor.fetchone()[0]
    issued = 0
    if sequence is not None:
        cursor.execute(f"SELECT last_value, is_called FROM {sequence}")  # noqa: S608  # a name from the catalog
        last_value, is_called = cursor.fetchone()
        issued = last_value if is_called else last_value - 1
    cursor.execute(f"SELECT COALESCE(max(id), 0) FROM {TABLE}")  # noqa: S608  # a constant
    return max(issued, cursor.fetchone()[0]) + 1


def _rebuild(schema_editor, *, partitions):
    """Replace the table with a copy that is hash-partitioned (``partitions``) or plain (0)."""
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        referencing = _referencing_constraints(cursor)
        if referencing:
            raise RuntimeError(
                f"These foreign keys still point at {TABLE}: {', '.join(referencing)}. Declare them with "
                "db_constraint=False (see conversations.models.Message) and migrate that first."
            )
        constraints = _constraints(cursor)
        indexes = _plain_indexes(cursor)
        next_id = int(_next_id(cursor))

        partition_by = " PARTITION BY HASH (conversation_id)" if partitions else ""
        cursor.execute(
            f"CREATE TABLE {REBUILT} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMMENTS)"
            + partition_by
        )
        for remainder in range(partitions):
            cursor.execute(
                f"CREATE TABLE {PARTITION_NAME.format(remainder=remainder)} PARTITION OF {REBUILT}"
                f" FOR VALUES WITH (MODULUS {int(partitions)}, REMAINDER {remainder})"
            )
        # LIKE keeps the column order, so the rows copy as they are, ids included.
        cursor.execute(f"INSERT INTO {REBUILT} SELECT * FROM {TABLE}")  # noqa: S608  # constants
        cursor.execute(f"DROP TABLE {TABLE}")  # its identity sequence goes with it
        cursor.execute(f"ALTER TABLE {REBUILT} RENAME TO {TABLE}")
        cursor.execute(
            f"ALTER TABLE {TABLE} ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY"
            f" (SEQUENCE NAME {TABLE}_id_seq START WITH {next_id})"
        )
        for name, kind, definition in constraints:
            if kind == "p":
                definition = "PRIMARY KEY (id, conversation_id)" if partitions else "PRIMARY KEY (id)"
            cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {quote(name)} {definition}")
        for statement in indexes:
            cursor.execute(statement)
        cursor.execute(f"ANALYZE {TABLE}")


def partition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        if _relkind(cursor) == "p":  # partitioned already (by hand, or a Citus layout)
            return
    _rebuild(schema_editor, partitions=PARTITIONS)


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        if _relkind(cursor) != "p":
            return
    _rebuild(schema_editor, partitions=0)


class Migration(migrations.Migration):
    # Every foreign key that pointed at messages must be gone before the table is swapped (the
    # swap refuses to run otherwise). A model added later that references Message declares
    # db_constraint=False too: PostgreSQL has no unique index on id alone for it to reference.
    dependencies = [
        ("conversations", "0003_message_references_without_db_constraint"),
        ("media", "0002_attachment_message_without_db_constraint"),
        ("moderation", "0004_report_message_without_db_constraint"),
        ("notifications", "0002_push_message_without_db_constraint"),
    ]

    operations = [migrations.RunPython(partition, unpartition, elidable=False)]
