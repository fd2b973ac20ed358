"""Shared rate budget under load: many connections of many tenants backfill at once, through
Celery workers, against a provider that enforces its limit.

1,000 Strava connections (10 Applications of 100 users each, one provider application) are
synced by Celery worker processes over Redis, as in production, against the Strava emulator
answering 429 past its limit, here scaled down to 200 requests per 15-second window (aligned
to the clock, as Strava's quarter hours) and declared to the engine the same way
(SOURCE_STRAVA_RATE_LIMITS). Each history is `--pages` list calls. Runs in a database of its
own on DATABASE_URL's server (dropped at the end), with its own Redis queue.

Prints the 429s the emulator answered, the time until every history was stored, and the
theoretical minimum given the limit (requests needed / limit * window).
Last line: `budget_429s=<n> time_ratio=<actual/minimum>`.

Usage: bench/budget [--connections N] [--limit N] [--window S] [--pages P] [--concurrency C]
                    [--redis-budget]
"""

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import admin, bench_database_url

ROOT = Path(__file__).resolve().parent.parent
TENANTS = 10


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=200, help="requests per window, at the emulator and declared")
    parser.add_argument("--window", type=int, default=15, help="seconds")
    parser.add_argument("--pages", type=int, default=1, help="list calls per history")
    parser.add_argument("--concurrency", type=int, default=8, help="Celery worker processes")
    parser.add_argument("--redis-budget", action="store_true", help="keep the budget in Redis, not PostgreSQL")
    parser.add_argument("--timeout", type=int, default=900)
    return parser.parse_args()


def environment(args: argparse.Namespace, database_url: str, redis_url: str, emulator: Any) -> dict[str, str]:
    """What the bench process and the workers share: the database, the broker, the source."""
    per_page = "2" if args.pages == 1 else "1"  # one activity: 1 call (a short page) or `pages` calls
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-budget-secret"),
        "DEBUG": "0",
        "CELERY_BROKER_URL": redis_url,
        "CELERY_TASK_DEFAULT_QUEUE": f"bench-budget-{uuid.uuid4().hex[:8]}",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "ALLOW_HTTP_PROVIDERS": "1",
        "RATE_LIMIT_REDIS_URL": redis_url if args.redis_budget else "",
        "SOURCE_STRAVA_RATE_LIMITS": f"{args.limit}/{args.window},100000000/86400",
        "SOURCE_STRAVA_PER_PAGE": per_page,
        "SOURCE_STRAVA_DETAILS_PER_RUN": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.update({f"SOURCE_STRAVA_{k}": v for k, v in strava_settings(emulator).items()})
    return env


def strava_settings(emulator: Any) -> dict[str, str]:
    values = emulator.source_settings(30)
    return {name.removeprefix("SOURCE_STRAVA_"): value for name, value in values.items()}


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "humanapi_project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_connections(count: int, emulator: Any) -> list[str]:
    """`count` active Strava connections spread over TENANTS Applications, with live tokens
    issued by the emulator (as a finished Connect flow leaves them), nothing enqueued yet."""
    from connect.services import application_create, human_for_session
    from sources.models import Connection, ConnectionStatus
    from tests.emulators.oauth_code import Grant

    apps = [application_create(name=f"bench tenant {n}", origins=[]).application for n in range(TENANTS)]
    connections = []
    for n in range(count):
        human = human_for_session(apps[n % TENANTS], f"athlete-{n}", f"athlete-{n}@example.com")
        athlete = str(200_000 + n)
        access, token = emulator.issue(Grant(athlete, ("read", "activity:read_all")))
        connection = Connection(human=human, source="strava", status=ConnectionStatus.ACTIVE, external_user_id=athlete)
        data = {"access_token": access, "refresh_token": token.refresh_token, "token_type": "Bearer"}
        data["user_id"] = athlete
        connection.set_credentials(data, datetime.fromtimestamp(token.expires_at, UTC))
        connections.append(connection)
    Connection.objects.bulk_create(connections, batch_size=500)
    return [c.pk for c in connections]


