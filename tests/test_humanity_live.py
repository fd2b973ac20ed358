"""Humanity end to end: the Connect form posted to the real web server, the sync run by a real
Celery worker over Redis, against the emulator."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from connect.models import Human, Token, TokenKind
from data_api.models import Record
from sources.models import Connection, SyncOutcome, SyncRun
from tests.conftest import Persona
from tests.emulators.humanity import HumanityEmulator
from tests.humanity_helpers import good_form, humanity_settings, seed
from tests.live import ROOT, LiveStack, start_stack, stop_stack, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
_STATE = re.compile(r'<script id="connect-state" type="application/json">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def emulator() -> Iterator[HumanityEmulator]:
    running = HumanityEmulator().start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stack(
    django_db_setup: None, django_db_blocker: Any, emulator: HumanityEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    live = start_stack(tmp_path_factory.mktemp("humanity-live"), humanity_settings(emulator, history_days=30))
    try:
        yield live
    finally:
        stop_stack(live)


def connect_over_http(stack: LiveStack, emulator: HumanityEmulator, human: Human) -> Connection:
    _, token = Token.mint(kind=TokenKind.SESSION, human=human, ttl=600)
    page = requests.get(stack.url("/connect/"), params={"token": token}, timeout=10)
    match = _STATE.search(page.text)
    assert match, page.text[:500]
    state = json.loads(match[1])
    assert "humanity" in [s["slug"] for s in state["sources"]]
    response = requests.post(
        stack.url("/connect/sources/humanity/connect"),
        data={"token": token, "csrf": state["csrf"], **good_form(emulator)},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return Connection.objects.get(pk=response.json()["connection"]["id"])


def finished_runs(connection: Connection) -> list[SyncRun]:
    runs = list(SyncRun.objects.filter(connection=connection).order_by("started_at"))
    return runs if runs and all(r.finished_at for r in runs) else []


def test_it_syncs_a_connection_made_through_the_connect_form_on_the_worker(
    stack: LiveStack, emulator: HumanityEmulator, alice: Persona
) -> None:
    seed(emulator)
    connection = connect_over_http(stack, emulator, alice.human)
    runs = wait_until(lambda: finished_runs(connection), timeout=60, message="the history sync") or []
    assert runs[0].outcome == SyncOutcome.SUCCEEDED, stack.log_tail()
    shifts = set(Record.objects.filter(connection=connection, type="shifts").values_list("external_id", flat=True))
    assert shifts == {"s-past", "s-soon", "s-later"}  # s-old is older than the 30 history days
    assert Record.objects.filter(connection=connection, type="timeclocks").count() == 2
    assert runs[0].counts["shifts"]["created"] == 3


def test_it_runs_one_sync_at_a_time_per_connection_on_the_worker(
    stack: LiveStack, emulator: HumanityEmulator, charlie: Persona
) -> None:
    connection = connect_over_http(stack, emulator, charlie.human)
    wait_until(lambda: finished_runs(connection), timeout=60, message="the history sync")
    emulator.max_concurrent = 0
    emulator.fail("/api/v2/shifts", "slow", delay=0.25, times=None)
    log = Path(stack.logs[1])
    done_before = log.read_text(errors="replace").count("sources.tasks.sync_connection[")
    try:
        # Four sync requests at once, from four processes (as a beat tick, a manual resync...).
        senders = [
            subprocess.Popen(
                [sys.executable, "manage.py", "sync_connection", connection.pk, "--enqueue"],
                cwd=ROOT,
                env=stack.env,
                stdout=subprocess.DEVNULL,
            )
            for _ in range(4)
        ]
        assert [p.wait(timeout=60) for p in senders] == [0] * 4
        # Each task logs "received" and "succeeded": 8 new lines once all four were handled.
        wait_until(
            lambda: log.read_text(errors="replace").count("sources.tasks.sync_connection[") - done_before >= 8,
            timeout=90,
            message="four sync tasks to finish:\n" + stack.log_tail(3000),
        )
        runs = wait_until(lambda: finished_runs(connection), timeout=30, message="runs to finish") or []
    finally:
        emulator.faults.clear()
    assert emulator.max_concurrent == 1  # never two provider calls of this connection at once
    assert all(r.outcome == SyncOutcome.SUCCEEDED for r in runs)
    for earlier, later in itertools.pairwise(runs):
        assert earlier.finished_at is not None and earlier.finished_at <= later.started_at
    assert 2 <= len(runs) <= 5  # concurrent requests coalesce into one more run
    state = Connection.objects.get(pk=connection.pk)
    assert state.sync_claim == "" and not state.sync_requested
