"""Heart-rate readings move from one row each (data_api_record) to one row per connection and
local day (data_api_series), keeping each reading's provider id, content, createdAt and
updatedAt; their daily rollups are rewritten from the moved readings. Reading ids change once
(to `day row id << 20 | slot`)."""

from itertools import groupby

import django.db.models.deletion
from django.db import migrations, models

MOVED = ("heart_rate",)
BATCH = 500


def _ms(moment):
    return round(moment.timestamp() * 1000)


def move_readings(apps, schema_editor):
    from data_api import series

    record = apps.get_model("data_api", "Record")
    day_row = apps.get_model("data_api", "Series")
    day_stat = apps.get_model("data_api", "DayStat")
    for kind in MOVED:
        # One pass over the readings in day order, a day row written per 500 days.
        ordered = record.objects.filter(type=kind).order_by("connection_id", "local_day", "start_time", "id")
        made = []
        for (connection_id, local_day), group in groupby(
            ordered.iterator(chunk_size=5000), key=lambda r: (r.connection_id, r.local_day)
        ):
            rows = list(group)
            readings = [
                [
                    _ms(r.start_time),
                    slot,
                    r.external_id,
                    r.tz_offset,
                    r.value,
                    r.data,
                    r.source_data,
                    _ms(r.created_at),
                    _ms(r.updated_at),
                ]
                for slot, r in enumerate(rows)
            ]
            made.append(
                day_row(
                    human_id=rows[0].human_id,
                    connection_id=connection_id,
                    source=rows[0].source,
                    type=kind,
                    local_day=local_day,
                    next_slot=len(readings),
                    **series.header(readings),
                )
            )
            if len(made) == BATCH:
                day_row.objects.bulk_create(made)
                made = []
        day_row.objects.bulk_create(made)
        record.objects.filter(type=kind).delete()
        # Every rollup of the moved type, recomputed from the day rows (a Human's connections
        # of one source together).
        day_stat.objects.filter(type=kind).delete()
        stats = []
        days = day_row.objects.filter(type=kind).order_by("human_id", "source", "local_day")
        for (human_id, source, local_day), group in groupby(
            days.iterator(chunk_size=500), key=lambda d: (d.human_id, d.source, d.local_day)
        ):
            readings = [r for row in group for r in series.decode(row.payload)]
            stat = series.day_stat(human_id, source, kind, local_day, readings)
            stats.append(
                day_stat(
                    human_id=human_id,
                    type=kind,
                    local_day=local_day,
                    source=source,
                    generation=1,
                    done_generation=1,
                    count=stat.count,
                    stats=stat.stats,
                    created_at=stat.created_at,
                    updated_at=stat.updated_at,
                )
            )
            if len(stats) == BATCH:
                day_stat.objects.bulk_create(stats)
                stats = []
        day_stat.objects.bulk_create(stats)


def external_storage(apps, schema_editor):
    # The payload is compressed already: PostgreSQL need not try again before moving it out of
    # line (TOAST).
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE data_api_series ALTER COLUMN payload SET STORAGE EXTERNAL")


class Migration(migrations.Migration):
    dependencies = [
        ("connect", "0003_application_source_priority"),
        ("data_api", "0006_oura_record_ids"),
        ("sources", "0003_honest_runs"),
    ]

    operations = [
        migrations.CreateModel(
            name="Series",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("source", models.CharField(max_length=64)),
                ("type", models.CharField(max_length=32)),
                ("local_day", models.DateField()),
                ("count", models.IntegerField(default=0)),
                ("first_ms", models.BigIntegerField()),
                ("last_ms", models.BigIntegerField()),
                ("created_ms", models.BigIntegerField()),
                ("updated_ms", models.BigIntegerField()),
                ("stamps", models.JSONField(default=list)),
                ("next_slot", models.IntegerField(default=0)),
                ("payload", models.BinaryField()),
                (
                    "connection",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="sources.connection",
                    ),
                ),
                (
                    "human",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="connect.human",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(fields=["human", "type", "local_day"], name="series_day_idx"),
                    models.Index(fields=["type", "updated_ms"], name="series_updated_idx"),
                ],
                "constraints": [
                    models.UniqueConstraint(fields=("connection", "type", "local_day"), name="series_natural_key")
                ],
            },
        ),
        migrations.RunPython(external_storage, migrations.RunPython.noop),
        migrations.RunPython(move_readings, migrations.RunPython.noop, elidable=False),
    ]
