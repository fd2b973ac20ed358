"""A sync the provider throttles is rescheduled by the real Celery worker (not retried in place),
resumes from its stored cursor, and ends with exactly one copy of every record."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from data_api.models import Record
from sources.models import Connection, ConnectionStatus, SyncOutcome, SyncRun
from tests.conftest import Persona
from tests.emulators.humanity import HumanityEmulator
from tests.humanity_helpers import humanity_settings, seed
from tests.live import LiveStack, start_stack, stop_stack, wait_until
from tests.test_humanity_live import connect_over_http

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def emulator() -> Iterator[HumanityEmulator]:
    running = HumanityEmulator().start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stack(
    django_db_setup: None, django_db_blocker: Any, emulator: HumanityEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    env = {
        **humanity_settings(emulator, history_days=30),
        # No waiting in place: every throttle goes back to Celery, one second apart.
        "PROVIDER_RETRY_ATTEMPTS": "1",
        "SYNC_RETRY_BASE_SECONDS": "1",
    }
    live = start_stack(tmp_path_factory.mktemp("retry-live"), env)
    try:
        yield live
    finally:
        stop_stack(live)


def test_it_reschedules_a_throttled_sync_on_the_worker_and_resumes(
    stack: LiveStack, emulator: HumanityEmulator, alice: Persona
) -> None:
    seed(emulator)
    # The second and third calls for shifts are throttled (the first window page is stored).
    emulator.fail("/api/v2/shifts", "http429", retry_after=1, skip=1, times=2)
    connection = connect_over_http(stack, emulator, alice.human)

    def succeeded() -> list[SyncRun]:
        runs = list(SyncRun.objects.filter(connection=connection).order_by("started_at"))
        return runs if runs and runs[-1].outcome == SyncOutcome.SUCCEEDED else []

    runs = wait_until(succeeded, timeout=90, message="the sync to succeed after retries:\n" + stack.log_tail(2000))
    assert [r.outcome for r in runs] == [SyncOutcome.RETRYING, SyncOutcome.RETRYING, SyncOutcome.SUCCEEDED]
    assert "429" in runs[0].error
    assert runs[0].pages >= 1  # what was fetched before the throttle stayed stored
    log = stack.logs[1].read_text(errors="replace")
    assert log.count("Retry in") == 2  # rescheduled by Celery, not retried in place
    shifts = list(Record.objects.filter(connection=connection, type="shifts").values_list("external_id", flat=True))
    assert sorted(shifts) == sorted(set(shifts)) == ["s-later", "s-past", "s-soon"]
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE
