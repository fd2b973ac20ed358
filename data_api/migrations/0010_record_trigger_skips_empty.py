"""The record table's change trigger returns at once when its statement wrote no row: an
`INSERT ... ON CONFLICT DO UPDATE` fires both the INSERT and the UPDATE trigger, one of them
(or both) with empty transition tables, and each page's upsert paid for their empty statements
(about a tenth of a millisecond)."""

import importlib

from django.db import migrations

_BEFORE = importlib.import_module("data_api.migrations.0004_daystat_per_source").FUNCTION
_GUARD = """BEGIN
    -- Nothing inserted or updated (an UPDATE's old and new rows come in pairs). Nested: a
    -- DELETE trigger has no new_rows to name.
    IF TG_OP <> 'DELETE' THEN
        IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
            RETURN NULL;
        END IF;
    END IF;"""
FUNCTION = _BEFORE.replace("BEGIN", _GUARD, 1)


def forward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION)


def backward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_BEFORE)


class Migration(migrations.Migration):
    dependencies = [("data_api", "0009_notification_sequence")]

    operations = [migrations.RunPython(forward, backward)]
