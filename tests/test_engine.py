"""Engine guarantees that hold for every source: claims, crashes, sync-run records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from data_api.models import Record
from sources.http import ProviderHttp
from sources.models import Connection, SyncOutcome, SyncRun
from sources.sync import RetryLater, connection_sync
from tests.conftest import Persona
from tests.emulators.humanity import HumanityEmulator
from tests.humanity_helpers import good_form, humanity_settings, post_connect_form, seed
from tests.live import ROOT, stack_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def connect(humanity: HumanityEmulator, alice: Persona) -> Connection:
    response, _ = post_connect_form(Client(), alice.human, **good_form(humanity))
    assert response.status_code == 200, response.content
    return Connection.objects.get(pk=response.json()["connection"]["id"])


def test_it_gives_the_claim_back_after_a_rescheduled_run_that_had_a_request_pending(
    humanity: HumanityEmulator, alice: Persona
) -> None:
    seed(humanity)
    connection = connect(humanity, alice)
    fault = humanity.fail("/api/v2/shifts", "http429", retry_after=600, times=None)
    # A request arrives while the run goes on (as from a second worker), then the run is rescheduled.
    Connection.objects.filter(pk=connection.pk).update(sync_requested=True)
    with pytest.raises(RetryLater):
        connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda s: None))
    connection.refresh_from_db()
    assert connection.sync_claim == "" and connection.sync_claimed_at is None
    humanity.faults.remove(fault)
    run = connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda s: None))
    assert run is not None and run.outcome == SyncOutcome.SUCCEEDED


def test_it_leaves_one_copy_of_every_record_after_a_crash_between_pages(
    humanity: HumanityEmulator, alice: Persona
) -> None:
    seed(humanity)
    connection = connect(humanity, alice)
    humanity.fail("/api/v2/shifts", "hang", skip=3)  # the 4th month-chunk never answers
    env = stack_env(humanity_settings(humanity))
    process = subprocess.Popen(
        [sys.executable, "manage.py", "sync_connection", connection.pk],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: humanity.calls["/api/v2/shifts"] >= 4, timeout=60, message="the sync to reach chunk 4")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the worker dies mid-sync, nothing cleans up
        process.wait(timeout=10)
    humanity.release.set()
    crashed = Connection.objects.get(pk=connection.pk)
    assert crashed.cursor["shifts"]["next"]  # three chunks were stored with their cursor
    assert set(Record.objects.filter(connection=connection).values_list("external_id", flat=True)) <= {
        "s-old",
        "s-past",
        "s-soon",
    }

    # The dead process renewed its claim with each page it stored...
    started = SyncRun.objects.get(connection=connection).started_at
    assert crashed.sync_claimed_at is not None and crashed.sync_claimed_at > started
    # ...so the claim blocks other syncs until it has gone SYNC_CLAIM_TIMEOUT without renewal.
    assert connection_sync(connection_id=connection.pk) is None
    stale = timezone.now() - timedelta(seconds=settings.SYNC_CLAIM_TIMEOUT + 1)
    Connection.objects.filter(pk=connection.pk).update(sync_claimed_at=stale)
    calls = humanity.calls["/api/v2/shifts"]
    run = connection_sync(connection_id=connection.pk)

    assert run is not None and run.outcome == SyncOutcome.SUCCEEDED and run.kind == "history"
    assert humanity.calls["/api/v2/shifts"] - calls == 2  # resumed at chunk 4 of 5
    ids = list(Record.objects.filter(connection=connection, type="shifts").values_list("external_id", flat=True))
    assert sorted(ids) == ["s-later", "s-old", "s-past", "s-soon"]
    interrupted = SyncRun.objects.filter(connection=connection).exclude(pk=run.pk).get()
    assert interrupted.outcome == SyncOutcome.FAILED and "interrupted" in interrupted.error
    assert interrupted.finished_at is not None
