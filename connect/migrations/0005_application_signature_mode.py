"""Notifications can be signed as Human API signs them, keyed with the client secret, which is
then kept encrypted (from its next creation or replacement on: only its hash was kept before)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("connect", "0004_rate_limit_bucket_unlogged"),
    ]

    operations = [
        migrations.AddField(
            model_name="application",
            name="signature_mode",
            field=models.CharField(
                choices=[
                    ("default", "t=...,v1=... (HMAC-SHA256 keyed with the webhook secret)"),
                    ("humanapi", "as Human API signs (HMAC-SHA1 keyed with the client secret)"),
                ],
                default="default",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="application",
            name="client_secret_sealed",
            field=models.TextField(blank=True, default=""),
        ),
    ]
