"""Each Human's notifications are numbered 1, 2, 3, ... (`sequence`) and say when the change
happened (`changedAt`). Rows stored before are numbered here in the order they were created, with
their `timestamp` as `changedAt`, and each Human's counter starts after its last number."""

from django.db import migrations, models

BATCH = 1000


def backfill(apps, schema_editor):
    notification = apps.get_model("data_api", "Notification")
    counter = apps.get_model("data_api", "EventCounter")
    rows = notification.objects.exclude(human_id="").only("pk", "human_id", "payload").order_by("human_id", "id")
    changed, last, human = [], 0, None
    counters = []
    for row in rows.iterator(chunk_size=5000):
        if row.human_id != human:
            if human is not None:
                counters.append(counter(human_id=human, last=last))
            human, last = row.human_id, 0
        last += 1
        row.sequence = last
        row.payload = {**row.payload, "sequence": last, "changedAt": row.payload.get("timestamp")}
        changed.append(row)
        if len(changed) == BATCH:
            notification.objects.bulk_update(changed, ["sequence", "payload"])
            changed = []
        if len(counters) == BATCH:
            counter.objects.bulk_create(counters)
            counters = []
    notification.objects.bulk_update(changed, ["sequence", "payload"])
    if human is not None:
        counters.append(counter(human_id=human, last=last))
    counter.objects.bulk_create(counters)


class Migration(migrations.Migration):
    dependencies = [
        ("data_api", "0008_notification_human_attempt_outcome"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventCounter",
            fields=[
                ("human_id", models.CharField(max_length=32, primary_key=True, serialize=False)),
                ("last", models.PositiveBigIntegerField(default=0)),
            ],
        ),
        migrations.AddField(
            model_name="notification",
            name="sequence",
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="notification",
            constraint=models.UniqueConstraint(
                condition=models.Q(("sequence__gt", 0)),
                fields=("human_id", "sequence"),
                name="notification_human_sequence",
            ),
        ),
    ]
