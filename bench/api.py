"""Data API speed against raw SQL, on PostgreSQL.

Loads 100 Humans into a database of its own (DATABASE_URL's name + "_bench", dropped at the
end unless --keep): one with a year of data, 1,000,000 heart-rate readings plus activities and
sleeps; 99 with a month each. Activities and sleeps are COPYed into the record table; the
readings go through the engine's own write path into day rows (data_api.series), and, as the
raw baseline, are COPYed one row each into a plain table with the record table's columns and
list indexes (analyzed: the baseline at its best). Nothing else is analyzed or vacuumed by hand.
Then measures, in this process, the Data API through Django's test client against the same
answer computed by raw psycopg plus json.dumps:

- a list page of 50 and of 500 readings at offset 0 and at offset 900,000 (raw: the same
  columns by keyset, the cheapest way SQL can answer it; plain OFFSET shown for reference);
- a year of daily activity summaries (raw: one GROUP BY over the year's records), and, for
  reference, a year of heart-rate summaries.

Prints each figure (median of repeated runs, in ms) and its ratio, and the SQL queries one
request of each kind makes; the line before the last is `api50_ratio_first=<x>
api50_ratio_deep=<y> deep_vs_first50=<z>` for 50-row pages, the last line is
`api_ratio_first=<x> api_ratio_deep=<y> deep_vs_first=<z> summary_ratio=<w> day_ratio=<v>` for 500-row
pages and a whole day of readings (every page of the daily route against one raw query).

Usage: bench/api [--readings N] [--repeat N] [--keep]
"""

import argparse
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DAY0 = date(2025, 3, 1)
TZ = -300  # minutes: the user lives at UTC-05:00


def bench_url() -> tuple[str, str, str]:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/hapi")
    parts = urlsplit(base)
    if parts.scheme not in ("postgres", "postgresql"):
        sys.exit("bench/api needs DATABASE_URL=postgres://...")
    name = parts.path.lstrip("/") + "_bench"
    admin = urlunsplit(parts._replace(path="/postgres"))
    return urlunsplit(parts._replace(path="/" + name)), admin, name


def recreate(admin: str, name: str, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "bench-secret-key")
    os.environ["DEBUG"] = "0"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")
    os.environ["DJANGO_SETTINGS_MODULE"] = "humanapi_project.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# --- loading ---------------------------------------------------------------------------------


def _line(*values: Any) -> str:
    return "\t".join("\\N" if v is None else str(v) for v in values) + "\n"


def _readings(readings: int, days: int) -> Iterator[tuple[int, datetime, int]]:
    start = datetime.combine(DAY0, datetime.min.time(), tzinfo=UTC)
    step = days * 86400 / max(readings, 1)
    for n in range(readings):
        yield n, start + timedelta(seconds=n * step), 55 + (n * 7919) % 60


def _reading_lines(human: str, conn_id: str, readings: int, days: int, now: str) -> Iterator[str]:
    """The heart-rate readings as rows of the raw baseline table (the record table's columns)."""
    for n, at, bpm in _readings(readings, days):
        local = (at + timedelta(minutes=TZ)).date()
        data = f'{{"value": {bpm}, "unit": "bpm"}}'
        yield _line(
            human,
            conn_id,
            "demo",
            "heart_rate",
            f"hr-{n}",
            at.isoformat(),
            None,
            TZ,
            local,
            bpm,
            data,
            f'{{"n": {n}}}',
            "x",
            now,
            now,
        )


def _store_readings(human: str, conn_id: str, readings: int, days: int) -> None:
    """The same readings through the engine's own write path (day rows), a day per transaction."""
    from django.db import transaction

    from data_api import series

    stamp = round(time.time() * 1000)
    by_day: dict[date, list[tuple[str, date, list[Any]]]] = {}
    for n, at, bpm in _readings(readings, days):
        local = (at + timedelta(minutes=TZ)).date()
        reading = [
            round(at.timestamp() * 1000),
            0,
            f"hr-{n}",
            TZ,
            bpm,
            {"value": bpm, "unit": "bpm"},
            {"n": n},
            stamp,
            stamp,
        ]
        by_day.setdefault(local, []).append(("heart_rate", local, reading))
    for items in by_day.values():
        with transaction.atomic():
            series.write(items, human_id=human, connection_id=conn_id, source="demo")


