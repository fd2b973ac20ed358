"""Fitbit (Google Health API) heart-rate readings are now keyed on their UTC instant alone (the
reconciled stream has one reading per instant); they were keyed `instant/platform/device`.
Re-key the stored ones, keeping one reading per instant, so the next sync updates them in place
instead of storing each a second time."""

from django.db import migrations

POSTGRES = """
DELETE FROM data_api_record r USING data_api_record k
WHERE r.source = 'fitbit' AND r.type = 'heart_rate' AND position('/' in r.external_id) > 0
  AND k.connection_id = r.connection_id AND k.type = 'heart_rate'
  AND split_part(k.external_id, '/', 1) = split_part(r.external_id, '/', 1)
  AND (position('/' in k.external_id) = 0 OR k.id < r.id);
UPDATE data_api_record SET external_id = split_part(external_id, '/', 1)
WHERE source = 'fitbit' AND type = 'heart_rate' AND position('/' in external_id) > 0;
"""


def forward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES)
        return
    Record = apps.get_model("data_api", "Record")
    kept: dict[tuple[str, str], int] = {}
    old = Record.objects.filter(source="fitbit", type="heart_rate").order_by("id")
    for pk, connection_id, external_id in old.values_list("id", "connection_id", "external_id"):
        key = (connection_id, external_id.split("/", 1)[0])
        if key in kept:
            Record.objects.filter(pk=pk).delete()
        else:
            kept[key] = pk
    for (_, new_id), pk in kept.items():
        Record.objects.filter(pk=pk).update(external_id=new_id)


class Migration(migrations.Migration):
    dependencies = [("data_api", "0004_daystat_per_source")]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
