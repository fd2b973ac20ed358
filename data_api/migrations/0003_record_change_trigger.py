"""Keeps TypeVersion and DayStat in step with data_api_record on PostgreSQL.

Statement-level triggers with transition tables: one extra statement per write statement
(not per row), however the write is made (the engine's COPY + INSERT ... ON CONFLICT, a
delete of missing records, a cascade). SQLite (the one-machine demo) has no such triggers;
the Data API reads it the simple way.
"""

from django.db import migrations

UPSERT = """
    INSERT INTO data_api_typeversion (human_id, type, version)
        SELECT DISTINCT human_id, type, 1 FROM ({keys}) k ORDER BY 1, 2
        ON CONFLICT (human_id, type) DO UPDATE SET version = data_api_typeversion.version + 1;
    INSERT INTO data_api_daystat (human_id, type, local_day, generation, done_generation, count, stats)
        SELECT DISTINCT human_id, type, local_day, 1, 0, 0, '{{}}'::jsonb FROM ({keys}) k ORDER BY 1, 2, 3
        ON CONFLICT (human_id, type, local_day) DO UPDATE SET generation = data_api_daystat.generation + 1;
"""

FUNCTION = (
    """
CREATE OR REPLACE FUNCTION data_api_record_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Sorted, so concurrent writers take the row locks in the same order.
    IF TG_OP = 'INSERT' THEN"""
    + UPSERT.format(keys="SELECT human_id, type, local_day FROM new_rows")
    + """
    ELSIF TG_OP = 'UPDATE' THEN"""
    + UPSERT.format(
        keys="SELECT human_id, type, local_day FROM new_rows UNION SELECT human_id, type, local_day FROM old_rows"
    )
    + """
    ELSE
        -- A deleted record's rows exist already: bump them, never create any (a Human being
        -- deleted must not get new rows pointing at it).
        UPDATE data_api_typeversion v SET version = v.version + 1
            FROM (SELECT DISTINCT human_id, type FROM old_rows) o
            WHERE v.human_id = o.human_id AND v.type = o.type;
        UPDATE data_api_daystat d SET generation = d.generation + 1
            FROM (SELECT DISTINCT human_id, type, local_day FROM old_rows) o
            WHERE d.human_id = o.human_id AND d.type = o.type AND d.local_day = o.local_day;
    END IF;
    RETURN NULL;
END
$$;
"""
)

TRIGGERS = """
CREATE TRIGGER data_api_record_inserted AFTER INSERT ON data_api_record
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION data_api_record_changed();
CREATE TRIGGER data_api_record_updated AFTER UPDATE ON data_api_record
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION data_api_record_changed();
CREATE TRIGGER data_api_record_deleted AFTER DELETE ON data_api_record
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION data_api_record_changed();
"""

BACKFILL = """
INSERT INTO data_api_typeversion (human_id, type, version)
    SELECT DISTINCT human_id, type, 1 FROM data_api_record ON CONFLICT DO NOTHING;
INSERT INTO data_api_daystat (human_id, type, local_day, generation, done_generation, count, stats)
    SELECT DISTINCT human_id, type, local_day, 1, 0, 0, '{}'::jsonb FROM data_api_record ON CONFLICT DO NOTHING;
"""

DROP = """
DROP TRIGGER IF EXISTS data_api_record_inserted ON data_api_record;
DROP TRIGGER IF EXISTS data_api_record_updated ON data_api_record;
DROP TRIGGER IF EXISTS data_api_record_deleted ON data_api_record;
DROP FUNCTION IF EXISTS data_api_record_changed();
"""


def create(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION)
        schema_editor.execute(TRIGGERS)
        schema_editor.execute(BACKFILL)


def drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("data_api", "0002_rollups")]

    operations = [migrations.RunPython(create, drop)]
