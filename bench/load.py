"""Serving under concurrent load, over HTTP, against a raw psycopg app serving the same mix.

In a database of its own on DATABASE_URL's server (dropped at the end): one Application with
--humans users, each with a synced --days Demo history (5-minute heart rate, activities, sleeps,
the other measurements), plus idle users whose connections a background sync works through.
Two servers run under gunicorn as the README runs it (4 sync workers, the access log on):

- ours: `humanapi_project.wsgi`, with its rate limits raised out of reach (every request still
  counts against them, as in production, but none is refused);
- raw: `raw_app` below, a minimal WSGI app over psycopg with hand-written SQL: the token or App
  Key looked up by hash, then one query for the items and one count. Records are read from the
  record table itself; readings (which the server keeps in day rows) from a plain table with one
  row per reading and a (human, type, time) index, filled before the run with exactly the
  readings the Data API serves; summaries by GROUP BY over the records or those readings.

Both answer one mix of requests (the same URLs, so the same work), checked before the run to
give the same JSON, three requests of each kind: Data API list pages at random offsets, a day of heart rate, activity,
sleep and heart-rate summaries, an activity by id, the human summary (/v1/human/); Application
API users pages, batch feeds of activities and sleeps, a user's sources and sync runs. During
every measurement a Demo history sync (60 days of minute-level heart rate, `manage.py
sync_connection` in a subprocess, one after another over the idle users) writes to the same
database.

For 16 and 64 concurrent clients (threads, each with an http.client connection; gunicorn's
sync workers close it after each answer, so a client reconnects as browsers and SDKs would),
each side is warmed up for 2 s and measured for --seconds: requests/s, p50, p99, non-2xx and
connection errors, gunicorn's CPU per request (master and workers, from /proc; PostgreSQL and
the sync are outside it), and the load generator's own CPU (it shares the machine's cores
with the servers: the more it takes, the more both sides' figures are held down, the faster
side most). Then, the sync still running, each kind's latency with one client (no queueing).
Last line: `load_ratio=<ours/raw requests/s at 64> p99_ratio=<ours/raw p99 at 64>
errors=<ours' non-2xx + connection errors on either side>`.

Usage: bench/load [--seconds N] [--humans N] [--days N]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
UNLIMITED = "1000000000"
RATE_LIMITS = (
    "RATE_LIMIT_DATA_PER_HUMAN",
    "RATE_LIMIT_DATA_PER_APP",
    "RATE_LIMIT_DATA_LIST_PASSES",
    "RATE_LIMIT_APP_API_PER_APP",
)

# --- the raw app (served by gunicorn as `load:raw_app`) ----------------------------------------

_local = threading.local()
_CONFIG: dict[str, Any] = {}


def _db() -> Any:
    import psycopg

    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    return conn


def _config() -> dict[str, Any]:
    if not _CONFIG:
        _CONFIG.update(json.loads(os.environ["LOAD_RAW_CONFIG"]))
    return _CONFIG


def _ms(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _tz(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _page(query: dict[str, list[str]]) -> tuple[int, int]:
    return int(query.get("limit", ["50"])[0]), int(query.get("offset", ["0"])[0])


def _reading(row: tuple[Any, ...], human: str) -> dict[str, Any]:
    rid, at, tz, data, source, source_data, created, updated = row
    body = {"id": rid, "humanId": human, "source": source, "timestamp": _ms(at), "tzOffset": _tz(tz), **data}
    return {**body, "sourceData": source_data, "createdAt": _ms(created), "updatedAt": _ms(updated)}


_READING = "rid, at, tz, data, source, source_data, created_at, updated_at"
_RECORD = "id, human_id, start_time, end_time, tz_offset, data, source, source_data, created_at, updated_at"


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    pk, human, start, end, tz, data, source, source_data, created, updated = row
    body = {"id": str(pk), "humanId": human, "source": source, "startTime": _ms(start), "endTime": _ms(end)}
    body.update(tzOffset=_tz(tz), **data)
    return {**body, "sourceData": source_data, "createdAt": _ms(created), "updatedAt": _ms(updated)}


def _summaries(human: str, kind: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    measures = _config()["measures"][kind]
    aggregates = []
    for _name, agg, field, _digits in measures:
        expr = f"(data->>'{field or 'value'}')::float8"
        aggregates.append(f"percentile_disc(0.1) WITHIN GROUP (ORDER BY {expr})" if agg == "p10" else f"{agg}({expr})")
    table = "raw_reading" if kind == "heart_rate" else "data_api_record"  # readings: their plain table
    sql = (
        f"SELECT local_day, source, count(*), min(created_at), max(updated_at), {', '.join(aggregates)},"
        f" count(*) OVER () FROM {table} WHERE human_id = %s AND type = %s GROUP BY local_day, source"
        " ORDER BY local_day DESC LIMIT %s OFFSET %s"
    )
    rows = _db().execute(sql, [human, kind, limit, offset]).fetchall()
    items = []
    for day, source, count, created, updated, *values, _total in rows:
        body: dict[str, Any] = {"id": f"{kind}-{day:%Y%m%d}", "humanId": human, "date": day.isoformat()}
        body["source"] = source
        for (name, _agg, _field, digits), value in zip(measures, values, strict=True):
            body[name] = None if value is None else (round(value) if digits == 0 else round(value, digits))
        if kind == "sleeps":
            in_bed = body["timeInBed"] or 0
            body["efficiency"] = round(100 * (body["timeAsleep"] or 0) / in_bed) if in_bed else None
        if kind == "heart_rate":
            body["unit"] = "bpm"
        items.append({**body, "count": count, "createdAt": _ms(created), "updatedAt": _ms(updated)})
    return items, rows[0][-1] if rows else 0


def _data_api(human: str, parts: list[str], query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
    db, (limit, offset) = _db(), _page(query)
    config = _config()
    if parts == [""]:
        latest = db.execute(
            f"SELECT t.type, r.* FROM unnest(%s::text[]) t(type) CROSS JOIN LATERAL (SELECT {_READING} FROM"
            " raw_reading WHERE human_id = %s AND type = t.type ORDER BY at DESC, rid DESC LIMIT 1) r",
            [config["measurements"], human],
        ).fetchall()
        email, updated = db.execute("SELECT email, updated_at FROM connect_human WHERE id = %s", [human]).fetchone()
        body: dict[str, Any] = {"humanId": human, "email": email}
        body.update(dict.fromkeys(config["camel"].values()))
        body.update({config["camel"][row[0]]: _reading(row[1:], human) for row in latest})
        body["activitySummary"] = next(iter(_summaries(human, "activities", 1, 0)[0]), None)
        body["sleepSummary"] = next(iter(_summaries(human, "sleeps", 1, 0)[0]), None)
        body["updatedAt"] = _ms(updated)
        return 200, body, {}
    kind = parts[0]
    if len(parts) >= 2 and parts[1] == "readings":
        day = f" AND local_day = '{date.fromisoformat(parts[3])}'" if len(parts) == 4 else ""
        where = f"human_id = %s AND type = %s{day}"
        rows = db.execute(
            f"SELECT {_READING} FROM raw_reading WHERE {where} ORDER BY at DESC, rid DESC LIMIT %s OFFSET %s",
            [human, kind, limit, offset],
        ).fetchall()
        total = db.execute(f"SELECT count(*) FROM raw_reading WHERE {where}", [human, kind]).fetchone()[0]
        return 200, [_reading(row, human) for row in rows], {"X-Total-Count": str(total)}
    if parts[1:] == ["summaries"]:
        items, total = _summaries(human, kind, limit, offset)
        return 200, items, {"X-Total-Count": str(total)}
    if len(parts) == 2:
        row = db.execute(
            f"SELECT {_RECORD} FROM data_api_record WHERE id = %s AND human_id = %s AND type = %s",
            [int(parts[1]), human, kind],
        ).fetchone()
        return (200, _record(row), {}) if row else (404, {"statusCode": 404, "error": "Not Found"}, {})
    where = "human_id = %s AND type = %s"
    rows = db.execute(
        f"SELECT {_RECORD} FROM data_api_record WHERE {where} ORDER BY start_time DESC, id DESC LIMIT %s OFFSET %s",
        [human, kind, limit, offset],
    ).fetchall()
    total = db.execute(f"SELECT count(*) FROM data_api_record WHERE {where}", [human, kind]).fetchone()[0]
    return 200, [_record(row) for row in rows], {"X-Total-Count": str(total)}


def _app_api(app: tuple[int, str], parts: list[str], query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
    db, (limit, offset) = _db(), _page(query)
    app_pk, client_id = app
    if parts == ["users"]:
        rows = db.execute(
            "SELECT id, client_user_id, created_at, updated_at, count(*) OVER () FROM connect_human"
            " WHERE application_id = %s ORDER BY created_at, id LIMIT %s OFFSET %s",
            [app_pk, limit, offset],
        ).fetchall()
        items = [
            {"humanId": h, "externalId": e, "appId": client_id, "createdAt": _ms(c), "updatedAt": _ms(u)}
            for h, e, c, u, _ in rows
        ]
        return 200, items, {"X-Total-Count": str(rows[0][-1] if rows else 0)}
    if len(parts) == 2 and parts[1] in ("activities", "sleeps"):
        since = datetime.fromisoformat(query["updated_since"][0])
        where = "r.type = %s AND r.updated_at > %s AND h.application_id = %s"
        join = "data_api_record r JOIN connect_human h ON h.id = r.human_id"
        columns = ", ".join(f"r.{c.strip()}" for c in _RECORD.split(","))
        rows = db.execute(
            f"SELECT {columns} FROM {join} WHERE {where} ORDER BY r.updated_at, r.id LIMIT %s OFFSET %s",
            [parts[1], since, app_pk, limit, offset],
        ).fetchall()
        total = db.execute(f"SELECT count(*) FROM {join} WHERE {where}", [parts[1], since, app_pk]).fetchone()[0]
        return 200, [_record(row) for row in rows], {"X-Total-Count": str(total)}
    if len(parts) == 3 and parts[2] == "sources":
        connections = db.execute(
            "SELECT c.id, c.source, c.status, c.connected_at, c.last_synced_at, c.next_sync_at"
            " FROM sources_connection c JOIN connect_human h ON h.id = c.human_id"
            " WHERE c.human_id = %s AND h.application_id = %s",
            [parts[1], app_pk],
        ).fetchall()
        items = []
        for cid, source, status, connected, synced, next_at in connections:
            runs = db.execute(
                "SELECT id, kind, outcome, started_at, finished_at, pages, counts, error FROM sources_syncrun"
                " WHERE connection_id = %s ORDER BY started_at DESC LIMIT 5",
                [cid],
            ).fetchall()
            body = {"id": cid, "source": source, "status": status, "connectedSince": _ms(connected)}
            body.update(synchedAt=_ms(synced), nextSyncAt=_ms(next_at))
            body["syncRuns"] = [
                {"id": r[0], "kind": r[1], "outcome": r[2], "startedAt": _ms(r[3]), "finishedAt": _ms(r[4])}
                | {"pages": r[5], "counts": r[6], "error": r[7]}
                for r in runs
            ]
            items.append(body)
        return 200, items, {}
    return 404, {"statusCode": 404, "error": "Not Found"}, {}


def _route(path: str, query: dict[str, list[str]], auth: str) -> tuple[int, Any, dict[str, str]]:
    unauthorized: tuple[int, Any, dict[str, str]] = (401, {"statusCode": 401, "error": "Unauthorized"}, {})
    if path.startswith("/v1/human/"):
        token = auth.removeprefix("Bearer ")
        row = (
            _db()
            .execute(
                "SELECT human_id FROM connect_token WHERE token_hash = %s AND kind = 'access'"
                " AND revoked_at IS NULL AND expires_at > now()",
                [hashlib.sha256(token.encode()).hexdigest()],
            )
            .fetchone()
        )
        return _data_api(row[0], path[len("/v1/human/") :].split("/"), query) if row else unauthorized
    if path.startswith("/v1/apps/"):
        client_id, _, rest = path[len("/v1/apps/") :].partition("/")
        key = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")[0]
        row = _db().execute("SELECT id, app_key_hash FROM connect_application WHERE client_id = %s", [client_id])
        app = row.fetchone()
        if app is None or hashlib.sha256(key.encode()).hexdigest() != app[1]:
            return unauthorized
        return _app_api((app[0], client_id), rest.split("/"), query)
    return 404, {"statusCode": 404, "error": "Not Found"}, {}


def raw_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        status, body, headers = _route(environ["PATH_INFO"], query, environ.get("HTTP_AUTHORIZATION", ""))
    except Exception as exc:  # a server answers, whatever went wrong
        status, body, headers = 500, {"statusCode": 500, "error": repr(exc)}, {}
    data = json.dumps(body).encode()
    reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}[status]
    start_response(
        f"{status} {reason}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers.items()],
    )
    return [data]


# --- setup (in a child process, with Django) -----------------------------------------------------


def setup_child(humans: int, spares: int) -> None:
    """Migrate; one Application, `humans` users with a synced Demo history, `spares` idle users
    with a connection not synced yet; print what the benchmark needs as JSON."""
    from ingest import setup_django

    setup_django(os.environ["DATABASE_URL"])
    from connect.models import Token, TokenKind
    from connect.services import application_create, human_for_session
    from sources.base import Credentials
    from sources.services import connection_store
    from sources.sync import connection_sync
    from sources.types import MEASUREMENTS, SUMMARIZED

    app = application_create(name="load", origins=[])
    credentials = Credentials(data={"user": "demouser"}, external_user_id="demouser")
    users, idle = [], []
    began = time.perf_counter()
    for n in range(humans + spares):
        human = human_for_session(app.application, f"user-{n}", f"user-{n}@example.com")
        connection = connection_store(human=human, slug="demo", credentials=credentials, request=None)
        if n < humans:
            connection_sync(connection_id=connection.pk)
            _, token = Token.mint(kind=TokenKind.ACCESS, human=human, ttl=86400)
            users.append({"id": human.pk, "token": token})
        else:
            idle.append(connection.pk)
    print(f"  {humans} users synced in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    measures = {
        kind: [[m.name, m.agg, m.field, m.digits] for m in SUMMARIZED[kind]]
        for kind in ("activities", "sleeps", "heart_rate")
    }
    camel = {m: "".join(p if i == 0 else p.title() for i, p in enumerate(m.split("_"))) for m in MEASUREMENTS}
    world: dict[str, Any] = {
        "client_id": app.application.client_id,
        "app_key": app.app_key,
        "users": users,
        "idle": idle,
    }
    world["raw"] = {"measures": measures, "measurements": sorted(MEASUREMENTS), "camel": camel}
    print(json.dumps(world))


# --- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gunicorn(app: str, env: dict[str, str], log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """`app` under gunicorn as the README runs it (from the project root, so with its
    gunicorn.conf.py); the access log is written and thrown away, the error log kept in `log`."""
    port = free_port()
    command = [str(ROOT / ".venv/bin/gunicorn"), app, "-b", f"127.0.0.1:{port}", "--workers", "4"]
    command += ["--access-logfile", "-", *extra]
    server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    for _ in range(300):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/v1/human/profile")
            connection.getresponse().read()
            return server, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn {app} did not start")


def cpu_seconds(master: int) -> float:
    """User + system CPU of a gunicorn master and its workers so far."""
    total = 0.0
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    for pid in [master, *map(int, children)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    return response.status, json.loads(body) if body else None, dict(response.getheaders())


# --- the mix -------------------------------------------------------------------------------------


class Mix:
    """The requests both servers answer, each built at random from what the users hold."""

    def __init__(self, world: dict[str, Any], facts: dict[str, dict[str, Any]]) -> None:
        self.world, self.facts = world, facts
        basic = base64.b64encode(f"{world['app_key']}:".encode()).decode()
        self.app_auth = {"Authorization": f"Basic {basic}"}
        self.app_base = f"/v1/apps/{world['client_id']}"
        self.since = (datetime.now(UTC) - timedelta(days=400)).isoformat()
        # (weight, name): Data API 70%, Application API 30%
        self.kinds: list[tuple[int, str]] = [
            (20, "readings page"),
            (8, "activities page"),
            (10, "readings of a day"),
            (6, "activity summaries"),
            (5, "sleep summaries"),
            (5, "heart-rate summaries"),
            (6, "an activity"),
            (10, "human summary"),
            (8, "users page"),
            (6, "batch activities"),
            (6, "batch sleeps"),
            (10, "sources and runs"),
        ]
        self.names = [name for _, name in self.kinds]
        self.weights = [weight for weight, _ in self.kinds]

    def build(self, name: str, rng: random.Random) -> tuple[str, dict[str, str]]:
        user = rng.choice(self.world["users"])
        facts = self.facts[user["id"]]
        bearer = {"Authorization": f"Bearer {user['token']}"}
        page = {"limit": 50}
        if name == "readings page":
            offset = rng.randrange(0, max(1, facts["readings"] - 50), 50)
            return f"/v1/human/heart_rate/readings?{urlencode({**page, 'offset': offset})}", bearer
        if name == "activities page":
            return f"/v1/human/activities?{urlencode({**page, 'offset': rng.choice((0, 0, 50))})}", bearer
        if name == "readings of a day":
            return f"/v1/human/heart_rate/readings/daily/{rng.choice(facts['days'])}", bearer
        if name.endswith("summaries"):
            kind = {"activity": "activities", "sleep": "sleeps", "heart-rate": "heart_rate"}[name.split()[0]]
            return f"/v1/human/{kind}/summaries", bearer
        if name == "an activity":
            return f"/v1/human/activities/{rng.choice(facts['activities'])}", bearer
        if name == "human summary":
            return "/v1/human/", bearer
        if name == "users page":
            offset = rng.randrange(0, len(self.world["users"]) + len(self.world["idle"]), 10)
            return f"{self.app_base}/users?{urlencode({**page, 'offset': offset})}", self.app_auth
        if name.startswith("batch"):
            query = urlencode({**page, "offset": rng.randrange(0, 500, 50), "updated_since": self.since})
            return f"{self.app_base}/users/{name.split()[1]}?{query}", self.app_auth
        return f"{self.app_base}/users/{user['id']}/sources", self.app_auth

    def pick(self, rng: random.Random) -> tuple[str, str, dict[str, str]]:
        name = rng.choices(self.names, self.weights)[0]
        return (name, *self.build(name, rng))


def user_facts(port: int, world: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the mix picks from: each user's heart-rate total, days, activity ids."""
    facts = {}
    for user in world["users"]:
        bearer = {"Authorization": f"Bearer {user['token']}"}
        _, _, headers = get(port, "/v1/human/heart_rate/readings?limit=1", bearer)
        _, days, _ = get(port, "/v1/human/heart_rate/summaries?limit=500", bearer)
        _, activities, _ = get(port, "/v1/human/activities?limit=500", bearer)
        total = int(headers["X-Total-Count"])
        facts[user["id"]] = {
            "readings": total,
            "days": [d["date"] for d in days],
            "activities": [a["id"] for a in activities],
        }
    return facts


