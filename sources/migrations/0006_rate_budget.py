"""Shared rate budgets of provider applications (sources.ratebudget), and who waits for a run."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('sources', '0005_push'),
    ]

    operations = [
        migrations.CreateModel(
            name='RateBudget',
            fields=[
                ('key', models.CharField(max_length=255, primary_key=True, serialize=False)),
                ('state', models.JSONField(blank=True, default=dict)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
        ),
        migrations.AddField(
            model_name='syncrun',
            name='priority',
            field=models.CharField(choices=[('interactive', 'Interactive'), ('backfill', 'Backfill')], default='backfill', max_length=16),
        ),
    ]
