"""Rate-limit counters in an unlogged table (PostgreSQL): a count is then a write that needs no
WAL flush at commit, which matters once every Data API request counts. A crash empties the
table, which only restarts the current windows."""

from django.db import migrations


def unlogged(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE connect_ratelimitbucket SET UNLOGGED")


def logged(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE connect_ratelimitbucket SET LOGGED")


class Migration(migrations.Migration):
    dependencies = [
        ("connect", "0003_application_source_priority"),
    ]

    operations = [migrations.RunPython(unlogged, logged)]
