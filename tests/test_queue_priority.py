"""Work someone waits for ("sync now", the fetch a provider's notification asks for) goes to the
interactive queue, and a worker takes from that queue first: it never waits behind queued
backfills and scheduled syncs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.core import checks
from django.utils import timezone

from humanapi_project.celery import app
from sources.checks import check_queue_settings
from sources.models import Connection, SyncOutcome, SyncPriority, SyncRun
from sources.services import enqueue_sync
from sources.tasks import wait_for_budget
from tests.app_client import basic
from tests.data_api_helpers import demo_connection
from tests.factories import Persona, make_human
from tests.live import ROOT, LiveStack, start_stack, stop_stack, wait_until


def queue_of(
    name: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, options: dict[str, Any] | None = None
) -> str:
    return str(app.amqp.router.route(options or {}, name, args, kwargs or {})["queue"].name)


def test_interactive_work_is_routed_to_its_own_queue() -> None:
    interactive, default = settings.CELERY_INTERACTIVE_QUEUE, settings.CELERY_TASK_DEFAULT_QUEUE
    assert interactive not in (default, settings.CELERY_NOTIFY_QUEUE)
    assert queue_of("sources.tasks.push_sync", ("c1", {"type": "workouts"})) == interactive
    assert queue_of("sources.tasks.sync_connection", ("c1", "interactive")) == interactive
    assert queue_of("sources.tasks.sync_connection", ("c1",), {"priority": "interactive"}) == interactive
    assert queue_of("sources.tasks.sync_connection", ("c1",)) == default
    assert queue_of("sources.tasks.sync_connection", ("c1", "backfill")) == default
    assert queue_of("sources.tasks.enqueue_due_syncs") == default
    assert queue_of("data_api.tasks.deliver_notification", (1,)) == settings.CELERY_NOTIFY_QUEUE
    # A retry is sent with the message's own exchange and routing key: it stays where it was.
    retry = {"exchange": interactive, "routing_key": interactive}
    assert queue_of("sources.tasks.sync_connection", ("c1", "interactive"), options=retry) == interactive
    # The order a worker without -Q waits on its queues: interactive work first.
    assert list(app.amqp.queues) == [interactive, settings.CELERY_NOTIFY_QUEUE, default]


def sent_to(queue: str) -> list[tuple[str, list[Any]]]:
    """The tasks waiting in a queue of the test process's broker (memory://), taken off it."""
    found = []
    with app.connection_for_read() as broker:
        simple = broker.SimpleQueue(queue)
        try:
            while True:
                message = simple.get(timeout=0.2)
                found.append((message.headers["task"], message.payload[0]))
                message.ack()
        except simple.Empty:
            pass
        finally:
            simple.close()
    return found


@pytest.mark.django_db
def test_sync_now_and_a_wait_for_the_budget_send_to_the_interactive_queue(alice: Persona) -> None:
    if not settings.CELERY_BROKER_URL.startswith("memory://"):
        pytest.skip("reads the messages off the in-process broker")
    connection = demo_connection(alice.human)
    interactive, default = settings.CELERY_INTERACTIVE_QUEUE, settings.CELERY_TASK_DEFAULT_QUEUE
    sent_to(interactive), sent_to(default)  # what other tests left there
    enqueue_sync(connection.pk, SyncPriority.INTERACTIVE)
    wait_for_budget(connection.pk, SyncPriority.INTERACTIVE, 0.1)
    wait_for_budget(connection.pk, SyncPriority.BACKFILL, 0.1)
    enqueue_sync(connection.pk)
    task = "sources.tasks.sync_connection"
    assert sent_to(interactive) == [(task, [connection.pk, "interactive"])] * 2
    assert sent_to(default) == [(task, [connection.pk, "backfill"])] * 2


def test_the_interactive_queue_is_checked(settings: Any) -> None:
    assert check_queue_settings() == []
    settings.CELERY_INTERACTIVE_QUEUE = " "
    [error] = check_queue_settings()
    assert isinstance(error, checks.Error) and error.id == "sources.E008" and "CELERY_INTERACTIVE_QUEUE" in error.msg
    settings.CELERY_INTERACTIVE_QUEUE = settings.CELERY_NOTIFY_QUEUE
    [error] = check_queue_settings()
    assert "must differ from CELERY_NOTIFY_QUEUE" in error.msg


BACKFILLS, SYNCS_NOW = 8, 3


@pytest.fixture
def stack(django_db_setup: None, django_db_blocker: Any, tmp_path: Path) -> Iterator[LiveStack]:
    """gunicorn over Redis, without a worker yet; short demo histories, so each sync is quick."""
    live = start_stack(tmp_path, {"DEMO_HISTORY_DAYS": "2", "SYNC_INTERVAL": "3600"}, worker=False)
    try:
        yield live
    finally:
        stop_stack(live)


def start_single_worker(stack: LiveStack, log: Path) -> None:
    """One Celery worker running one task at a time, started as the README's demo starts it:
    without -Q, so it consumes every queue."""
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "humanapi_project", "worker", "--concurrency", "1",
         "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=stack.env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    stack.processes.append(process)
    stack.logs.append(log)
    deadline = time.monotonic() + 40
    while "ready." not in log.read_text(errors="replace"):
        assert process.poll() is None and time.monotonic() < deadline, "the worker did not start:\n" + stack.log_tail()
        time.sleep(0.2)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_sync_now_runs_before_queued_scheduled_syncs(stack: LiveStack, alice: Persona, tmp_path: Path) -> None:
    waiting = [demo_connection(make_human(alice.app, f"scheduled-{n}", f"s{n}@example.com")) for n in range(BACKFILLS)]
    asked = [make_human(alice.app, f"asked-{n}", f"a{n}@example.com") for n in range(SYNCS_NOW)]
    now_connections = [demo_connection(human) for human in asked]
    # Beat finds the scheduled syncs due and queues them, oldest first, on the stack's broker.
    Connection.objects.update(next_sync_at=None, sync_queued_at=None)
    for n, connection in enumerate(waiting):
        Connection.objects.filter(pk=connection.pk).update(next_sync_at=timezone.now() - timedelta(minutes=60 - n))
    queued = stack.manage("shell", "-c", "from sources.tasks import enqueue_due_syncs; print(enqueue_due_syncs())")
    assert queued.split()[-1] == str(BACKFILLS)
    # Then the application's server asks to sync its users now.
    for human in asked:
        answer = requests.post(
            stack.url(f"/v1/apps/{alice.app.application.client_id}/users/{human.pk}/sync"),
            headers={"Authorization": basic(alice.app.app_key)},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
    start_single_worker(stack, tmp_path / "single-worker.log")

    runs = SyncRun.objects.filter(finished_at__isnull=False)
    wait_until(lambda: runs.count() == BACKFILLS + SYNCS_NOW, 60, message="every sync:\n" + stack.log_tail(2000))
    order = list(SyncRun.objects.order_by("started_at").values_list("connection_id", "priority", "outcome"))
    assert {outcome for _, _, outcome in order} == {SyncOutcome.SUCCEEDED}
    # With one task at a time: every sync asked for ran before any of the syncs queued before it.
    assert [(c, p) for c, p, _ in order[:SYNCS_NOW]] == [(c.pk, "interactive") for c in now_connections]
    assert [(c, p) for c, p, _ in order[SYNCS_NOW:]] == [(c.pk, "backfill") for c in waiting]
