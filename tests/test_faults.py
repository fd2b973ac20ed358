"""Faults on real processes (gunicorn, Celery workers over Redis, PostgreSQL): a worker killed in
the middle of a history sync, the database connection cut under a running sync, two workers told
to sync one connection. Each ends as a sync without the fault would: every record stored once,
the cursor where the provider's data ends, and a run history that says what happened."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection as db
from django.utils import timezone

from connect.models import Application
from data_api.models import Series
from sources.models import Connection, SyncKind, SyncOutcome, SyncRun
from sources.providers.demo import TZ_OFFSET
from sources.sync import connection_sync
from sources.types import RECORD_TYPES
from tests.conftest import Persona
from tests.data_api_helpers import demo_connection, stored_records
from tests.emulators.webhook_receiver import running_receiver
from tests.factories import make_human
from tests.live import ROOT, LiveStack, free_port, kill_tree, start_stack, start_worker, stop_stack, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

HISTORY = {"DEMO_HISTORY_DAYS": "25", "DEMO_HEART_RATE_INTERVAL_MINUTES": "1"}


@pytest.fixture
def stack(django_db_setup: None, django_db_blocker: Any, tmp_path: Path) -> Iterator[LiveStack]:
    env = {
        **HISTORY,
        # A dead worker's claim is taken over after 10 s, its unacknowledged task redelivered
        # after 15 s; a run that lost the database is tried again a second later.
        "SYNC_CLAIM_TIMEOUT": "10",
        "BROKER_VISIBILITY_TIMEOUT": "15",
        "SYNC_RETRY_BASE_SECONDS": "1",
    }
    live = start_stack(tmp_path, env)
    try:
        yield live
    finally:
        stop_stack(live)


def enqueue(stack: LiveStack, connection: Connection) -> None:
    """What Connect and beat do: a sync task on the stack's own broker and queue."""
    stack.manage(
        "shell", "-c", f"from sources.tasks import sync_connection; sync_connection.delay({str(connection.pk)!r})"
    )


def wait_for_a_few_days(stack: LiveStack, connection: Connection) -> None:
    """Until the history sync running on the stack has stored a few days."""
    wait_until(
        lambda: Series.objects.filter(connection=connection).count() >= 4,
        timeout=60,
        message="the history sync to store a few days:\n" + stack.log_tail(2000),
    )


def runs_of(connection: Connection) -> list[SyncRun]:
    return list(SyncRun.objects.filter(connection=connection).order_by("started_at"))


def history_done(connection: Connection) -> list[SyncRun]:
    runs = runs_of(connection)
    return runs if runs and runs[-1].outcome == SyncOutcome.SUCCEEDED else []


def contents(connection: Connection, before: date) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored record of the connection filed before `before`, by type, after checking
    that no provider id is stored twice."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for kind in RECORD_TYPES:
        stored = stored_records(kind, connection_id=connection.pk)
        ids = [r.external_id for r in stored]
        assert len(ids) == len(set(ids)), f"{kind}: a record stored twice"
        kept = sorted((r.external_id, r.start_time, r.value) for r in stored if r.local_day < before)
        if kept:
            out[kind] = kept
    return out


@pytest.fixture
def reference(settings: Any, alice: Persona) -> Iterator[Any]:
    """What a sync without faults stores: the same Demo account synced here, in this process."""
    settings.DEMO_HISTORY_DAYS = int(HISTORY["DEMO_HISTORY_DAYS"])
    settings.DEMO_HEART_RATE_INTERVAL_MINUTES = int(HISTORY["DEMO_HEART_RATE_INTERVAL_MINUTES"])

    def made() -> tuple[Connection, dict[str, list[tuple[Any, ...]]], date]:
        human = make_human(alice.app, "reference-user", "reference@example.com")
        connection = demo_connection(human)
        run = connection_sync(connection_id=connection.pk)
        assert run is not None and run.outcome == SyncOutcome.SUCCEEDED
        # Today's and yesterday's local days are still being written (a sync later holds more).
        before = (timezone.now() + timedelta(minutes=TZ_OFFSET)).date() - timedelta(days=1)
        return connection, contents(connection, before), before

    yield made


def assert_like_reference(connection: Connection, reference: Any) -> None:
    ref_connection, expected, before = reference()
    got = contents(connection, before)
    assert sorted(got) == sorted(expected)
    for kind in expected:
        assert got[kind] == expected[kind], f"{kind}: {len(got[kind])} stored, {len(expected[kind])} expected"
    connection.refresh_from_db()
    ref_connection.refresh_from_db()
    assert connection.cursor["day"] == ref_connection.cursor["day"]
    assert connection.history_synced_at is not None and connection.sync_claim == ""


def test_a_worker_killed_mid_history_sync_is_taken_over_by_its_restart(
    stack: LiveStack, alice: Persona, reference: Any, tmp_path: Path
) -> None:
    connection = demo_connection(alice.human)
    enqueue(stack, connection)
    wait_for_a_few_days(stack, connection)
    kill_tree(stack.processes[1])  # the worker and its pool, mid-sync, with no chance to clean up
    [cut] = runs_of(connection)
    assert cut.outcome == SyncOutcome.RUNNING and cut.kind == SyncKind.HISTORY
    days_stored = Series.objects.filter(connection=connection).count()
    assert days_stored < int(HISTORY["DEMO_HISTORY_DAYS"]), "the sync ended before the kill"

    start_worker(stack, tmp_path / "worker-restarted.log")
    runs = wait_until(
        lambda: history_done(connection), timeout=120, message="the sync to resume:\n" + stack.log_tail(3000)
    )
    # The task the dead worker never acknowledged came back; its run took over the stale claim,
    # said the cut run was interrupted, and went on from the cursor (not from the start).
    assert [r.outcome for r in runs] == [SyncOutcome.FAILED, SyncOutcome.SUCCEEDED]
    assert "interrupted" in runs[0].error
    assert runs[1].kind == SyncKind.HISTORY
    assert runs[1].counts["heart_rate"]["read"] < 1440 * (int(HISTORY["DEMO_HISTORY_DAYS"]) - days_stored + 3)
    assert_like_reference(connection, reference)


