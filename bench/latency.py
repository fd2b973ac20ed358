"""From a change at the provider to the tenant: push notifications against polling.

Two runs, each in a database of its own on DATABASE_URL's server (dropped at the end), with a
real stack: gunicorn (as the README runs it), a Celery worker for syncs, one for webhook
deliveries, and beat, over Redis (BENCH_REDIS_URL, else TEST_REDIS_URL, else db 0 on
127.0.0.1), against the Strava, Oura, Withings and Google Health (source `fitbit`) emulators
over HTTP. One user of one Application is connected to all of them; the Application's notify URL
is a receiver checking each signature.

A change is a new activity made at the emulator: a Strava activity uploaded, an Oura workout, a
Withings workout (notified as `appli=16` with its `startdate`/`enddate`), a Google Health
exercise session (an `UPSERT` notification of `exercise` over its interval). For each, from the
moment it is made: (a) until the Data API, polled over HTTP every 50 ms with the user's access
token, serves it; (b) until the receiver has the `data.updated` event of the run that stored it
(the first of that source whose `changedAt` is not before the record's `updatedAt`).

- `push`: PUBLIC_BASE_URL set; the worker makes the application subscriptions as it starts
  (Strava, Oura), Withings' per-user ones once the user is connected (the push check, run here
  as beat would), and Google Health's subscriber is made as its operator would (the emulator's
  two verification POSTs). Each emulator POSTs its documented notification as the change is made.
  The changes are made one at a time per source (the four sources side by side), the next when
  both (a) and (b) came.
- `polling`: no subscriptions; SYNC_INTERVAL=<--interval> (60 s, its minimum) with BEAT_INTERVAL=1.
  The same kind of changes are made spread over one interval; each is seen at the next scheduled
  sync, so this figure scales with SYNC_INTERVAL (the default is 3600 s). Each source's
  SOURCE_<SLUG>_SYNC_INTERVAL is set to it too: Withings and Google Health otherwise keep their
  own hourly schedule.

In both runs the limits a single user this busy would reach are raised (the Data API's per-user
and per-app limits, RATE_LIMIT_PUSH_PER_CONNECTION, the Strava, Withings and Google Health limits
at the emulators and as declared): what is measured is the path, not the limits.

Last line: `webhook_p99_s=<x> polling_p99_s=<y>` (receiver-side p99 of each run, all sources).

Usage: bench/latency [--changes N] [--interval S] [--timeout S]
"""

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import admin, bench_database_url

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("strava", "oura", "withings", "fitbit")
GOOGLE_SECRET = "bench-latency-google-subscriber-secret"  # what the operator gives the subscriber
WITHINGS_APPLIS = 6  # the categories a connection is subscribed to (1, 2, 4, 16, 44, 46)
HISTORY_DAYS = 3
CALLBACK = "http://127.0.0.1:8000/connect/oauth/callback"
POLL_EVERY = 0.05  # seconds between two reads of the Data API, per source
TARGET_P99 = 10.0  # seconds, push


@dataclass
class Change:
    source: str
    key: str
    t0: float = 0.0
    served: float | None = None  # when the Data API first served it (epoch seconds)
    stored: float | None = None  # its `updatedAt`
    received: float | None = None  # when the receiver got the event of the run that stored it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wait_for(predicate: Any, timeout: float, what: str, logs: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    tail = ""
    if logs is not None:
        tail = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(logs.glob("*.log")))
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


