"""What a person expects of daily summaries (CONTRACT §6): a sleep belongs to the morning it
ends, the same day everywhere; a source's own daily totals answer for its day; and with several
sources, one source answers for each day, never the sum of them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from sources.base import Record
from tests.app_client import app_call
from tests.conftest import Persona
from tests.data_api_helpers import access_client, activity, demo_connection, sleep, store

NIGHT = datetime(2026, 12, 4, 22, 30, tzinfo=UTC)  # 23:30 local (+01:00) on Dec 4


def totals(n: int, day: date, steps: int, calories: float, tz: int = 0) -> Record:
    """A provider's own totals of one local day (Oura daily_activity, Withings getactivity, ...)."""
    midnight = datetime.combine(day, datetime.min.time(), UTC) - timedelta(minutes=tz)
    return Record(
        type="activity_summaries",
        external_id=f"daily-{n}",
        start_time=midnight,
        end_time=midnight + timedelta(days=1),
        tz_offset=tz,
        day=day,
        fields={
            "date": day.isoformat(),
            "steps": steps,
            "distance": steps * 0.8,
            "calories": calories,
            "activeCalories": 400.0,
            "duration": 5400,
            "sedentary": 30000,
            "light": 3600,
            "moderate": 1200,
            "vigorous": 600,
        },
        source_data={"n": n},
    )


def get(client: Client, path: str, **params: Any) -> Any:
    response = client.get(f"/v1/human/{path}", params)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.django_db
def test_it_files_a_sleep_under_the_morning_it_ends_everywhere(alice: Persona) -> None:
    store(demo_connection(alice.human), [sleep(1, NIGHT, in_bed=480, awake=30, tz=60)])  # ends 07:30 Dec 5
    client = access_client(alice.human)
    [stored] = get(client, "sleeps")
    assert stored["day"] == "2026-12-05"
    assert [s["id"] for s in get(client, "sleeps/daily/2026-12-05")] == [stored["id"]]
    assert get(client, "sleeps/daily/2026-12-04") == []
    summary = get(client, "sleeps/summary/2026-12-05")
    assert (summary["date"], summary["timeAsleep"], summary["source"]) == ("2026-12-05", 450, "demo")
    assert client.get("/v1/human/sleeps/summary/2026-12-04").status_code == 404
    assert get(client, "sleeps/summaries")[0]["date"] == "2026-12-05"
    assert get(client, "")["sleepSummary"]["date"] == "2026-12-05"


@pytest.mark.django_db
def test_it_files_a_sleep_without_a_provider_day_by_its_end(alice: Persona) -> None:
    record = sleep(1, NIGHT, in_bed=480, awake=30, tz=60)
    fields = {k: v for k, v in record.fields.items() if k != "day"}
    store(demo_connection(alice.human), [Record(**{**record.__dict__, "fields": fields})])
    client = access_client(alice.human)
    assert get(client, "sleeps/summary/2026-12-05")["timeInBed"] == 480


@pytest.mark.django_db
def test_it_answers_a_day_with_the_sources_own_totals_with_or_without_a_workout(alice: Persona) -> None:
    ring = demo_connection(alice.human, slug="oura")
    day = date(2026, 11, 17)
    workout_day = date(2026, 11, 18)
    store(
        ring,
        [
            totals(1, day, 14546, 2650.0),
            totals(2, workout_day, 9000, 2400.0),
            activity(1, datetime(2026, 11, 18, 17, 0, tzinfo=UTC), 45, 5000),
            activity(2, datetime(2026, 11, 19, 7, 0, tzinfo=UTC), 30, 3000),  # a day with no totals
        ],
    )
    client = access_client(alice.human)
    no_workout = get(client, "activities/summary/2026-11-17")
    assert (no_workout["steps"], no_workout["calories"], no_workout["source"]) == (14546, 2650.0, "oura")
    assert no_workout["vigorous"] == 600 and no_workout["distance"] == pytest.approx(11636.8)
    # The day's own totals, not the workout added to them, nor the workout alone.
    assert get(client, "activities/summary/2026-11-18")["steps"] == 9000
    summed = get(client, "activities/summary/2026-11-19")
    assert (summed["steps"], summed["duration"], summed["vigorous"]) == (3000, 1800, None)
    assert [s["date"] for s in get(client, "activities/summaries")] == ["2026-11-19", "2026-11-18", "2026-11-17"]


