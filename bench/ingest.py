"""Ingest benchmark: how fast the engine normalizes and upserts, and how much memory a long
history sync takes.

1. Rate: Demo raw pages are generated first (provider time excluded), then timed through the
   engine's own page writer (`sources.sync._store_page`: normalize, write, cursor, in one
   transaction per page), each time for a new connection. The same rows then go through a bare
   psycopg COPY into a staging table plus INSERT ... ON CONFLICT, one transaction per page, on
   the same database; and the heart-rate readings alone (99% of them) the same bare way into a
   narrow table (connection, time, value) keyed on (connection, time): the floor for a
   time-series layout. The three are taken in turn, BENCH_ROUNDS times (5), and each side's
   median kept. ingest_ratio = engine rate / narrow-table rate.
2. Memory: a 365-day Demo history sync with minute-level heart rate runs in a child process
   (`manage.py sync_connection`); the child reports its own peak RSS (VmHWM).

Runs against DATABASE_URL's server in a database of its own, dropped at the end.
Last line: `ingest_ratio=<x> peak_rss_mb=<y>`.
"""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RATE_DAYS = int(os.environ.get("BENCH_RATE_DAYS", "30"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def bench_database_url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def admin(base: str, sql: str) -> None:
    import psycopg

    parts = urlsplit(base)
    with psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or None,
        dbname="postgres",  # the maintenance database: DATABASE_URL's own may not exist yet
        autocommit=True,
    ) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "bench-ingest-secret")
    os.environ["CELERY_BROKER_URL"] = "memory://"
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "humanapi_project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_connection(client_user_id: str) -> Any:
    from connect.services import application_create, human_for_session
    from sources.base import Credentials
    from sources.services import connection_store

    app = application_create(name=f"bench {client_user_id}", origins=[])
    human = human_for_session(app.application, client_user_id, f"{client_user_id}@example.com")
    credentials = Credentials(data={"user": "demouser"}, external_user_id="demouser")
    return connection_store(human=human, slug="demo", credentials=credentials, request=None)


def measure_rate(rounds: int) -> tuple[float, float, float, int]:
    """Records/s of the engine, of the bare record-table ingest and of the bare narrow-table
    ingest: each the median of `rounds` rounds taken in turn (engine, bare, narrow, engine, ...),
    so that a slower stretch of a noisy machine falls on every side alike."""
    from django.conf import settings
    from django.db import connection as db
    from django.db import transaction
    from django.utils import timezone

    from sources.base import SyncContext, as_records
    from sources.http import ProviderHttp
    from sources.providers.demo import DemoSource
    from sources.registry import get_plugin
    from sources.sync import RunTotals, _context, _store_page
    from sources.upsert import _CONFLICT, COLUMNS, _row

    settings.DEMO_HISTORY_DAYS = RATE_DAYS
    settings.DEMO_HEART_RATE_INTERVAL_MINUTES = 1
    plugin = get_plugin("demo")
    assert isinstance(plugin, DemoSource)

    def context(connection: Any) -> SyncContext:
        """A history sync's context, as the engine makes it."""
        return _context(connection, plugin, ProviderHttp(), True, {})

    first = make_connection("pages")
    pages = list(plugin.fetch(context(first)))  # the "provider" part, outside the timing
    cols = ", ".join(COLUMNS)
    with db.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE bare_stage (human_id varchar, connection_id varchar, source varchar, type varchar,"
            " external_id varchar, start_time timestamptz, end_time timestamptz, tz_offset smallint,"
            " local_day date, value double precision, data jsonb, source_data jsonb, content_hash varchar)"
            " ON COMMIT DELETE ROWS"
        )
        cursor.execute("CREATE TEMP TABLE narrow_stage (connection_id varchar, at timestamptz, value double precision)")

    def engine(n: int) -> tuple[int, float]:
        connection = make_connection(f"engine-{n}")
        ctx = context(connection)
        totals = RunTotals()
        started = time.perf_counter()
        for page in pages:
            _store_page(connection, plugin, ctx, page, totals)
        return sum(c.created for c in totals.counts.values()), time.perf_counter() - started

    def bare(n: int) -> tuple[int, float]:
        """The same rows, written the bare way into the record table (one row each)."""
        baseline = make_connection(f"bare-{n}")
        ctx = context(baseline)
        normalized = [as_records(plugin.normalize(p, ctx)) for p in pages]
        rows = [[_row(r, baseline.human_id, baseline.pk, "demo") for r in records] for records in normalized]
        now = timezone.now()
        started = time.perf_counter()
        for page_rows in rows:
            with transaction.atomic(), db.cursor() as cursor:
                with cursor.cursor.copy(f"COPY bare_stage ({cols}) FROM STDIN") as copy:
                    for row in page_rows:
                        copy.write_row(row)
                cursor.execute(
                    f"INSERT INTO data_api_record ({cols}, created_at, updated_at) "
                    f"SELECT {cols}, %s, %s FROM bare_stage {_CONFLICT}",
                    [now, now],
                )
        return sum(len(r) for r in rows), time.perf_counter() - started

    def narrow(n: int) -> tuple[int, float]:
        """The heart-rate readings (99% of the records), the bare idempotent way into a narrow
        table made for them: the floor a time-series layout is measured against."""
        ctx = context(first)
        normalized = [as_records(plugin.normalize(page, ctx)) for page in pages]
        readings = [
            [(first.pk, r.start_time, r.value) for r in records if r.type == "heart_rate"] for records in normalized
        ]
        table = f"narrow_reading_{n}"
        with db.cursor() as cursor:
            cursor.execute(
                f"CREATE TABLE {table} (connection_id varchar, at timestamptz, value double precision,"
                " PRIMARY KEY (connection_id, at))"
            )
        started = time.perf_counter()
        for page_rows in readings:
            with transaction.atomic(), db.cursor() as cursor:
                with cursor.cursor.copy("COPY narrow_stage (connection_id, at, value) FROM STDIN") as copy:
                    for row in page_rows:
                        copy.write_row(row)
                cursor.execute(
                    f"INSERT INTO {table} SELECT * FROM narrow_stage ON CONFLICT (connection_id, at) "
                    f"DO UPDATE SET value = EXCLUDED.value WHERE {table}.value IS DISTINCT FROM EXCLUDED.value"
                )
                cursor.execute("TRUNCATE narrow_stage")
        return sum(len(r) for r in readings), time.perf_counter() - started

    rates: dict[str, list[float]] = {"engine": [], "bare": [], "narrow": []}
    records = 0
    for n in range(rounds):
        for name, run in (("engine", engine), ("bare", bare), ("narrow", narrow)):
            count, seconds = run(n)
            rates[name].append(count / seconds)
            if name == "engine":
                records = count
        print(
            f"  round {n + 1}: engine {rates['engine'][-1]:,.0f}/s, bare {rates['bare'][-1]:,.0f}/s, "
            f"narrow {rates['narrow'][-1]:,.0f}/s"
        )
    return (
        statistics.median(rates["engine"]),
        statistics.median(rates["bare"]),
        statistics.median(rates["narrow"]),
        records,
    )


