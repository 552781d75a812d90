"""Foreign keys to messages lose their database constraint before messages are partitioned
(0004): a partitioned table has no unique index on ``id`` alone for them to reference. Django
applies ``on_delete`` itself, as before (see ``conversations.models.Message``)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0002_moderation_fields'),
    ]

    operations = [
        migrations.AlterField(
            model_name='message',
            name='reply_to',
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='conversations.message'),
        ),
        migrations.AlterField(
            model_name='reaction',
            name='message',
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='reactions', to='conversations.message'),
        ),
    ]