@pytest.mark.django_db
def test_it_never_adds_up_a_day_across_sources(alice: Persona) -> None:
    demo = demo_connection(alice.human)  # connected first
    ring = demo_connection(alice.human, slug="oura")
    store(demo, [activity(1, datetime(2026, 11, 17, 9, 0, tzinfo=UTC), 60, 6000)])
    store(ring, [totals(1, date(2026, 11, 17), 14546, 2650.0), totals(2, date(2026, 11, 16), 8000, 2300.0)])
    store(demo, [sleep(1, NIGHT, in_bed=480, awake=30)])
    store(ring, [Record(**{**sleep(2, NIGHT, in_bed=470, awake=20).__dict__, "external_id": "ring-sleep"})])
    client = access_client(alice.human)

    own = {slug: {s["date"]: s for s in get(client, "activities/summaries", source=slug)} for slug in ("demo", "oura")}
    merged = {s["date"]: s for s in get(client, "activities/summaries")}
    assert merged["2026-11-17"] == own["demo"]["2026-11-17"]  # the first connected source answers
    assert merged["2026-11-16"] == own["oura"]["2026-11-16"]  # the only source with data that day
    assert merged["2026-11-17"]["steps"] == 6000 and own["oura"]["2026-11-17"]["steps"] == 14546
    [night] = get(client, "sleeps/summaries")
    assert (night["timeInBed"], night["source"]) == (480, "demo")

    alice.app.application.source_priority = "oura,demo"  # the Application prefers the ring
    alice.app.application.save()
    merged = {s["date"]: s for s in get(client, "activities/summaries")}
    assert merged["2026-11-17"] == own["oura"]["2026-11-17"]
    assert get(client, "sleeps/summaries")[0]["timeInBed"] == 470
    assert get(client, "")["activitySummary"] == own["oura"]["2026-11-17"]
    headers = client.get("/v1/human/activities/summaries", {"limit": 1, "offset": 1}).headers
    assert headers["X-Total-Count"] == "2"


@pytest.mark.django_db
def test_it_follows_the_source_priority_setting(alice: Persona, settings: Any) -> None:
    demo = demo_connection(alice.human)
    ring = demo_connection(alice.human, slug="oura")
    store(demo, [activity(1, datetime(2026, 11, 17, 9, 0, tzinfo=UTC), 60, 6000)])
    store(ring, [totals(1, date(2026, 11, 17), 14546, 2650.0)])
    settings.SOURCE_PRIORITY = ["oura"]
    summary = get(access_client(alice.human), "activities/summary/2026-11-17")
    assert (summary["steps"], summary["source"]) == (14546, "oura")


@pytest.mark.django_db
def test_it_serves_the_same_choice_in_the_batch_feed(alice: Persona) -> None:
    demo = demo_connection(alice.human)
    ring = demo_connection(alice.human, slug="oura")
    store(demo, [activity(1, datetime(2026, 11, 17, 9, 0, tzinfo=UTC), 60, 6000)])
    store(ring, [totals(1, date(2026, 11, 17), 14546, 2650.0), totals(2, date(2026, 11, 16), 8000, 2300.0)])
    response = app_call(Client(), alice, "GET", "users/activities/summaries")
    assert response.status_code == 200
    by_day = {s["date"]: (s["steps"], s["source"], s["humanId"]) for s in response.json()}
    assert by_day == {
        "2026-11-17": (6000, "demo", alice.human.pk),
        "2026-11-16": (8000, "oura", alice.human.pk),
    }
    assert response.headers["X-Total-Count"] == "2"


@pytest.mark.django_db
def test_it_refuses_an_unknown_source_in_an_applications_priority(alice: Persona) -> None:
    from connect.admin import ApplicationChangeForm

    def form(priority: str) -> ApplicationChangeForm:
        data = {"name": "Alice's app", "allowed_origins": "", "notify_url": "", "source_priority": priority}
        return ApplicationChangeForm(data=data, instance=alice.app.application)

    refused = form("oura, nope")
    assert not refused.is_valid() and "Unknown sources: nope" in str(refused.errors["source_priority"])
    accepted = form(" oura , demo ")
    assert accepted.is_valid(), accepted.errors
    assert accepted.cleaned_data["source_priority"] == "oura,demo"