def test_a_sync_whose_database_connection_is_cut_goes_on_from_its_cursor(
    stack: LiveStack, alice: Persona, reference: Any
) -> None:
    connection = demo_connection(alice.human)
    enqueue(stack, connection)
    wait_for_a_few_days(stack, connection)
    with db.cursor() as cursor:  # every other session of the test database: the worker's, the web's
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1
    runs = wait_until(
        lambda: history_done(connection), timeout=90, message="the sync to resume:\n" + stack.log_tail(3000)
    )
    outcomes = [r.outcome for r in runs]
    assert outcomes[-1] == SyncOutcome.SUCCEEDED and SyncOutcome.RUNNING not in outcomes
    if len(runs) > 1:  # the cut landed inside the run (not between two of its statements' retries)
        assert runs[0].outcome == SyncOutcome.RETRYING and "database connection lost" in runs[0].error
    assert_like_reference(connection, reference)
    assert "Traceback" not in stack.logs[1].read_text(errors="replace")


def test_two_workers_told_to_sync_one_connection_run_it_once_at_a_time(
    stack: LiveStack, alice: Persona, reference: Any, tmp_path: Path
) -> None:
    start_worker(stack, tmp_path / "worker-2.log")
    connection = demo_connection(alice.human)
    enqueue(stack, connection)
    enqueue(stack, connection)
    runs = wait_until(lambda: history_done(connection), timeout=90, message="the sync:\n" + stack.log_tail(3000))

    def settled() -> list[SyncRun]:
        connection.refresh_from_db()
        return runs_of(connection) if not connection.sync_claim else []

    runs = wait_until(settled, timeout=60, message="the claim to be released")
    # One history run; the second request, which found the claim held, was served by one more
    # (incremental) run after it, never beside it.
    assert [r.kind for r in runs][:1] == [SyncKind.HISTORY]
    assert all(r.outcome == SyncOutcome.SUCCEEDED for r in runs)
    for earlier, later in itertools.pairwise(runs):
        assert earlier.finished_at is not None and earlier.finished_at <= later.started_at
    assert_like_reference(connection, reference)


def start_redis(port: int, log: Path) -> subprocess.Popen[bytes]:
    """A Redis of the test's own, which keeps nothing on disk (as the machine's own does)."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_until(lambda: _answers(port), timeout=10, message="redis to start")
    return process


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_a_broker_restarted_with_syncs_and_webhooks_queued_loses_nothing(
    django_db_setup: None, django_db_blocker: Any, settings: Any, alice: Persona, tmp_path: Path
) -> None:
    port = free_port()
    redis = start_redis(port, tmp_path / "redis.log")
    settings.SYNC_REQUEUE_AFTER = 5  # this process connects the source (and sets when it is due again)
    stack = start_stack(
        tmp_path,
        {
            "DEMO_HISTORY_DAYS": "3",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0",
            "SYNC_REQUEUE_AFTER": "5",
            "NOTIFY_REQUEUE_AFTER": "5",
            "BEAT_INTERVAL": "1",
        },
        worker=False,
    )
    try:
        with running_receiver(alice.app.webhook_secret) as receiver:
            Application.objects.filter(pk=alice.app.application.pk).update(notify_url=receiver.url)
            connection = demo_connection(alice.human)
            # The history sync and a webhook, in the broker's queue with no worker running yet.
            enqueue(stack, connection)
            stack.manage(
                "shell",
                "-c",
                "from sources.models import Connection; from data_api.notifications import notify_connection_event; "
                f"notify_connection_event(Connection.objects.get(pk={str(connection.pk)!r}), 'source.connected')",
            )
            assert _queued(port) >= 2
            redis.kill()  # restarted: it comes back empty
            redis.wait(timeout=10)
            redis = start_redis(port, tmp_path / "redis.log")
            assert _queued(port) == 0

            start_worker(stack, tmp_path / "worker.log")
            beat = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "celery"),
                    "-A",
                    "humanapi_project",
                    "beat",
                    "-s",
                    str(tmp_path / "beat"),
                ],
                cwd=ROOT,
                env=stack.env,
                stdout=(tmp_path / "beat.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            stack.processes.append(beat)
            stack.logs.append(tmp_path / "beat.log")
            runs = wait_until(
                lambda: history_done(connection), timeout=90, message="the sync:\n" + stack.log_tail(3000)
            )
            assert [r.kind for r in runs] == [SyncKind.HISTORY]
            wait_until(
                lambda: receiver.events("source.connected") and receiver.events("data.updated"),
                timeout=60,
                message="the webhooks",
            )
            assert len(receiver.events("source.connected")) == 1
            assert Series.objects.filter(connection=connection).count() == 3
    finally:
        stop_stack(stack)
        redis.kill()


def _queued(port: int) -> int:
    """Messages waiting in the broker's queues (Redis lists of the stack's queues)."""
    import redis as redis_client

    client = redis_client.Redis(host="127.0.0.1", port=port)
    return sum(client.llen(key) for key in client.keys("test-*"))
