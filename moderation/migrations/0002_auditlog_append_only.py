"""On PostgreSQL the audit log refuses UPDATE and DELETE in the database itself, whatever
code (or shell) tries; the model and the admin refuse them too."""

from django.db import migrations

CREATE = """
CREATE FUNCTION moderation_auditlog_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'moderation_auditlog is append-only';
END $$;
CREATE TRIGGER moderation_auditlog_append_only BEFORE UPDATE OR DELETE ON moderation_auditlog
    FOR EACH ROW EXECUTE FUNCTION moderation_auditlog_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS moderation_auditlog_append_only ON moderation_auditlog;
DROP FUNCTION IF EXISTS moderation_auditlog_append_only();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("moderation", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