# --- the stack ------------------------------------------------------------------------------------


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def start_stack(env: dict[str, str], port: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    """gunicorn as the README runs it; a sync worker, a notify worker and beat (fewer worker
    processes than the README's, on a small machine)."""
    bin_dir = ROOT / ".venv/bin"
    queue = env["CELERY_TASK_DEFAULT_QUEUE"]
    celery = [str(bin_dir / "celery"), "-A", "humanapi_project"]
    quiet = ["--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    processes = [
        spawn(
            [str(bin_dir / "gunicorn"), "humanapi_project.wsgi", "-b", f"127.0.0.1:{port}", "--workers", "4",
             "--access-logfile", "-"],
            env, logs / "web.log",
        ),
        spawn([*celery, "worker", "-Q", f"{queue}-interactive,{queue}", "--concurrency", "4", "-n", "sync@%h", *quiet],
              env, logs / "sync.log"),
        spawn([*celery, "worker", "-Q", f"{queue}-notify", "--concurrency", "2", "-n", "notify@%h", *quiet],
              env, logs / "notify.log"),
        spawn([*celery, "beat", "-s", str(logs / "beat-schedule")], env, logs / "beat.log"),
    ]  # fmt: skip

    def up() -> bool:
        try:
            requests.get(f"http://127.0.0.1:{port}/connect/", timeout=1, allow_redirects=False)
        except requests.RequestException:
            return False
        return all("ready." in (logs / name).read_text(errors="replace") for name in ("sync.log", "notify.log"))

    wait_for(up, 90, "gunicorn and the workers", logs)
    return processes


def stop_stack(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# --- one run, in a child process (its own settings) -----------------------------------------------


def updated_events(receiver: Any) -> list[tuple[str, float, float]]:
    """(source, changedAt, received at) of each `data.updated` event that touched activities,
    first delivery of each event."""
    seen, found = set(), []
    for delivery in list(receiver.deliveries):
        if not delivery.signature_valid:
            continue
        event = delivery.event
        counts = event.get("dataTypes", {}).get("activities", {})
        if event["eventType"] != "data.updated" or event["eventId"] in seen or not any(counts.values()):
            continue
        seen.add(event["eventId"])
        found.append((event["source"], epoch(event["changedAt"]), delivery.received_at))
    return found


def source_key(item: dict[str, Any]) -> str:
    """The provider's id of a served activity: `id` in its sourceData (Strava, Oura, Withings), or
    the last part of a Google Health data point's name."""
    data = item.get("sourceData") or {}
    if "id" in data:
        return str(data["id"])
    return str(data.get("name") or data.get("dataPointName") or "").rsplit("/", 1)[-1]


def match(changes: list[Change], receiver: Any) -> None:
    events = updated_events(receiver)
    for change in changes:
        if change.received is not None or change.stored is None:
            continue
        stored = change.stored
        after = [e for e in events if e[0] == change.source and e[1] >= stored]
        if after:
            change.received = min(after, key=lambda e: e[1])[2]


class Poller:
    """Reads each source's activities over HTTP every POLL_EVERY seconds while a change of it
    is not served yet, and notes when each is."""

    def __init__(self, base: str, token: str, changes: list[Change], sources: tuple[str, ...]) -> None:
        self.base, self.token, self.changes = base, token, changes
        self.stop = threading.Event()
        self.errors = 0
        self.threads = [threading.Thread(target=self.poll, args=(s,), daemon=True) for s in sources]
        for thread in self.threads:
            thread.start()

    def poll(self, source: str) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {self.token}"}
        while not self.stop.is_set():
            pending = [c for c in list(self.changes) if c.source == source and c.t0 and c.served is None]
            if pending:
                since = min(c.t0 for c in pending) - 2
                params = {"source": source, "updated_since": iso(since), "limit": "500"}
                try:
                    answer = session.get(self.base + "/v1/human/activities", params=params, headers=headers, timeout=10)
                except requests.RequestException:
                    answer = None
                now = time.time()
                if answer is None or answer.status_code != 200:
                    self.errors += 1
                else:
                    items = {source_key(item): item for item in answer.json()}
                    for change in pending:
                        if change.key in items:
                            change.served, change.stored = now, epoch(items[change.key]["updatedAt"])
            self.stop.wait(POLL_EVERY)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


def run(mode: str, changes_wanted: int, interval: int, timeout: float) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.emulators.google_health import GoogleHealthEmulator
    from tests.emulators.oura import OuraEmulator, workout
    from tests.emulators.strava import StravaEmulator, synthetic
    from tests.emulators.webhook_receiver import running_receiver
    from tests.emulators.withings import WithingsEmulator

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the emulators' access logs
    today = datetime.now(UTC).date()
    strava = StravaEmulator()
    strava.limit = strava.read_limit = (10**6, 10**7)
    strava.start()
    strava.seed(today - timedelta(days=HISTORY_DAYS - 1), today)
    oura = OuraEmulator()
    oura.start()
    oura.seed(today - timedelta(days=HISTORY_DAYS - 1), today)
    withings = WithingsEmulator(page_size=100, rate_limit_per_minute=10**7).start()
    google = GoogleHealthEmulator(rate_limit_per_minute=10**7).start()
    logs = Path(tempfile.mkdtemp(prefix=f"bench-latency-{mode}-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    redis_url = os.environ["BENCH_REDIS_URL"]
    queue = f"bench-latency-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        **strava.source_settings(HISTORY_DAYS),
        **oura.source_settings(HISTORY_DAYS),
        **withings.source_settings(HISTORY_DAYS),
        **google.source_settings(HISTORY_DAYS),
        "SOURCE_FITBIT_PUSH_SECRET": GOOGLE_SECRET,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-latency-secret",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "CELERY_BROKER_URL": redis_url,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "ALLOW_HTTP_PROVIDERS": "1",
        "ALLOW_PRIVATE_NOTIFY_URLS": "1",  # the receiver listens on 127.0.0.1
        "PYTHONUNBUFFERED": "1",
        "BEAT_INTERVAL": "1",
        "RATE_LIMIT_DATA_PER_HUMAN": "1000000000",
        "RATE_LIMIT_DATA_PER_APP": "1000000000",
        "RATE_LIMIT_PUSH_PER_CONNECTION": "1000000000",
        "SOURCE_STRAVA_RATE_LIMITS": "1000000/900,10000000/86400",
        "SOURCE_WITHINGS_RATE_LIMITS": "10000000/60",
        "SOURCE_FITBIT_RATE_LIMITS": "10000000/60",
        "SOURCE_FITBIT_USER_RATE_LIMITS": "10000000/60",
    }
    if mode == "push":
        env.update(PUBLIC_BASE_URL=base, PUSH_ENABLED="1")
    else:
        env.update(PUBLIC_BASE_URL="", PUSH_ENABLED="0", SYNC_INTERVAL=str(interval))
        # The operator's interval for each source, which comes before a plugin's own schedule
        # (Withings and Google Health ask for 3600 s).
        env.update({f"SOURCE_{source.upper()}_SYNC_INTERVAL": str(interval) for source in SOURCES})
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "humanapi_project.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from connect.models import Application, Token, TokenKind
    from connect.services import application_create, human_for_session
    from sources.models import Connection, PushStatus, PushSubscription
    from sources.push import callback_url, push_maintain
    from tests.factories import connect_through_oauth

    measured = SOURCES

    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes = start_stack(env, port, logs)
        if mode == "push":
            active = PushSubscription.objects.filter(status=PushStatus.ACTIVE)
            wait_for(
                lambda: active.filter(source="strava").exists() and active.filter(topic="workout/create").exists(),
                60,
                "the subscriptions",
                logs,
            )
        created = application_create(name="bench latency", origins=[])
        human = human_for_session(created.application, "latency-user", "latency-user@example.com")
        with running_receiver(created.webhook_secret) as receiver:
            Application.objects.filter(pk=created.application.pk).update(notify_url=receiver.url)
            ids = [connect_through_oauth(human, slug, CALLBACK).pk for slug in measured]
            settled = Connection.objects.filter(
                pk__in=ids, history_synced_at__isnull=False, sync_claimed_at__isnull=True
            )
            wait_for(lambda: settled.count() == len(ids), 120, "the history syncs", logs)
            if mode == "push":
                # Withings: the push check (beat's, every PUSH_CHECK_INTERVAL) subscribes the new
                # connection with its token; Google Health: the operator's subscriber.
                push_maintain()
                wait_for(lambda: len(withings.subscriptions) == WITHINGS_APPLIS, 60, "the Withings subscriptions", logs)
                if not google.subscribe(callback_url("fitbit"), "Bearer " + GOOGLE_SECRET):
                    raise RuntimeError("the Google Health subscriber was not verified")
                wait_for(lambda: settled.count() == len(ids), 60, "the subscription runs", logs)
            _, token = Token.mint(kind=TokenKind.ACCESS, human=human, ttl=3600)
            changes: list[Change] = []
            poller = Poller(base, token, changes, measured)
            began = time.monotonic()
            now = datetime.now(UTC).replace(microsecond=0)

            def make(n: int, source: str) -> Change:
                # Each change its own interval: Google Health's reconciled stream merges points of the
                # same interval and type (as from two devices), so a repeated one would never be seen.
                start = now - timedelta(hours=2, minutes=n)
                if source == "strava":
                    item = synthetic(30_000_000_000 + n, start, "Europe/Paris", ("Run", "Ride", "Walk")[n % 3])
                    change = Change(source, str(item["id"]))
                    changes.append(change)
                    change.t0 = time.time()
                    strava.create(item)  # announced to the subscription, if there is one
                elif source == "oura":
                    document = {**workout(start.date(), start, n), "id": f"bench-workout-{n}"}
                    change = Change(source, document["id"])
                    changes.append(change)
                    change.t0 = time.time()
                    oura.put("workout", document)
                elif source == "withings":
                    change = Change(source, str(40_000_000 + n))
                    changes.append(change)
                    change.t0 = time.time()
                    withings.add_workout(start, 30 + n % 30, category=(1, 2, 6)[n % 3], row_id=int(change.key))
                else:
                    change = Change(source, str(50_000_000_000 + n))
                    changes.append(change)
                    change.t0 = time.time()
                    kind = ("RUNNING", "WALKING", "BIKING")[n % 3]
                    google.add_exercise(start, 30 + n % 30, kind=kind, point_id=change.key)
                return change

            if mode == "push":

                def one_at_a_time(source: str, numbers: range) -> None:
                    for n in numbers:
                        change = make(n, source)
                        deadline = time.monotonic() + timeout
                        while time.monotonic() < deadline and (change.served is None or change.received is None):
                            match([change], receiver)
                            time.sleep(0.02)

                share = changes_wanted // len(measured)
                threads = [
                    threading.Thread(target=one_at_a_time, args=(s, range(i * share, (i + 1) * share)))
                    for i, s in enumerate(measured)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            else:
                spacing = interval / changes_wanted
                for n in range(changes_wanted):
                    time.sleep(max(0.0, began + n * spacing - time.monotonic()))
                    make(n, measured[n % len(measured)])
                deadline = time.monotonic() + interval + timeout
                while time.monotonic() < deadline:
                    match(changes, receiver)
                    if all(c.served is not None and c.received is not None for c in changes):
                        break
                    time.sleep(0.1)
            poller.close()
            match(changes, receiver)
            elapsed = time.monotonic() - began
        result: dict[str, Any] = {
            "elapsed": elapsed,
            "errors": poller.errors,
            "api": {},
            "receiver": {},
        }
        for source in measured:
            mine = [c for c in changes if c.source == source]
            result["api"][source] = [c.served - c.t0 if c.served else None for c in mine]
            result["receiver"][source] = [c.received - c.t0 if c.received else None for c in mine]
        print("RESULT " + json.dumps(result), flush=True)
    finally:
        stop_stack(processes)
        strava.stop()
        oura.stop()
        withings.stop()
        google.stop()
        import redis

        client = redis.Redis.from_url(redis_url)
        client.delete(queue, f"{queue}-notify", f"{queue}-interactive")
        from django.db import connection as db

        db.close()


# --- the parent: databases, both runs, the figures ------------------------------------------------


def percentiles(values: list[float | None]) -> tuple[float, float, int]:
    """(p50, p99, how many never came)."""
    seen = sorted(v for v in values if v is not None)
    missing = len(values) - len(seen)
    if len(seen) < 2:
        return float("nan"), float("nan"), missing
    return statistics.median(seen), statistics.quantiles(seen, n=100, method="inclusive")[98], missing


def report(title: str, result: dict[str, Any]) -> float:
    print(title)
    print(f"  {'source':8} {'changes':>7}   {'Data API p50 / p99 (s)':>24}   {'receiver p50 / p99 (s)':>24}")
    receiver_p99 = float("nan")
    measured = tuple(result["api"])
    for source in (*measured, "all"):
        pick = measured if source == "all" else (source,)
        api = [v for s in pick for v in result["api"][s]]
        got = [v for s in pick for v in result["receiver"][s]]
        a50, a99, a_missing = percentiles(api)
        r50, r99, r_missing = percentiles(got)
        note = f"   (never came: {a_missing} served, {r_missing} notified)" if a_missing or r_missing else ""
        print(f"  {source:8} {len(api):>7}   {a50:>11.2f} / {a99:<10.2f}   {r50:>11.2f} / {r99:<10.2f}{note}")
        receiver_p99 = r99
    print(f"  ({result['elapsed']:.0f} s; {result['errors']} Data API reads failed)")
    return receiver_p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=200, help="per run, spread over the sources")
    parser.add_argument("--interval", type=int, default=60, help="SYNC_INTERVAL of the polling run (>= 60)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a change may take to be seen")
    parser.add_argument("--run", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run(args.run, args.changes, args.interval, args.timeout)
        return
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith("postgres"):
        sys.exit("set DATABASE_URL to a PostgreSQL server (a database of its own is made there)")
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
    results: dict[str, dict[str, Any]] = {}
    for mode in ("push", "polling"):
        name = f"humanapi_bench_latency_{mode}_{os.getpid()}"
        admin(base, f"CREATE DATABASE {name}")
        try:
            env = {**os.environ, "DATABASE_URL": bench_database_url(base, name), "BENCH_REDIS_URL": redis_url}
            command = [sys.executable, __file__, "--run", mode, "--changes", str(args.changes)]
            command += ["--interval", str(args.interval), "--timeout", str(args.timeout)]
            print(f"{mode}: {args.changes} changes ...", flush=True)
            child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
            assert child.stdout is not None
            for line in child.stdout:
                if line.startswith("RESULT "):
                    results[mode] = json.loads(line.removeprefix("RESULT "))
                else:
                    print("  " + line, end="", flush=True)
            if child.wait() != 0 or mode not in results:
                sys.exit(f"the {mode} run failed")
        finally:
            admin(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    webhook = report(
        "push (the emulators POST signed notifications; the worker fetches what changed):", results["push"]
    )
    polling = report(
        f"polling only (no subscriptions; SYNC_INTERVAL={args.interval} s, BEAT_INTERVAL=1 s, changes spread over "
        f"one interval):",
        results["polling"],
    )
    print(
        "  polling waits for the next scheduled sync: its figures scale with SYNC_INTERVAL (p50 about half of "
        "it, p99 about all of it; the default is 3600 s)"
    )
    print(f"target: push p99 <= {TARGET_P99:.0f} s at the receiver: {'met' if webhook <= TARGET_P99 else 'NOT met'}")
    print(f"webhook_p99_s={webhook:.2f} polling_p99_s={polling:.2f}")


if __name__ == "__main__":
    main()
