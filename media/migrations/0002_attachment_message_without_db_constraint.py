"""The reference to a message loses its database constraint before messages are partitioned
(conversations 0004, which depends on this migration)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0003_message_references_without_db_constraint'),
        ('media', '0001_initial'),
    ]

    operations = [
        migrations.AlterField(
            model_name='attachment',
            name='message',
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='attachments', to='conversations.message'),
        ),
    ]