def _record_lines(human: str, conn_id: str, days: int, now: str) -> Iterator[str]:
    for d in range(days):
        day = DAY0 + timedelta(days=d)
        for k in range(2 + d % 2):
            at = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12 + 4 * k)
            steps = 1000 + (d * 37 + k * 101) % 4000
            data = json.dumps(
                {"type": "walking", "duration": 1800, "distance": steps * 0.75, "steps": steps, "calories": 135.0}
            )
            end = (at + timedelta(minutes=30)).isoformat()
            local = (at + timedelta(minutes=TZ)).date()
            yield _line(
                human,
                conn_id,
                "demo",
                "activities",
                f"act-{d}-{k}",
                at.isoformat(),
                end,
                TZ,
                local,
                None,
                data,
                "{}",
                "x",
                now,
                now,
            )
        bed = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=3)
        in_bed = 420 + d % 90
        data = json.dumps(
            {
                "day": day.isoformat(),
                "mainSleep": True,
                "timeAsleep": in_bed - 30,
                "timeAwake": 30,
                "timeInBed": in_bed,
                "efficiency": 93,
                "numberOfWakeups": 2,
            }
        )
        local = (bed + timedelta(minutes=TZ)).date()
        yield _line(
            human,
            conn_id,
            "demo",
            "sleeps",
            f"sleep-{d}",
            bed.isoformat(),
            (bed + timedelta(minutes=in_bed)).isoformat(),
            TZ,
            local,
            None,
            data,
            "{}",
            "x",
            now,
            now,
        )


# The raw baseline of the readings: one row each, as the record table stores a record.
RAW_TABLE = """
CREATE TABLE bench_raw (
    id bigserial PRIMARY KEY, human_id varchar, connection_id varchar, source varchar, type varchar,
    external_id varchar, start_time timestamptz, end_time timestamptz, tz_offset smallint, local_day date,
    value double precision, data jsonb, source_data jsonb, content_hash varchar, created_at timestamptz,
    updated_at timestamptz, UNIQUE (connection_id, type, external_id));
CREATE INDEX ON bench_raw (human_id, type, start_time DESC, id DESC);
CREATE INDEX ON bench_raw (human_id, type, local_day);
"""


def _copy(raw: Any, table: str, columns: str, lines: Iterator[str]) -> None:
    with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        buffer = io.StringIO()
        for count, text in enumerate(lines, 1):
            buffer.write(text)
            if count % 50000 == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())


def load(readings: int) -> tuple[Any, str]:
    from django.db import connection

    from connect.models import Human, Token, TokenKind
    from connect.services import application_create, human_for_session
    from sources.models import Connection

    app = application_create(name="bench", origins=[])
    humans = [human_for_session(app.application, f"user-{i}", f"user-{i}@example.com") for i in range(100)]
    now = datetime.now(UTC).isoformat()
    columns = (
        "human_id, connection_id, source, type, external_id, start_time, end_time, tz_offset, local_day, value,"
        " data, source_data, content_hash, created_at, updated_at"
    )
    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(RAW_TABLE)
        raw = cursor.cursor
        for index, human in enumerate(humans):
            conn = Connection.objects.create(human=human, source="demo", external_user_id="bench")
            big = index == 0
            count, days = (readings, 365) if big else (2000, 30)
            _copy(raw, "data_api_record", columns, _record_lines(human.pk, conn.pk, days, now))
            _store_readings(human.pk, conn.pk, count, days)
            # The baseline: the same readings one row each in a plain table, indexed for the lists.
            _copy(raw, "bench_raw", columns, _reading_lines(human.pk, conn.pk, count, days, now))
        cursor.execute("ANALYZE bench_raw")  # the baseline at its best
    # No VACUUM or ANALYZE of the served tables by hand: only what the engine does after writing.
    from sources.upsert import refresh_statistics

    refresh_statistics(readings + 99 * 2000)
    print(f"loaded 100 humans, {readings:,} heart-rate readings for one, in {time.perf_counter() - began:.1f} s")
    big: Human = humans[0]
    _, token = Token.mint(kind=TokenKind.ACCESS, human=big, ttl=86400)
    return big, token


# --- measuring -------------------------------------------------------------------------------


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="milliseconds")[:23] + "Z"


RAW_COLUMNS = "id, human_id, source, type, start_time, end_time, tz_offset, data, source_data, created_at, updated_at"


def raw_rows_json(rows: list[tuple[Any, ...]]) -> bytes:
    out = []
    for pk, human, source, _kind, start, _end, tz, data, source_data, created, updated in rows:
        body = {"id": str(pk), "humanId": human, "source": source, "timestamp": iso(start)}
        body["tzOffset"] = f"{'-' if tz < 0 else '+'}{abs(tz) // 60:02d}:{abs(tz) % 60:02d}"
        body.update(data)
        body.update({"sourceData": source_data, "createdAt": iso(created), "updatedAt": iso(updated)})
        out.append(body)
    return json.dumps(out).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description="Data API speed against raw SQL, on PostgreSQL.")
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()
    url, admin, name = bench_url()
    recreate(admin, name)
    try:
        setup_django(url)
        run(args.readings, args.repeat, url)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            recreate(admin, name, drop_only=True)


def run(readings: int, repeat: int, url: str) -> None:
    import psycopg
    from django.test import Client

    human, token = load(readings)
    client = Client(headers={"Authorization": f"Bearer {token}"})
    deep = int(readings * 0.9)
    raw = psycopg.connect(url, autocommit=True)
    where = "human_id = %s AND type = 'heart_rate'"

    def api(path: str, **params: Any) -> Callable[[], Any]:
        def call() -> Any:
            response = client.get(path, params)
            assert response.status_code == 200, response.content[:200]
            return response.content

        return call

    began = time.perf_counter()
    api("/v1/human/heart_rate/readings", limit=50)()
    print(f"first read after a change (total and anchors computed once): {(time.perf_counter() - began) * 1000:.0f} ms")
    began = time.perf_counter()
    api("/v1/human/heart_rate/summaries", limit=500)()
    api("/v1/human/activities/summaries", limit=500)()
    print(
        "first summaries after the load (every day's rollup computed once): "
        f"{(time.perf_counter() - began) * 1000:.0f} ms"
    )

    def queries(path: str, **params: Any) -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            api(path, **params)()
        return len(captured.captured_queries)

    print(
        "SQL queries per request: list page "
        f"{queries('/v1/human/heart_rate/readings', limit=50, offset=deep)}, "
        f"summaries {queries('/v1/human/activities/summaries', limit=500)}"
    )

    def key_at(offset: int) -> tuple[Any, ...]:
        return raw.execute(
            f"SELECT start_time, id FROM bench_raw WHERE {where} ORDER BY start_time DESC, id DESC OFFSET %s LIMIT 1",
            [human.pk, offset],
        ).fetchone()  # type: ignore[return-value]

    def raw_keyset(key: tuple[Any, ...], limit: int) -> Callable[[], Any]:
        sql = (
            f"SELECT {RAW_COLUMNS} FROM bench_raw WHERE {where} AND (start_time, id) <= (%s, %s) "
            "ORDER BY start_time DESC, id DESC LIMIT %s"
        )
        return lambda: raw_rows_json(raw.execute(sql, [human.pk, *key, limit]).fetchall())

    def raw_offset(offset: int, limit: int) -> Callable[[], Any]:
        sql = f"SELECT {RAW_COLUMNS} FROM bench_raw WHERE {where} ORDER BY start_time DESC, id DESC OFFSET %s LIMIT %s"
        return lambda: raw_rows_json(raw.execute(sql, [human.pk, offset, limit]).fetchall())

    figures: dict[str, float] = {}
    for limit in (50, 500):
        for label, offset in (("first", 0), ("deep", deep)):
            api_ms = median_ms(api("/v1/human/heart_rate/readings", limit=limit, offset=offset), repeat)
            raw_ms = median_ms(raw_keyset(key_at(offset), limit), repeat)
            plain_ms = median_ms(raw_offset(offset, limit), max(3, repeat // 5))
            figures[f"{label}{limit}"] = api_ms
            figures[f"ratio_{label}{limit}"] = api_ms / raw_ms
            print(
                f"list limit={limit} offset={offset}: api {api_ms:.2f} ms, raw keyset {raw_ms:.2f} ms "
                f"(ratio {api_ms / raw_ms:.2f}); raw plain OFFSET+LIMIT {plain_ms:.2f} ms"
            )
        print(f"  deep vs first (limit={limit}): {figures[f'deep{limit}'] / figures[f'first{limit}']:.2f}")

    first_day, last_day = DAY0, DAY0 + timedelta(days=364)
    window = {"start_date": first_day.isoformat(), "end_date": last_day.isoformat(), "limit": 500}
    aggregates = {
        "activities": "sum((data->>'steps')::float8), sum((data->>'distance')::float8),"
        " sum((data->>'calories')::float8), sum((data->>'duration')::float8)",
        "heart_rate": "min(value), max(value), avg(value), percentile_disc(0.1) WITHIN GROUP (ORDER BY value)",
    }
    ratios = {}
    for kind, aggregate in aggregates.items():
        sql = (
            f"SELECT local_day, count(*), min(created_at), max(updated_at), {aggregate} "
            f"FROM {'bench_raw' if kind == 'heart_rate' else 'data_api_record'} "
            "WHERE human_id = %s AND type = %s AND local_day BETWEEN %s AND %s "
            "GROUP BY local_day ORDER BY local_day DESC"
        )

        def raw_summary(sql: str = sql, kind: str = kind) -> bytes:
            rows = raw.execute(sql, [human.pk, kind, first_day, last_day]).fetchall()
            return json.dumps(
                [[r[0].isoformat(), r[1], iso(r[2]), iso(r[3]), *r[4:]] for r in rows], default=str
            ).encode()

        api_ms = median_ms(api(f"/v1/human/{kind}/summaries", **window), repeat)
        raw_ms = median_ms(raw_summary, max(3, repeat // 5) if kind == "heart_rate" else repeat)
        ratios[kind] = api_ms / raw_ms
        print(
            f"a year of daily {kind} summaries: api {api_ms:.2f} ms, "
            f"raw SQL aggregate {raw_ms:.2f} ms (ratio {ratios[kind]:.2f})"
        )

    # A whole day of readings, as a client reads it: every page of the daily route.
    day = DAY0 + timedelta(days=182)
    day_sql = f"SELECT {RAW_COLUMNS} FROM bench_raw WHERE {where} AND local_day = %s ORDER BY start_time DESC, id DESC"

    def raw_day() -> Any:
        return raw_rows_json(raw.execute(day_sql, [human.pk, day]).fetchall())

    def api_day() -> int:
        got, offset = 0, 0
        while True:
            response = client.get(
                f"/v1/human/heart_rate/readings/daily/{day.isoformat()}", {"limit": 500, "offset": offset}
            )
            assert response.status_code == 200
            page = len(response.json())
            got, offset = got + page, offset + 500
            if page < 500:
                return got

    day_rows = api_day()
    day_api_ms, day_raw_ms = median_ms(api_day, repeat), median_ms(raw_day, repeat)
    print(
        f"a day of readings ({day_rows:,} rows, {-(-day_rows // 500)} pages of 500): api {day_api_ms:.2f} ms, "
        f"raw one query {day_raw_ms:.2f} ms (ratio {day_api_ms / day_raw_ms:.2f})"
    )

    raw.close()
    print(
        f"api50_ratio_first={figures['ratio_first50']:.2f} api50_ratio_deep={figures['ratio_deep50']:.2f} "
        f"deep_vs_first50={figures['deep50'] / figures['first50']:.2f}"
    )
    print(
        f"api_ratio_first={figures['ratio_first500']:.2f} api_ratio_deep={figures['ratio_deep500']:.2f} "
        f"deep_vs_first={figures['deep500'] / figures['first500']:.2f} summary_ratio={ratios['activities']:.2f} "
        f"day_ratio={day_api_ms / day_raw_ms:.2f}"
    )


if __name__ == "__main__":
    main()
