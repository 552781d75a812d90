"""The "moderator" role: a permission group with exactly what working reports needs.

Moderators are staff users in this group, never superusers. They may view users,
conversations, memberships, messages, blocks, reports and the audit log; resolve reports;
suspend and ban users; hide and restore messages; freeze groups and remove members. They
may not change or delete anything through the admin's own forms (no ``change_user``: no
passwords, flags or permissions), and nobody may change the audit log.
"""

from django.db import migrations

GROUP = "moderator"
PERMISSIONS = [
    ("accounts", "view_user"),
    ("conversations", "view_conversation"),
    ("conversations", "view_membership"),
    ("conversations", "view_message"),
    ("moderation", "view_block"),
    ("moderation", "view_report"),
    ("moderation", "change_report"),
    ("moderation", "view_auditlog"),
    ("moderation", "suspend_user"),
    ("moderation", "hide_message"),
    ("moderation", "freeze_conversation"),
]


def create_group(apps, schema_editor):
    # Permissions are normally made after all migrations ran (post_migrate); make them now.
    from django.contrib.auth.management import create_permissions

    for label in ("accounts", "conversations", "moderation"):
        config = apps.get_app_config(label)
        models_module = getattr(config, "models_module", None)
        config.models_module = models_module or True
        create_permissions(config, apps=apps, verbosity=0)
        config.models_module = models_module

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    permissions = []
    for app_label, codename in PERMISSIONS:
        permissions.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    group.permissions.set(permissions)


def delete_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("moderation", "0002_auditlog_append_only"),
        ("accounts", "0002_user_suspension"),
        ("conversations", "0002_moderation_fields"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, delete_group)]