# `manage.py sync_connection <id>` in a process of its own, which then prints its own peak RSS:
# the high-water mark of its memory since it started (VmHWM). getrusage(RUSAGE_CHILDREN) of the
# parent would not do: Linux carries the parent's size at the fork into the child's maximum
# across exec, so it reported this bench's own size whenever that was larger.
_SYNC_AND_PEAK = """
import os, resource, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "humanapi_project.settings")
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", "sync_connection", sys.argv[1]])
try:
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except OSError:  # no /proc: the maximum getrusage knows (which may include the fork's)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"peak_kb={peak}")
"""


def measure_memory(url: str) -> tuple[float, int, float]:
    from django.db.models import Sum

    from data_api.models import Record, Series

    connection = make_connection("memory")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DEMO_HISTORY_DAYS": "365",
        "DEMO_HEART_RATE_INTERVAL_MINUTES": "1",
        "CELERY_BROKER_URL": "memory://",
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
    }
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _SYNC_AND_PEAK, connection.pk],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0 or "succeeded" not in result.stdout:
        raise SystemExit(f"the history sync failed: {result.stdout[-500:]} {result.stderr[-2000:]}")
    peak_kb = int(result.stdout.rsplit("peak_kb=", 1)[1].split()[0])
    stored = Record.objects.filter(connection_id=connection.pk).count()
    stored += Series.objects.filter(connection_id=connection.pk).aggregate(n=Sum("count"))["n"] or 0
    return peak_kb / 1024, stored, seconds


def main() -> None:
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith(("postgres://", "postgresql://")):
        raise SystemExit("set DATABASE_URL to a PostgreSQL server (postgres://user@host:port/db)")
    name = f"bench_ingest_{os.getpid()}"
    admin(base, f"CREATE DATABASE {name}")
    try:
        url = bench_database_url(base, name)
        setup_django(url)
        engine_rate, bare_rate, narrow_rate, records = measure_rate(ROUNDS)
        print(
            f"engine normalize+upsert: {engine_rate:,.0f} records/s ({records} records, {RATE_DAYS} days; "
            f"median of {ROUNDS} rounds, each side in turn)"
        )
        print(
            "bare COPY + INSERT ... ON CONFLICT of every record into the record table (one row each, "
            f"the layout before day rows): {bare_rate:,.0f} records/s"
        )
        print(f"bare idempotent ingest of the heart-rate readings into a narrow table: {narrow_rate:,.0f} readings/s")
        print(f"engine vs bare one row per record: {engine_rate / bare_rate:.2f}")
        peak_mb, stored, seconds = measure_memory(url)
        print(f"365-day Demo history sync, 1-minute heart rate: {stored} records in {seconds:.1f}s")
        from django.db import connections

        connections.close_all()
        print(f"ingest_ratio={engine_rate / narrow_rate:.2f} peak_rss_mb={peak_mb:.0f}")
    finally:
        if "django.db" in sys.modules:
            from django.db import connections

            connections.close_all()
        admin(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
