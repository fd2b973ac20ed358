"""Notifications name their Human in a column and no longer store `clientUserId` (it is read
when an attempt is sent); delivery attempts carry their number and outcome, filled in here for
the attempts already recorded."""

from itertools import groupby

from django.db import migrations, models

BATCH = 1000


def _outcome(status_code, error):
    if not error:
        return "delivered"
    if error.startswith("answered HTTP"):
        return "status"
    if error.startswith("no answer within"):
        return "timeout"
    if error.startswith("request failed"):
        return "unreachable"
    return "not_sent"


def backfill(apps, schema_editor):
    notification = apps.get_model("data_api", "Notification")
    attempt = apps.get_model("data_api", "DeliveryAttempt")
    changed = []
    for row in notification.objects.only("pk", "payload").iterator(chunk_size=5000):
        row.human_id = str(row.payload.get("humanId") or "")[:32]
        row.payload = {k: v for k, v in row.payload.items() if k != "clientUserId"}
        changed.append(row)
        if len(changed) == BATCH:
            notification.objects.bulk_update(changed, ["human_id", "payload"])
            changed = []
    notification.objects.bulk_update(changed, ["human_id", "payload"])
    changed = []
    ordered = attempt.objects.only("pk", "notification_id", "status_code", "error").order_by("notification_id", "id")
    for _, rows in groupby(ordered.iterator(chunk_size=5000), key=lambda a: a.notification_id):
        for number, row in enumerate(rows, start=1):
            row.number, row.outcome = number, _outcome(row.status_code, row.error)
            changed.append(row)
        if len(changed) >= BATCH:
            attempt.objects.bulk_update(changed, ["number", "outcome"])
            changed = []
    attempt.objects.bulk_update(changed, ["number", "outcome"])


class Migration(migrations.Migration):
    dependencies = [
        ("data_api", "0007_series"),
    ]

    operations = [
        migrations.AddField(
            model_name="deliveryattempt",
            name="number",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="deliveryattempt",
            name="outcome",
            field=models.CharField(
                choices=[
                    ("delivered", "Delivered"),
                    ("status", "Status"),
                    ("timeout", "Timeout"),
                    ("unreachable", "Unreachable"),
                    ("not_sent", "Not Sent"),
                    ("error", "Error"),
                    ("unfinished", "Unfinished"),
                ],
                default="unfinished",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="notification",
            name="human_id",
            field=models.CharField(blank=True, db_index=True, default="", max_length=32),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