def start_workers(env: dict[str, str], concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    queue = env["CELERY_TASK_DEFAULT_QUEUE"]
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "humanapi_project",
            "worker",
            "-Q",
            queue,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "ready." in log.read_text(errors="replace"):
            return process
        if process.poll() is not None:
            break
        time.sleep(0.3)
    process.terminate()
    raise RuntimeError("the Celery worker did not start:\n" + log.read_text(errors="replace")[-3000:])


def main() -> None:
    args = arguments()
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith("postgres"):
        sys.exit("set DATABASE_URL to a PostgreSQL server (a database of its own is made there)")
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
    name = f"humanapi_bench_budget_{os.getpid()}"
    database_url = bench_database_url(base, name)
    admin(base, f"CREATE DATABASE {name}")
    sys.path.insert(0, str(ROOT))
    from tests.emulators.strava import StravaEmulator, synthetic

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the emulator's access log
    emulator = StravaEmulator()
    emulator.windows = (args.window, 86400)
    emulator.read_limit = (args.limit, 100_000_000)
    emulator.limit = (2 * args.limit, 200_000_000)  # the overall limit, above the reads as at Strava
    emulator.usage_window = [int(time.time() // w) for w in emulator.windows]
    emulator.start()
    activities = max(1, args.pages - 1)
    for n in range(activities):
        start = datetime.now(UTC) - timedelta(days=n + 1)
        emulator.put(synthetic(10_000_000_000 + n, start, "Europe/Paris", "Run"))
    workers: subprocess.Popen[bytes] | None = None
    logs = Path(tempfile.mkdtemp(prefix="bench-budget-"))
    try:
        env = environment(args, database_url, redis_url, emulator)
        setup_django(env)
        from django.db import connection as db

        from sources.models import Connection, RateBudget, SyncRun
        from sources.tasks import sync_connection

        ids = make_connections(args.connections, emulator)
        workers = start_workers(env, args.concurrency, logs / "worker.log")
        print(
            f"{args.connections:,} connections of {TENANTS} tenants, one Strava application; emulator and budget: "
            f"{args.limit} requests per {args.window} s; {args.pages} call(s) per history; "
            f"{args.concurrency} worker processes; budget in {'Redis' if args.redis_budget else 'PostgreSQL'}"
        )
        began = time.monotonic()
        for connection_id in ids:
            sync_connection.delay(connection_id)
        done = 0
        while time.monotonic() - began < args.timeout:
            done = Connection.objects.filter(pk__in=ids, history_synced_at__isnull=False).count()
            if done == len(ids):
                break
            time.sleep(0.25)
        elapsed = time.monotonic() - began
        needed = args.connections * args.pages
        minimum = needed / args.limit * args.window
        runs = SyncRun.objects.count()
        print(f"  histories stored:   {done:,} of {len(ids):,}")
        print(f"  requests needed:    {needed:,}; made {emulator.calls['activities']:,}")
        print(f"  429s received:      {emulator.calls['429']:,}")
        print(f"  sync runs recorded: {runs:,} (a connection waiting for the budget records none)")
        print(f"  total time:         {elapsed:.1f} s")
        print(f"  theoretical minimum {minimum:.1f} s ({needed:,} / {args.limit} x {args.window} s)")
        if not args.redis_budget:
            print(f"  budget rows:        {RateBudget.objects.count()}")
        if done < len(ids):
            print("  (timed out)\n" + (logs / "worker.log").read_text(errors="replace")[-3000:])
        print(f"budget_429s={emulator.calls['429']} time_ratio={elapsed / minimum:.2f}")
        db.close()
    finally:
        if workers is not None:
            workers.terminate()
            try:
                workers.wait(timeout=30)
            except subprocess.TimeoutExpired:
                workers.kill()
        emulator.stop()
        import redis

        client = redis.Redis.from_url(redis_url)
        queue = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "")
        if queue.startswith("bench-budget-"):
            client.delete(queue)
        for key in client.scan_iter("hapi:budget:strava:*"):
            client.delete(key)
        admin(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
