"""Storage benchmark: what a year of minute-level heart rate costs on disk.

A 365-day Demo history with 1-minute heart rate is synced by the engine (`manage.py
sync_connection`, as a worker would) into a database of its own on DATABASE_URL's server, dropped at
the end. The database's size is taken before and after (after a CHECKPOINT, so the files hold what
was written), and divided by the heart-rate readings stored (everything else the sync wrote, its
activities, sleeps, weights, runs, counts against them too). Also printed: the series table's
bytes per reading and the record table's heap and index sizes per row.

Last line: `bytes_per_reading=<n> readings=<n>`.
"""

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import ROOT, admin, bench_database_url, make_connection, setup_django

DAYS = int(os.environ.get("BENCH_STORAGE_DAYS", "365"))


def main() -> None:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/humanapi")
    name = "humanapi_storage_bench"
    url = bench_database_url(base, name)
    admin(base, f"DROP DATABASE IF EXISTS {name}")
    admin(base, f"CREATE DATABASE {name}")
    try:
        setup_django(url)
        from django.db import connection

        def size() -> int:
            with connection.cursor() as cursor:
                cursor.execute("CHECKPOINT")
                cursor.execute("SELECT pg_database_size(current_database())")
                return int(cursor.fetchone()[0])

        conn = make_connection("storage-user")
        before = size()
        env = {**os.environ, "DATABASE_URL": url, "DEMO_HISTORY_DAYS": str(DAYS)}
        env.update(DEMO_HEART_RATE_INTERVAL_MINUTES="1", CELERY_BROKER_URL="memory://")
        env.setdefault("SECRET_KEY", "bench-storage-secret")
        subprocess.run(
            [sys.executable, "manage.py", "sync_connection", conn.pk],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        after = size()
        with connection.cursor() as cursor:
            cursor.execute("SELECT coalesce(sum(count), 0), count(*) FROM data_api_series WHERE type = 'heart_rate'")
            readings, day_rows = (int(v) for v in cursor.fetchone())
            cursor.execute("SELECT count(*) FROM data_api_record")
            rows = int(cursor.fetchone()[0])
            sizes = {}
            for table in ("data_api_record", "data_api_series"):
                cursor.execute(
                    "SELECT pg_relation_size(%s), pg_indexes_size(%s), pg_total_relation_size(%s)", [table] * 3
                )
                sizes[table] = tuple(int(v) for v in cursor.fetchone())
        print(f"{DAYS}-day Demo history, 1-minute heart rate: {readings:,} readings in {day_rows:,} day rows")
        print(f"database: {before / 2**20:.1f} MiB before, {after / 2**20:.1f} MiB after")
        heap, indexes, total = sizes["data_api_series"]
        print(
            f"series table (heap + TOAST {total - indexes:,} B, indexes {indexes:,} B): "
            f"{total / max(readings, 1):.1f} B/reading"
        )
        heap, indexes, total = sizes["data_api_record"]
        print(
            f"record table, the {rows:,} other records: heap {heap / max(rows, 1):.0f} B/row, "
            f"indexes {indexes / max(rows, 1):.0f} B/row, all {total / max(rows, 1):.0f} B/row"
        )
        print(f"bytes_per_reading={(after - before) / readings:.0f} readings={readings}")
    finally:
        from django.db import connections

        connections.close_all()
        admin(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
