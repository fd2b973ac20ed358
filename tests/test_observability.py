"""What operators see: /healthz and /readyz, Prometheus metrics behind METRICS_TOKEN, and JSON log
lines, over real HTTP against gunicorn and a Celery worker (tests/live.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from data_api.models import AttemptOutcome, DeliveryAttempt, Notification
from humanapi_project import metrics
from sources.models import Connection, SyncOutcome, SyncRun
from tests.conftest import Persona
from tests.factories import make_application, make_connection
from tests.live import REDIS_URL, LiveStack, start_stack, stop_stack, wait_until
from tests.test_notifications import connect_demo_over_http, finished_history_run

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-token-for-the-tests-0123456789"
# Nothing listens on port 1 of loopback: every connection is refused at once.
CLOSED = "127.0.0.1:1"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def observed(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    """JSON logs, metrics on, a token endpoint that says 429 after two wrong secrets."""
    extra = {
        "LOG_FORMAT": "json",
        "METRICS_TOKEN": TOKEN,
        "RATE_LIMIT_TOKEN_FAILURES": "2",
        "RATE_LIMIT_WINDOW": "86400",  # a day: a window turning mid-test would restart the count
        "RATE_LIMIT_REDIS_URL": "",
        "ALLOW_PRIVATE_NOTIFY_URLS": "1",
    }
    stack = start_stack(tmp_path_factory.mktemp("observed"), extra)
    try:
        yield stack
    finally:
        stop_stack(stack)


@pytest.fixture(scope="module")
def no_broker(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    stack = start_stack(
        tmp_path_factory.mktemp("no-broker"),
        {"CELERY_BROKER_URL": f"redis://{CLOSED}/0", "METRICS_TOKEN": TOKEN, "LOG_FORMAT": "text"},
        worker=False,
    )
    try:
        yield stack
    finally:
        stop_stack(stack)


@pytest.fixture(scope="module")
def no_database(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    stack = start_stack(
        tmp_path_factory.mktemp("no-database"),
        {"DATABASE_URL": f"postgres://postgres@{CLOSED}/nothing", "METRICS_TOKEN": "", "LOG_FORMAT": "text"},
        worker=False,
    )
    try:
        yield stack
    finally:
        stop_stack(stack)


def scrape(stack: LiveStack) -> Samples:
    answer = requests.get(stack.url("/metrics"), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return parse(answer.text)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(errors="replace").splitlines() if line.startswith("{")]


# --- probes --------------------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_it_answers_the_probes_whatever_the_host(observed: LiveStack) -> None:
    health = requests.get(observed.url("/healthz"), timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert health.headers["X-Request-Id"]
    # Probes address a process by its IP, which ALLOWED_HOSTS does not list.
    by_ip = requests.get(observed.url("/healthz"), headers={"Host": "10.20.30.40:8000"}, timeout=5)
    assert by_ip.status_code == 200

    started = time.monotonic()
    ready = requests.get(observed.url("/readyz"), headers={"Host": "10.20.30.40:8000"}, timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
    assert time.monotonic() - started < 2

    posted = requests.post(observed.url("/healthz"), timeout=5)
    assert posted.status_code == 405 and posted.headers["Allow"] == "GET, HEAD"
    assert posted.json()["statusCode"] == 405 and posted.json()["requestId"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_it_is_not_ready_naming_the_broker_it_cannot_reach(no_broker: LiveStack) -> None:
    started = time.monotonic()
    answer = requests.get(no_broker.url("/readyz"), timeout=10)
    assert time.monotonic() - started < 3
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("unreachable")
    assert CLOSED not in answer.text  # nothing about where the broker is
    assert requests.get(no_broker.url("/healthz"), timeout=5).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_it_is_alive_without_a_database_but_not_ready(no_database: LiveStack) -> None:
    assert requests.get(no_database.url("/healthz"), timeout=5).json() == {"status": "ok"}
    answer = requests.get(no_database.url("/readyz"), timeout=10)
    assert answer.status_code == 503
    assert answer.json()["checks"]["database"].startswith("unreachable")
    assert answer.json()["checks"]["broker"] == "ok"


# --- metrics -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_serves_no_metrics_without_a_token(no_database: LiveStack) -> None:
    answer = requests.get(no_database.url("/metrics"), headers={"Authorization": "Bearer anything"}, timeout=5)
    assert answer.status_code == 404
    assert answer.json()["statusCode"] == 404 and answer.json()["requestId"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_it_serves_metrics_only_with_the_token(observed: LiveStack) -> None:
    bare = requests.get(observed.url("/metrics"), timeout=5)
    assert bare.status_code == 401 and bare.headers["WWW-Authenticate"].startswith("Bearer")
    assert bare.json()["statusCode"] == 401
    wrong = requests.get(observed.url("/metrics"), headers={"Authorization": f"Bearer {TOKEN}x"}, timeout=5)
    assert wrong.status_code == 401
    basic = requests.get(observed.url("/metrics"), headers={"Authorization": f"Basic {TOKEN}"}, timeout=5)
    assert basic.status_code == 401

    right = requests.get(observed.url("/metrics"), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert right.status_code == 200
    assert right.headers["Content-Type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(right.text)}
    assert {
        "humanapi_sync_runs",
        "humanapi_sync_runs_running",
        "humanapi_sync_duration_seconds",
        "humanapi_sync_records_written",
        "humanapi_sync_queue_waiting",
        "humanapi_sync_queue_lag_seconds",
        "humanapi_webhook_backlog",
        "humanapi_webhook_oldest_pending_seconds",
        "humanapi_webhook_attempts",
        "humanapi_http_rate_limited",
    } <= set(families)
    assert all(family.documentation for family in families.values())


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_it_counts_a_sync_a_failed_webhook_and_a_429(observed: LiveStack) -> None:
    before = scrape(observed)
    # The receiver's port is closed: the worker's delivery fails, and is retried later.
    created = make_application("Metrics app", notify_url=f"http://{CLOSED}/hooks")
    client_id, secret = created.application.client_id, created.client_secret
    human_id = connect_demo_over_http(observed, client_id, secret, "metrics-1")
    run = finished_history_run(human_id)
    wait_until(
        lambda: DeliveryAttempt.objects.filter(
            notification__application=created.application, outcome=AttemptOutcome.UNREACHABLE
        ).exists(),
        timeout=60,
        message="a failed webhook delivery",
    )
    wrong = {"client_id": client_id, "client_secret": "not-the-secret", "type": "access", "client_user_id": "x"}
    statuses = [requests.post(observed.url("/v1/connect/token"), json=wrong, timeout=10).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]

    after = scrape(observed)

    assert run.outcome == SyncOutcome.SUCCEEDED
    runs = "humanapi_sync_runs_total"
    assert (
        value(after, runs, source="demo", outcome="succeeded")
        >= value(before, runs, source="demo", outcome="succeeded") + 1
    )
    took = "humanapi_sync_duration_seconds"
    assert value(after, f"{took}_count", source="demo") >= value(before, f"{took}_count", source="demo") + 1
    assert value(after, f"{took}_sum", source="demo") > value(before, f"{took}_sum", source="demo")
    assert value(after, f"{took}_bucket", source="demo", le="+Inf") == value(after, f"{took}_count", source="demo")
    created_by_run = sum(counts.get("created", 0) for counts in run.counts.values())
    assert created_by_run > 1000
    written = "humanapi_sync_records_written_total"
    assert (
        value(after, written, source="demo", change="created")
        >= value(before, written, source="demo", change="created") + created_by_run
    )
    failed = "humanapi_webhook_attempts_total"
    assert value(after, failed, outcome="unreachable") >= value(before, failed, outcome="unreachable") + 1
    assert value(after, "humanapi_webhook_backlog") >= 1  # retried later, not given up
    assert value(after, "humanapi_webhook_oldest_pending_seconds") > 0
    limited = "humanapi_http_rate_limited_total"
    assert value(after, limited) == value(before, limited) + 1
    # The run that started took the connection out of the queue.
    assert Connection.objects.get(human_id=human_id).sync_queued_at is None


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_it_shows_the_lag_of_a_sync_waiting_for_the_broker(no_broker: LiveStack) -> None:
    assert value(scrape(no_broker), "humanapi_sync_queue_waiting") == 0
    created = make_application("Queued app")
    connect_demo_over_http(no_broker, created.application.client_id, created.client_secret, "queued-1")
    first = scrape(no_broker)
    time.sleep(1.2)
    later = scrape(no_broker)

    assert value(first, "humanapi_sync_queue_waiting") == 1
    assert value(later, "humanapi_sync_queue_lag_seconds") >= value(first, "humanapi_sync_queue_lag_seconds") + 1


@pytest.mark.django_db
def test_it_changes_no_number_when_beat_folds_the_history(alice: Persona) -> None:
    """What beat folds into tallies is what a scrape would have read from the rows."""
    now = timezone.now()
    connection = make_connection(alice.human)
    counts = {"activities": {"read": 3, "created": 2, "updated": 1, "deleted": 1}, "sleeps": {"created": 4}}
    for age_minutes, took, outcome in [
        (90, 0.5, "succeeded"),
        (30, 70, "partial"),
        (6, 4000, "failed"),
        (5, 2, "succeeded"),  # finished exactly at the first fold's cutoff: left for the next one
        (1, 3, "succeeded"),
    ]:
        finished = now - timedelta(minutes=age_minutes)
        SyncRun.objects.create(
            connection=connection,
            kind="incremental",
            started_at=finished - timedelta(seconds=took),
            finished_at=finished,
            outcome=outcome,
            counts=counts,
        )
    SyncRun.objects.create(connection=connection, kind="incremental", started_at=now)  # running
    notification = Notification.objects.create(
        event_id="e-fold", application=alice.app.application, event_type="source.connected", payload={}
    )
    for age_minutes, outcome in [
        (60, "delivered"),
        (20, "status"),
        (10, AttemptOutcome.UNFINISHED),
        (0, AttemptOutcome.UNFINISHED),
    ]:
        attempt = DeliveryAttempt.objects.create(notification=notification, outcome=outcome)
        DeliveryAttempt.objects.filter(pk=attempt.pk).update(at=now - timedelta(minutes=age_minutes))

    def numbers(at: Any) -> Samples:
        samples: Samples = {}
        for family in metrics.collect_metrics(at):
            for sample in family.samples:
                if "queue_lag" not in sample.name and "oldest_pending" not in sample.name:
                    samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    unfolded = numbers(now)
    metrics.fold(now)
    assert numbers(now) == unfolded
    metrics.fold(now)
    assert numbers(now) == unfolded
    later = now + timedelta(hours=1)
    unfolded_later = numbers(later)
    metrics.fold(later)  # everything folded, even what was recent
    assert numbers(later) == unfolded_later

    assert value(unfolded, "humanapi_sync_runs_total", source="demo", outcome="succeeded") == 3
    assert value(unfolded, "humanapi_sync_runs_running", source="demo") == 1
    took = "humanapi_sync_duration_seconds_bucket"
    bounds = ("1.0", "5.0", "60.0", "300.0", "3600.0", "+Inf")
    assert [value(unfolded, took, source="demo", le=le) for le in bounds] == [1, 3, 3, 4, 4, 5]
    assert value(unfolded, "humanapi_sync_duration_seconds_sum", source="demo") == pytest.approx(4075.5)
    written = "humanapi_sync_records_written_total"
    assert value(unfolded, written, source="demo", change="created") == 5 * 6
    assert value(unfolded, written, source="demo", change="deleted") == 5
    attempts = "humanapi_webhook_attempts_total"
    # The attempt claimed just now is still under way: it counts once it has an outcome, or once
    # it is old enough to have been cut off.
    assert [value(unfolded, attempts, outcome=o) for o in ("delivered", "status", "unfinished")] == [1, 1, 1]
    assert value(unfolded_later, attempts, outcome="unfinished") == 2


@pytest.mark.django_db
def test_it_counts_429s_in_redis_when_the_rate_limits_do(settings: Any) -> None:
    settings.RATE_LIMIT_REDIS_URL = REDIS_URL
    before = value(collected(), "humanapi_http_rate_limited_total")
    metrics.count_rate_limited()
    metrics.count_rate_limited()
    assert value(collected(), "humanapi_http_rate_limited_total") == before + 2
    assert metrics.Tally.objects.filter(key=metrics.RATE_LIMITED).count() == 0  # not in PostgreSQL


def collected() -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in metrics.collect_metrics()
        for sample in family.samples
    }


# --- logs ----------------------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_it_writes_a_json_line_per_request_and_no_secret(observed: LiveStack) -> None:
    client_id = make_application("Logged app").application.client_id
    secrets = ["connect-token-SECRET-1", "oauth-code-SECRET-2", "oauth-state-SECRET-3", "client-secret-SECRET-4"]
    page = requests.get(
        observed.url("/connect/"), params={"token": secrets[0]}, headers={"X-Request-Id": "obs-json-0001"}, timeout=10
    )
    requests.get(observed.url("/connect/oauth/callback"), params={"code": secrets[1], "state": secrets[2]}, timeout=10)
    requests.post(
        observed.url("/v1/connect/token"),
        json={"client_id": client_id, "client_secret": secrets[3], "type": "refresh"},
        timeout=10,
    )
    requests.get(observed.url("/metrics"), headers={"Authorization": f"Bearer {TOKEN}-wrong"}, timeout=10)
    requests.get(observed.url("/healthz"), headers={"X-Request-Id": "obs-json-health"}, timeout=10)
    web_log = observed.logs[0]

    line = wait_until(
        lambda: next((e for e in json_lines(web_log) if e.get("request_id") == "obs-json-0001"), None),
        timeout=10,
        message="the request's log line",
    )
    assert line["method"] == "GET" and line["path"] == "/connect/" and line["status"] == page.status_code
    assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0
    assert line["client"] == "127.0.0.1" and line["logger"] == "humanapi.request"
    assert line["level"] in ("INFO", "WARNING") and line["time"].endswith("Z")
    wait_until(
        lambda: (
            {"/connect/oauth/callback", "/v1/connect/token", "/metrics"} <= {e.get("path") for e in json_lines(web_log)}
        ),
        timeout=10,
        message="every request's line",
    )
    assert not any(e.get("request_id") == "obs-json-health" for e in json_lines(web_log))  # a probe that succeeded
    text = web_log.read_text(errors="replace")
    json_text = "\n".join(line for line in text.splitlines() if line.startswith("{"))
    for secret in [*secrets, TOKEN]:
        assert secret not in json_text
    # The worker's own records are JSON lines too.
    worker_lines = json_lines(observed.logs[1])
    assert any(e["logger"].startswith("celery") for e in worker_lines), observed.log_tail()


# --- settings ------------------------------------------------------------------------------


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("name", "value_", "says"),
    [
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be text or json, got 'xml'"),
        ("METRICS_TOKEN", "1", "METRICS_TOKEN must be at least 16 printable characters"),
    ],
)
def test_it_names_a_bad_observability_setting_at_startup(name: str, value_: str, says: str) -> None:
    checked = run(["manage.py", "check"], **{name: value_})
    assert checked.returncode != 0 and says in checked.stderr
    served = run(["-c", "import humanapi_project.wsgi"], **{name: value_})
    assert served.returncode != 0 and says in served.stderr
