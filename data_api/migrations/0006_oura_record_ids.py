"""Oura records re-keyed as the plugin now keys them, so the next sync updates them in place
instead of storing each a second time (and a day's totals are never counted twice):

- heart rate: `hr-<instant>-<source>` (samples of two sources may share an instant), was
  `hr-<instant>`;
- daily totals (`activity_summaries`): the day, was Oura's document id; local midnight of the
  day as the start (the day is unchanged).
"""

from django.db import migrations

POSTGRES = """
DELETE FROM data_api_record r USING data_api_record k
WHERE r.source = 'oura' AND r.type = 'heart_rate' AND r.external_id ~ '^hr-[0-9T:-]+Z$'
  AND coalesce(r.source_data->>'source', '') <> ''
  AND k.connection_id = r.connection_id AND k.type = 'heart_rate'
  AND k.external_id = r.external_id || '-' || (r.source_data->>'source');
UPDATE data_api_record SET external_id = external_id || '-' || (source_data->>'source')
WHERE source = 'oura' AND type = 'heart_rate' AND external_id ~ '^hr-[0-9T:-]+Z$'
  AND coalesce(source_data->>'source', '') <> '';

DELETE FROM data_api_record r USING data_api_record k
WHERE r.source = 'oura' AND r.type = 'activity_summaries' AND r.external_id <> (r.data->>'date')
  AND k.connection_id = r.connection_id AND k.type = 'activity_summaries'
  AND (k.external_id = (r.data->>'date') OR (k.external_id <> (k.data->>'date')
       AND k.data->>'date' = r.data->>'date' AND k.id > r.id));
UPDATE data_api_record SET external_id = data->>'date',
    start_time = (((data->>'date')::date)::timestamp - make_interval(mins => tz_offset)) AT TIME ZONE 'UTC',
    end_time = (((data->>'date')::date + 1)::timestamp - make_interval(mins => tz_offset)) AT TIME ZONE 'UTC'
WHERE source = 'oura' AND type = 'activity_summaries' AND external_id <> (data->>'date')
  AND data->>'date' ~ '^\\d{4}-\\d{2}-\\d{2}$';
"""


def forward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES)
    # SQLite holds the one-machine demo, which has no Oura connections worth re-keying.


class Migration(migrations.Migration):
    dependencies = [("data_api", "0005_fitbit_heart_rate_ids")]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
