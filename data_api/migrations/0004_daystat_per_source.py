"""Daily rollups per source (a day's summary is one source's, never a sum across sources), and
sleeps filed under the local day they end on.

The rollups are derived data: they are emptied, the trigger learns the source, every sleep's
`local_day` is set to its own `day` (the provider's) or the local day of its end, and every
(human, type, day, source) is marked stale, so the next read recomputes it.
"""

from django.db import migrations, models

UPSERT = """
    INSERT INTO data_api_typeversion (human_id, type, version)
        SELECT DISTINCT human_id, type, 1 FROM ({keys}) k ORDER BY 1, 2
        ON CONFLICT (human_id, type) DO UPDATE SET version = data_api_typeversion.version + 1;
    INSERT INTO data_api_daystat (human_id, type, local_day, source, generation, done_generation, count, stats)
        SELECT DISTINCT human_id, type, local_day, source, 1, 0, 0, '{{}}'::jsonb FROM ({keys}) k ORDER BY 1, 2, 3, 4
        ON CONFLICT (human_id, type, local_day, source) DO UPDATE SET generation = data_api_daystat.generation + 1;
"""

FUNCTION = (
    """
CREATE OR REPLACE FUNCTION data_api_record_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Sorted, so concurrent writers take the row locks in the same order.
    IF TG_OP = 'INSERT' THEN"""
    + UPSERT.format(keys="SELECT human_id, type, local_day, source FROM new_rows")
    + """
    ELSIF TG_OP = 'UPDATE' THEN"""
    + UPSERT.format(
        keys="SELECT human_id, type, local_day, source FROM new_rows"
        " UNION SELECT human_id, type, local_day, source FROM old_rows"
    )
    + """
    ELSE
        -- A deleted record's rows exist already: bump them, never create any (a Human being
        -- deleted must not get new rows pointing at it).
        UPDATE data_api_typeversion v SET version = v.version + 1
            FROM (SELECT DISTINCT human_id, type FROM old_rows) o
            WHERE v.human_id = o.human_id AND v.type = o.type;
        UPDATE data_api_daystat d SET generation = d.generation + 1
            FROM (SELECT DISTINCT human_id, type, local_day, source FROM old_rows) o
            WHERE d.human_id = o.human_id AND d.type = o.type AND d.local_day = o.local_day
              AND d.source = o.source;
    END IF;
    RETURN NULL;
END
$$;
"""
)

# A sleep belongs to the morning it ends: the provider's own `day` where it gave one.
SLEEP_DAYS = """
UPDATE data_api_record SET local_day = CASE
        WHEN data->>'day' ~ '^\\d{4}-\\d{2}-\\d{2}$' THEN (data->>'day')::date
        ELSE ((end_time AT TIME ZONE 'UTC') + make_interval(mins => tz_offset))::date
    END
WHERE type = 'sleeps' AND end_time IS NOT NULL;
"""

BACKFILL = """
INSERT INTO data_api_daystat (human_id, type, local_day, source, generation, done_generation, count, stats)
    SELECT DISTINCT human_id, type, local_day, source, 1, 0, 0, '{}'::jsonb FROM data_api_record
    ON CONFLICT DO NOTHING;
"""


def forward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION)
        schema_editor.execute(SLEEP_DAYS)
        schema_editor.execute(BACKFILL)
    else:
        Record = apps.get_model("data_api", "Record")
        from datetime import date, timedelta

        for record in Record.objects.filter(type="sleeps", end_time__isnull=False).iterator():
            day = record.data.get("day") if isinstance(record.data, dict) else None
            try:
                local = date.fromisoformat(day) if isinstance(day, str) else None
            except ValueError:
                local = None
            local = local or (record.end_time + timedelta(minutes=record.tz_offset)).date()
            if local != record.local_day:
                Record.objects.filter(pk=record.pk).update(local_day=local)


class Migration(migrations.Migration):
    dependencies = [
        ("connect", "0003_application_source_priority"),
        ("data_api", "0003_record_change_trigger"),
    ]

    operations = [
        migrations.RunSQL("DELETE FROM data_api_daystat", migrations.RunSQL.noop),
        migrations.RemoveConstraint(model_name="daystat", name="daystat_unique"),
        migrations.AddField(
            model_name="daystat", name="source", field=models.CharField(default="", max_length=64)
        ),
        migrations.AddConstraint(
            model_name="daystat",
            constraint=models.UniqueConstraint(
                fields=("human", "type", "local_day", "source"), name="daystat_unique_source"
            ),
        ),
        migrations.RunPython(forward, migrations.RunPython.noop),
    ]
