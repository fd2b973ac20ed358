"""Shared rate budgets (sources.ratebudget): one per provider application, spent by the
connections of every tenant, in PostgreSQL or Redis, against emulators that enforce the
providers' documented limits over real HTTP."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import celery
import pytest
import redis
import requests
from django.core import checks
from django.db import connection as db

from sources.base import RateLimit
from sources.checks import check_source_settings
from sources.models import Connection, RateBudget, SyncOutcome, SyncPriority
from sources.ratebudget import Budget, Gate, State, _take, parse_limits
from sources.sync import RetryLater, connection_sync
from sources.tasks import sync_connection
from tests.app_client import basic
from tests.conftest import Persona
from tests.emulators.oura import OuraEmulator
from tests.emulators.strava import StravaEmulator
from tests.factories import make_application, make_human
from tests.live import start_stack, stop_stack, wait_until
from tests.test_oura import connect as connect_oura
from tests.test_strava import connect as connect_strava
from tests.test_strava import stored_ids

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

pytestmark = pytest.mark.django_db(transaction=True)


def start_of_window(seconds: float) -> None:
    """Wait for the next window of `seconds` (aligned to the epoch, as the budget's) to begin,
    past its unused edge, so a test's calls all fall in that one window."""
    time.sleep(seconds - time.time() % seconds + min(1.0, seconds / 20) + 0.05)


def away_from_window_edge(seconds: float, need: float = 30.0) -> None:
    """Wait for the next window if fewer than `need` seconds of the current one are left (or
    while within its unused first edge)."""
    into = time.time() % seconds
    if seconds - into < need or into < min(1.0, seconds / 20) + 0.05:
        start_of_window(seconds)


@pytest.fixture(params=["postgresql", "redis"])
def backend(request: pytest.FixtureRequest, settings: Any) -> Iterator[str]:
    """Budgets in PostgreSQL, or in Redis (RATE_LIMIT_REDIS_URL)."""
    client = redis.Redis.from_url(REDIS_URL)
    if request.param == "redis":
        settings.RATE_LIMIT_REDIS_URL = REDIS_URL
    for key in client.scan_iter("hapi:budget:*"):
        client.delete(key)
    yield request.param
    for key in client.scan_iter("hapi:budget:*"):
        client.delete(key)


@pytest.fixture
def strava(settings: Any) -> Iterator[StravaEmulator]:
    emulator = StravaEmulator().start()
    # Each page of the history is one list call; no details, so the calls are only those.
    settings.SOURCE_SETTINGS = emulator.source_settings(10, PER_PAGE="1", DETAILS_PER_RUN="0")
    settings.PROVIDER_RETRY_MAX_WAIT = 0
    today = datetime.now(UTC).date()
    emulator.seed(today - timedelta(days=7), today)  # 7 or 8 activities (today's may be ahead)
    yield emulator
    emulator.stop()


def strava_limits(settings: Any, limits: str) -> None:
    settings.SOURCE_SETTINGS = {**settings.SOURCE_SETTINGS, "SOURCE_STRAVA_RATE_LIMITS": limits}


def other_tenant(name: str) -> Persona:
    app = make_application(f"{name}'s app")
    return Persona(app, make_human(app, f"{name}-user", f"{name}@example.com"))


def backfill(connection: Connection) -> RetryLater | None:
    try:
        connection_sync(connection_id=connection.pk)
    except RetryLater as exc:
        return exc
    return None


def test_connections_of_two_tenants_share_one_budget(
    alice: Persona, charlie: Persona, strava: StravaEmulator, settings: Any, backend: str
) -> None:
    settings.PROVIDER_RATE_RESERVE = 0
    activities = len(strava.activities)  # a history is one call per activity, and an empty page
    strava_limits(settings, f"{activities + 4}/86400")
    away_from_window_edge(86400)
    first, second = connect_strava(alice, strava), connect_strava(charlie, strava)

    assert backfill(first) is None
    waiting = backfill(second)

    assert waiting is not None and waiting.waiting  # the application's budget, not a failure
    assert waiting.retry_after is not None and 0 < waiting.retry_after <= 86401
    assert strava.calls["activities"] == activities + 4 and strava.calls["429"] == 0
    assert len(stored_ids(first)) == activities and len(stored_ids(second)) == 3  # kept for the next window
    # Another source's budget (or another application's) is not this one.
    if backend == "postgresql":
        assert list(RateBudget.objects.values_list("key", flat=True)) == [f"strava:{strava.client_id}"]


def test_a_backfill_stops_short_of_the_limit_and_resumes_after_the_window(
    alice: Persona, strava: StravaEmulator, settings: Any, backend: str
) -> None:
    """5 requests per 6-second window at the emulator and in the budget: a backfill takes 4
    (the 5th is the interactive reserve) until the window's last tenth opens the reserve to it."""
    strava.windows, strava.read_limit = (6, 86400), (5, 1000)
    strava_limits(settings, "5/6,1000/86400")
    connection = connect_strava(alice, strava)
    start_of_window(6)
    began = time.monotonic()
    stops: list[tuple[int, float]] = []  # (usage at the emulator, seconds to wait)

    while (waiting := backfill(connection)) is not None:
        assert waiting.waiting and waiting.retry_after is not None and 0 < waiting.retry_after <= 6
        stops.append((strava.usage[0], waiting.retry_after))
        assert len(stops) < 10, stops
        time.sleep(waiting.retry_after)

    assert strava.calls["429"] == 0
    assert stops[0][0] == 4 and 4 <= stops[0][1] <= 5.2  # short of the limit, until the reserve opens
    assert stops[1][0] == 5  # then the reserve's request, and the window is spent
    assert len(stops) == 2 and strava.calls["activities"] == len(strava.activities) + 1
    assert len(stored_ids(connection)) == len(strava.activities)
    assert time.monotonic() - began >= 5  # it took the next window
    assert Connection.objects.get(pk=connection.pk).history_synced_at is not None


def test_interactive_work_passes_while_backfills_wait(
    alice: Persona, charlie: Persona, strava: StravaEmulator, settings: Any, backend: str
) -> None:
    settings.SOURCE_SETTINGS = {**settings.SOURCE_SETTINGS, "SOURCE_STRAVA_PER_PAGE": "200"}  # one call a sync
    settings.PROVIDER_RATE_RESERVE = 40
    strava.windows, strava.read_limit = (20, 86400), (5, 1000)
    strava_limits(settings, "5/20,1000/86400")  # backfills may take 3 of every 5
    backfills = [connect_strava(alice, strava)]
    backfills += [connect_strava(other_tenant(name), strava) for name in ("bob", "dave", "erin")]
    interactive = connect_strava(charlie, strava)
    start_of_window(20)

    waits = [backfill(c) for c in backfills]

    assert [w is None for w in waits] == [True, True, True, False] and strava.calls["activities"] == 3
    run = connection_sync(connection_id=interactive.pk, priority=SyncPriority.INTERACTIVE)
    assert run is not None and run.outcome == SyncOutcome.SUCCEEDED and run.priority == "interactive"
    assert strava.calls["activities"] == 4 and len(stored_ids(interactive)) == len(strava.activities)
    again = backfill(backfills[3])
    assert again is not None and again.waiting and strava.calls["activities"] == 4  # still waits, calls nothing
    assert connection_sync(connection_id=interactive.pk, priority=SyncPriority.INTERACTIVE) is not None
    with pytest.raises(RetryLater) as spent:  # the window is spent for everyone now
        connection_sync(connection_id=interactive.pk, priority=SyncPriority.INTERACTIVE)
    assert spent.value.waiting and strava.calls["activities"] == 5 and strava.calls["429"] == 0


@pytest.mark.worker
def test_sync_now_over_http_passes_while_a_backfill_waits_in_the_worker(
    alice: Persona, charlie: Persona, strava: StravaEmulator, settings: Any, tmp_path: Path
) -> None:
    """The whole way: gunicorn takes the Application API's "sync now", the Celery worker runs it
    as interactive work through the budget the backfills have spent their share of."""
    extra = {
        **strava.source_settings(10, PER_PAGE="200", DETAILS_PER_RUN="0", RATE_LIMITS="5/30,1000/86400"),
        "PROVIDER_RATE_RESERVE": "40",  # backfills may take 3 of every 5
        "PROVIDER_RETRY_MAX_WAIT": "0",
    }
    settings.SOURCE_SETTINGS, settings.PROVIDER_RATE_RESERVE = {k: v for k, v in extra.items() if "SOURCE" in k}, 40
    spent = [connect_strava(other_tenant(name), strava) for name in ("bob", "dave", "erin")]
    waiting, interactive = connect_strava(other_tenant("frank"), strava), connect_strava(charlie, strava)
    stack = start_stack(tmp_path, extra)
    try:
        start_of_window(30)  # what follows takes a few seconds; the reserve opens to backfills at 26
        assert [backfill(c) for c in spent] == [None, None, None] and strava.calls["activities"] == 3
        sender = celery.Celery("budget-sender")
        with sender.connection_for_write(stack.env["CELERY_BROKER_URL"]) as broker:
            sender.send_task(
                "sources.tasks.sync_connection",
                args=[waiting.pk],
                queue=stack.env["CELERY_TASK_DEFAULT_QUEUE"],
                connection=broker,
            )
        client_id, human = charlie.app.application.client_id, charlie.human.pk
        answer = requests.post(
            stack.url(f"/v1/apps/{client_id}/users/{human}/sync"),
            headers={"Authorization": basic(charlie.app.app_key)},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text

        finished = interactive.sync_runs.filter(finished_at__isnull=False)
        run = wait_until(finished.first, 60, message="the sync asked for")
        assert run.outcome == SyncOutcome.SUCCEEDED and run.priority == "interactive"
        assert len(stored_ids(interactive)) == len(strava.activities)
        time.sleep(1)  # the backfill, sent first, had its turn in the worker
        assert not waiting.sync_runs.exists()  # it waits for the budget without even a run recorded
        assert strava.calls["activities"] == 4 and strava.calls["429"] == 0
        assert Connection.objects.get(pk=waiting.pk).next_sync_at is not None
    finally:
        stop_stack(stack)


def test_a_429_empties_the_budget_until_its_retry_after(
    alice: Persona, charlie: Persona, settings: Any, backend: str
) -> None:
    """Oura's limit is spent by someone the budget doesn't see: its 429 stops every connection
    of the application until the Retry-After, interactive work too."""
    oura = OuraEmulator(page_size=25).start()
    try:
        settings.SOURCE_SETTINGS = oura.source_settings(3)
        settings.PROVIDER_RETRY_MAX_WAIT = 0
        today = datetime.now(UTC).date()
        oura.seed(today - timedelta(days=3), today)
        first, second = connect_oura(alice, oura), connect_oura(charlie, oura)
        oura.limit = (4, 3)  # 2 identity calls above, and 2 more within 3 seconds

        with pytest.raises(RetryLater) as caught:
            connection_sync(connection_id=first.pk)
        assert oura.calls["429"] == 1 and caught.value.retry_after is not None and 0 < caught.value.retry_after <= 3
        assert not caught.value.waiting  # a refusal by the provider, unlike a spent budget
        served = oura.calls["collection"]

        for priority in (SyncPriority.BACKFILL, SyncPriority.INTERACTIVE):
            with pytest.raises(RetryLater) as blocked:
                connection_sync(connection_id=second.pk, priority=priority)
            assert blocked.value.waiting and 0 < (blocked.value.retry_after or 0) <= 3
        assert oura.calls["collection"] == served and oura.calls["429"] == 1  # nobody called

        time.sleep(caught.value.retry_after)
        oura.limit = (5000, 300)
        run = connection_sync(connection_id=second.pk)
        assert run is not None and run.outcome == SyncOutcome.SUCCEEDED and oura.calls["429"] == 1
    finally:
        oura.stop()


def test_stravas_headers_correct_the_count_and_the_limit(
    alice: Persona, strava: StravaEmulator, settings: Any, backend: str
) -> None:
    """Others used 13 of the application's 20 reads this hour (Strava says 20; the budget was
    told 100): after the first answer the budget knows both, and stops at 20 without a 429."""
    settings.PROVIDER_RATE_RESERVE = 0
    away_from_window_edge(3600)
    strava.windows, strava.read_limit, strava.limit = (3600, 86400), (20, 1000), (40, 2000)
    strava.usage_window = [int(time.time() // w) for w in strava.windows]
    strava.usage = [13, 13]
    strava_limits(settings, "100/3600,1000/86400")
    connection = connect_strava(alice, strava)

    waiting = backfill(connection)

    assert waiting is not None and waiting.waiting and strava.calls["429"] == 0
    assert strava.calls["activities"] == 7 and strava.usage == [20, 20]
    if backend == "postgresql":
        state = State.load(RateBudget.objects.get(key=f"strava:{strava.client_id}").state)
        assert state.reported == {3600: 20, 86400: 1000}
        assert sum(state.counts[3600].values()) == 20 and sum(state.counts[86400].values()) == 20


def test_a_budget_spent_task_is_sent_again_without_counting_a_retry(
    alice: Persona, strava: StravaEmulator, settings: Any
) -> None:
    settings.PROVIDER_RATE_RESERVE = 0
    strava_limits(settings, "1/86400")
    away_from_window_edge(86400)
    connection = connect_strava(alice, strava)

    result = sync_connection.apply(args=(connection.pk,))

    assert result.successful() and strava.calls["activities"] == 1
    # Waiting for the budget is no failure: the task ended, a new one is due for when it frees.
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.next_sync_at is not None
    assert stored.next_sync_at > datetime.now(UTC) + timedelta(seconds=settings.SYNC_REQUEUE_AFTER)


def test_no_two_takes_share_the_last_request(backend: str, settings: Any) -> None:
    """Eight threads (eight database connections) take 20 calls each from a budget of 50."""
    settings.PROVIDER_RATE_RESERVE = 0
    budget = Budget("test:atomic", (RateLimit(50, 86400), RateLimit(1000, 60, rolling=True)))
    away_from_window_edge(86400)
    taken: list[int] = []

    def worker() -> None:
        try:
            gate = Gate("test", [budget], priority="backfill", blocks=budget, reports=None, usage=lambda r: [])
            taken.append(sum(1 for _ in range(20) if gate.take() == 0))
        finally:
            db.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(taken) == 8 and sum(taken) == 50


def test_budgets_untouched_for_two_days_are_forgotten_when_a_new_one_is_made(settings: Any) -> None:
    old = Budget("strava:gone", (RateLimit(5, 60),))
    Gate("test", [old], priority="backfill", blocks=old, reports=None, usage=lambda r: []).take()
    RateBudget.objects.filter(key=old.key).update(updated_at=datetime.now(UTC) - timedelta(days=3))
    new = Budget("strava:new", (RateLimit(5, 60),))

    Gate("test", [new], priority="backfill", blocks=new, reports=None, usage=lambda r: []).take()

    assert list(RateBudget.objects.values_list("key", flat=True)) == ["strava:new"]


# --- the budget's rules, at chosen moments --------------------------------------------------------


def test_a_fixed_window_keeps_its_edges_and_opens_the_reserve_in_its_last_tenth() -> None:
    budget = Budget("b", (RateLimit(10, 100),))
    state = State()
    start = 1_000_000 * 100.0

    assert _take([state], [budget], start + 0.5, False, 0.2, 0) == pytest.approx(0.5)  # the edge
    assert sum(_take([state], [budget], start + 10, False, 0.2, 0) == 0 for _ in range(10)) == 8
    assert _take([state], [budget], start + 10, False, 0.2, 0) == pytest.approx(79)  # until 89: the reserve opens
    assert _take([state], [budget], start + 10, True, 0.2, 0) == 0  # interactive work uses it
    assert _take([state], [budget], start + 89, False, 0.2, 0) == 0  # the last tenth: backfills too
    assert _take([state], [budget], start + 89, True, 0.2, 0) == pytest.approx(12)  # spent: the next window
    assert _take([state], [budget], start + 99.5, True, 0.2, 0) == pytest.approx(1.5)  # the far edge
    assert _take([state], [budget], start + 101, False, 0.2, 0) == 0  # a new window


def test_a_rolling_window_counts_the_ten_tenths_before_the_current_one() -> None:
    budget = Budget("b", (RateLimit(10, 100, rolling=True),))
    state = State()
    t = 1_000_000 * 100.0
    for moment in (t + 1, t + 1, t + 15, t + 15, t + 15, t + 35, t + 35, t + 35, t + 55, t + 55):
        assert _take([state], [budget], moment, True, 0, 0) == 0

    # Spent: the two of the first tenth leave when the tenth 100 seconds after it is over.
    assert _take([state], [budget], t + 60, True, 0, 0) == pytest.approx(50)
    assert _take([state], [budget], t + 110, True, 0, 0) == 0
    assert _take([state], [budget], t + 110, True, 0, 0) == 0
    assert _take([state], [budget], t + 110, True, 0, 0) == pytest.approx(10)  # the next three leave at 120


def test_rate_limit_settings_are_checked_at_startup(settings: Any) -> None:
    assert parse_limits("100/900, 1000/86400") == (RateLimit(100, 900), RateLimit(1000, 86400))
    assert parse_limits("5000/300/rolling") == (RateLimit(5000, 300, True),)
    assert parse_limits("off") == ()
    for bad in ("200 per 15 minutes", "0/60", "10/60/sliding", "10/60,20/60", "²/60", ""):
        with pytest.raises(ValueError):
            parse_limits(bad)

    settings.SOURCE_SETTINGS = {"SOURCE_STRAVA_RATE_LIMITS": "200 per 15 minutes", "SOURCE_OURA_RATE_LIMITS": "off"}
    settings.PROVIDER_RATE_RESERVE = 95
    found = [m for m in check_source_settings() if m.level >= checks.ERROR]

    assert [m.id for m in found] == ["sources.E007", "sources.E005"]
    assert "SOURCE_STRAVA_RATE_LIMITS" in found[0].msg and "PROVIDER_RATE_RESERVE" in found[1].msg