def fill_raw_readings(port: int, world: dict[str, Any]) -> int:
    """The raw side's plain reading table: every reading the Data API serves, one row each."""
    import psycopg

    rows: list[tuple[Any, ...]] = []
    common = ("id", "humanId", "source", "timestamp", "tzOffset", "sourceData", "createdAt", "updatedAt")
    for user in world["users"]:
        bearer = {"Authorization": f"Bearer {user['token']}"}
        for kind in world["raw"]["measurements"]:
            offset = 0
            while True:
                _, items, _ = get(port, f"/v1/human/{kind}/readings?limit=500&offset={offset}", bearer)
                for item in items:
                    at = datetime.fromisoformat(item["timestamp"].replace("Z", "+00:00"))
                    sign, hours, minutes = item["tzOffset"][0], item["tzOffset"][1:3], item["tzOffset"][4:]
                    tz = (1 if sign == "+" else -1) * (int(hours) * 60 + int(minutes))
                    data = {k: v for k, v in item.items() if k not in common}
                    local = (at + timedelta(minutes=tz)).date()
                    source_data = json.dumps(item["sourceData"])
                    rows.append((user["id"], kind, item["id"], at, tz, local, json.dumps(data), item["source"]))
                    rows[-1] += (source_data, item["createdAt"], item["updatedAt"])
                if len(items) < 500:
                    break
                offset += 500
    with psycopg.connect(os.environ["LOAD_DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE raw_reading (human_id text, type text, rid text, at timestamptz, tz smallint,"
            " local_day date, data jsonb, source text, source_data jsonb, created_at timestamptz,"
            " updated_at timestamptz)"
        )
        with conn.cursor().copy("COPY raw_reading FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute("CREATE INDEX raw_reading_list ON raw_reading (human_id, type, at DESC, rid DESC)")
        conn.execute("CREATE INDEX raw_reading_day ON raw_reading (human_id, type, local_day)")
        conn.execute("ANALYZE raw_reading")
    return len(rows)


def compare(mix: Mix, ours: int, raw: int) -> list[str]:
    """Each kind of request a few times on both sides: the same status, X-Total-Count and JSON
    (a user's sources: the same connections and runs; the raw side leaves out the other fields)."""

    def key(name: str, body: Any) -> Any:
        if name == "sources and runs":
            return [(c["id"], [run["id"] for run in c["syncRuns"]]) for c in body]
        return body

    problems = []
    rng = random.Random(7)
    for name in mix.names:
        for _ in range(3):
            path, headers = mix.build(name, rng)
            (s1, b1, h1), (s2, b2, h2) = get(ours, path, headers), get(raw, path, headers)
            same_total = h1.get("X-Total-Count") == h2.get("X-Total-Count")
            if s1 != 200 or s2 != 200 or key(name, b1) != key(name, b2) or not same_total:
                problems.append(f"{name}: {path} ours {s1}, raw {s2}")
    return problems


# --- load ------------------------------------------------------------------------------------


class BackgroundSync:
    """Demo history syncs, one after another over the idle users' connections, in subprocesses."""

    def __init__(self, env: dict[str, str], connections: list[str]) -> None:
        self.env = {**env, "DEMO_HISTORY_DAYS": "60", "DEMO_HEART_RATE_INTERVAL_MINUTES": "1"}
        self.connections = list(connections)
        self.done: list[float] = []
        self.failed = 0
        self.stopping = threading.Event()
        self.current: subprocess.Popen[bytes] | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while self.connections and not self.stopping.is_set():
            began = time.perf_counter()
            command = [sys.executable, "manage.py", "sync_connection", self.connections.pop(0)]
            self.current = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            code = self.current.wait()
            if self.stopping.is_set():
                break
            if code == 0:
                self.done.append(time.perf_counter() - began)
            else:
                self.failed += 1

    def stop(self) -> None:
        self.stopping.set()
        if self.current is not None and self.current.poll() is None:
            self.current.terminate()
            self.current.wait()
        self.thread.join()


def drive(port: int, mix: Mix, clients: int, seconds: float, seed: int) -> dict[str, Any]:
    """`clients` threads sending the mix for `seconds`; latencies (ms) by kind, statuses."""
    results: list[tuple[str, float, int]] = []
    stop_at = time.perf_counter() + seconds

    def client(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        while time.perf_counter() < stop_at:
            name, path, headers = mix.pick(rng)
            began = time.perf_counter()
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
                connection.close()
            mine.append((name, (time.perf_counter() - began) * 1000, status))
        results.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return {"elapsed": elapsed, "results": results}


def measure(server: subprocess.Popen[bytes], port: int, mix: Mix, clients: int, seconds: float) -> dict[str, Any]:
    drive(port, mix, clients, 2.0, seed=clients)  # warm-up: connections, caches, planner
    usage, cpu = resource.getrusage(resource.RUSAGE_SELF), cpu_seconds(server.pid)
    run = drive(port, mix, clients, seconds, seed=clients + 1)
    after = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = cpu_seconds(server.pid) - cpu
    client_cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    results, elapsed = run["results"], run["elapsed"]
    latencies = sorted(ms for _, ms, _ in results)
    statuses = Counter(status for _, _, status in results)
    return {
        "rps": len(results) / elapsed,
        "p50": statistics.median(latencies),
        "p99": statistics.quantiles(latencies, n=100)[98],
        "non2xx": sum(count for status, count in statuses.items() if status and not 200 <= status < 300),
        "connection": statuses[0],
        "server_ms": server_cpu * 1000 / max(1, len(results)),
        "client_cores": client_cpu / elapsed,
    }


def one_client(port: int, mix: Mix) -> dict[str, float]:
    """Each kind's latency without queueing: 20 requests of it in a row, the median (ms)."""
    rng, medians = random.Random(11), {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for name in mix.names:
        latencies = []
        for _ in range(20):
            path, headers = mix.build(name, rng)
            began = time.perf_counter()
            connection.request("GET", path, headers=headers)
            connection.getresponse().read()
            latencies.append((time.perf_counter() - began) * 1000)
        medians[name] = statistics.median(latencies)
    return medians


def report(side: str, clients: int, m: dict[str, Any]) -> None:
    print(
        f"  {side:4} N={clients:<3} {m['rps']:7.1f} requests/s   p50 {m['p50']:7.1f} ms   p99 {m['p99']:7.1f} ms"
        f"   errors {m['non2xx']} non-2xx, {m['connection']} connection   server CPU {m['server_ms']:.1f} ms/request"
        f"   load generator {m['client_cores']:.2f} cores"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--humans", type=int, default=16)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH))
    if args.setup:
        setup_child(args.humans, spares=40)
        return
    from ingest import admin, bench_database_url

    base_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/humanapi")
    name = "humanapi_load"
    url = bench_database_url(base_url, name)
    admin(base_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin(base_url, f"CREATE DATABASE {name}")
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "bench-load-secret", "DEBUG": "0"}
    env.update(CELERY_BROKER_URL="memory://", ALLOWED_HOSTS="127.0.0.1", LOAD_DATABASE_URL=url)
    env.update(DEMO_HISTORY_DAYS=str(args.days), DEMO_HEART_RATE_INTERVAL_MINUTES="5")
    env.update(dict.fromkeys(RATE_LIMITS, UNLIMITED))
    servers: list[subprocess.Popen[bytes]] = []
    try:
        print(f"setup: {args.humans} users with {args.days} days of Demo data (5-minute heart rate), 40 idle users")
        child = subprocess.run(
            [sys.executable, __file__, "--setup", "--humans", str(args.humans)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            sys.exit(child.stderr[-3000:])
        print("\n".join(line for line in child.stderr.splitlines() if line.startswith("  ")))
        world = json.loads(child.stdout.strip().splitlines()[-1])
        logs = Path(tempfile.mkdtemp(prefix="bench-load-"))
        ours_server, ours = gunicorn("humanapi_project.wsgi", env, logs / "ours.log")
        servers.append(ours_server)
        os.environ["LOAD_DATABASE_URL"] = url
        facts = user_facts(ours, world)
        print(f"  raw side: {fill_raw_readings(ours, world):,} readings copied to its plain table")
        raw_env = {**env, "LOAD_RAW_CONFIG": json.dumps(world["raw"])}
        raw_server, raw = gunicorn("load:raw_app", raw_env, logs / "raw.log", "--pythonpath", str(BENCH))
        servers.append(raw_server)
        mix = Mix(world, facts)
        problems = compare(mix, ours, raw)
        print(f"  same answers on both sides: {3 * len(mix.names) - len(problems)} of {3 * len(mix.names)} requests")
        for problem in problems:
            print(f"  DIFFERENT: {problem}")

        background = BackgroundSync(env, world["idle"])
        background.thread.start()
        results: dict[tuple[str, int], dict[str, Any]] = {}
        print(f"load: {args.seconds:.0f} s per side and N (after 2 s of warm-up), a Demo history sync running")
        for clients in (16, 64):
            for side, server, port in (("ours", ours_server, ours), ("raw", raw_server, raw)):
                results[side, clients] = measure(server, port, mix, clients, args.seconds)
                report(side, clients, results[side, clients])
        alone = {side: one_client(port, mix) for side, port in (("ours", ours), ("raw", raw))}
        background.stop()
        print(
            f"background: {len(background.done)} Demo history syncs (60 days, minute heart rate) finished during the"
            f" run, {statistics.median(background.done or [0]):.1f} s each (median)"
        )
        print("one client at a time, median ms of 20 requests of each kind (ours / raw), the sync still running:")
        for kind in mix.names:
            print(f"  {kind:22} {alone['ours'][kind]:7.1f} / {alone['raw'][kind]:.1f}")
        ours64, raw64 = results["ours", 64], results["raw", 64]
        errors = sum(results["ours", n]["non2xx"] for n in (16, 64))
        errors += sum(results[side, n]["connection"] for side in ("ours", "raw") for n in (16, 64))
        if errors:
            print(f"servers' error logs: {logs}")
        print(
            f"load_ratio={ours64['rps'] / raw64['rps']:.2f} p99_ratio={ours64['p99'] / raw64['p99']:.2f}"
            f" errors={errors}"
        )
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        admin(base_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
