from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client

from data_api.openapi import schema
from data_api.records import MEASUREMENTS, PERIODIC
from sources.base import Record as NewRecord
from tests.conftest import Persona
from tests.data_api_helpers import T0, access_client, demo_connection, reading, store, stored_records
from tests.openapi_check import check, errors, template_of


@pytest.fixture
def synced(alice: Persona, settings: Any) -> Persona:
    """Alice with four days of Demo data (every wellness type) and a shift and a timeclock."""
    from sources.sync import connection_sync

    settings.DEMO_HISTORY_DAYS = 4  # at least one weekday: locations are weekday commutes
    settings.DEMO_HEART_RATE_INTERVAL_MINUTES = 60
    connection_sync(connection_id=demo_connection(alice.human).pk)
    work = demo_connection(alice.human, slug="humanity")
    start = T0 + timedelta(hours=2)
    common = {"start_time": start, "end_time": start + timedelta(hours=8), "tz_offset": 60}
    store(
        work,
        [
            NewRecord(
                type="shifts",
                external_id="s1",
                fields={
                    "title": "Morning",
                    "position": "Barista",
                    "location": "Main St",
                    "published": True,
                    "employeeId": "42",
                },
                **common,
            ),
            NewRecord(
                type="timeclocks",
                external_id="t1",
                fields={"duration": 480, "position": "Barista", "location": "Main St", "shiftId": "s1"},
                **common,
            ),
        ],
    )
    # Demo measures height on the first of a month only.
    store(demo_connection(alice.human), [reading("height", 1, T0, 178.0, unit="cm")])
    return alice


def every_concrete_path(human_id: str) -> list[str]:
    def first_id(kind: str) -> int:
        found = stored_records(kind, human_id=human_id)
        return found[-1].pk if found else 0

    def a_day(kind: str) -> str:
        found = stored_records(kind, human_id=human_id)
        return found[-1].local_day.isoformat() if found else "2026-03-01"

    paths = ["/v1/human/", "/v1/human/profile", "/v1/human/sources"]
    for m in MEASUREMENTS:
        paths += [
            f"/v1/human/{m}",
            f"/v1/human/{m}/readings",
            f"/v1/human/{m}/readings/{first_id(m)}",
            f"/v1/human/{m}/readings/daily/{a_day(m)}",
        ]
    for route, kind in PERIODIC.items():
        paths += [f"/v1/human/{route}", f"/v1/human/{route}/{first_id(kind)}", f"/v1/human/{route}/daily/{a_day(kind)}"]
    for kind in ("activities", "sleeps", "heart_rate"):
        day = a_day(kind)
        paths += [
            f"/v1/human/{kind}/summaries",
            f"/v1/human/{kind}/summaries/{day}",
            f"/v1/human/{kind}/summaries/{kind}-{day.replace('-', '')}",
            f"/v1/human/{kind}/summary/{day}",
        ]
    return paths


def test_it_documents_and_honours_every_data_api_path(synced: Persona) -> None:
    spec = schema()
    client = access_client(synced.human)
    paths = every_concrete_path(synced.human.pk)
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, (path, response.content[:300])
        body = response.json()
        assert body not in ([], {}), f"{path} returned nothing to check"
        check(spec, path, body)
    documented = {p for p in spec["paths"] if p.startswith("/v1/human/")}
    assert {template_of(spec, path) for path in paths} == documented


def test_it_matches_the_schema_when_empty_and_on_errors(alice: Persona) -> None:
    spec = schema()
    client = access_client(alice.human)
    check(spec, "/v1/human/weight", client.get("/v1/human/weight").json())
    check(spec, "/v1/human/", client.get("/v1/human/").json())
    check(spec, "/v1/human/sources", client.get("/v1/human/sources").json())
    for path, status in (("/v1/human/activities/123", 404), ("/v1/human/activities?limit=0", 400)):
        body = client.get(path).json()
        check(spec, path.split("?")[0], body, status=status)
    unauthorized = Client().get("/v1/human/profile")
    check(spec, "/v1/human/profile", unauthorized.json(), status=401)


def test_it_catches_a_response_that_drifts_from_the_schema() -> None:
    spec = schema()
    reading = {"$ref": "#/components/schemas/Reading"}
    good = {
        "id": "1",
        "humanId": "h",
        "source": "demo",
        "sourceData": {},
        "createdAt": "2026-03-01T00:00:00.000Z",
        "updatedAt": "2026-03-01T00:00:00.000Z",
        "timestamp": "2026-03-01T00:00:00.000Z",
        "tzOffset": "+00:00",
        "value": 60,
        "unit": "bpm",
    }
    assert errors(spec, reading, good) == []
    assert errors(spec, reading, {**good, "value": "60"}) == ["$.value: str where number is expected"]
    assert errors(spec, reading, {k: v for k, v in good.items() if k != "unit"}) == ["$: missing required 'unit'"]
    assert errors(spec, reading, {**good, "timestamp": "2026-03-01"})
    assert errors(spec, {"type": "array", "items": reading}, [good, {**good, "id": 1}]) == [
        "$[1].id: int where string is expected"
    ]


def test_it_serves_the_schema_and_a_self_contained_docs_page() -> None:
    client = Client()
    served = client.get("/v1/schema")
    assert served.status_code == 200 and served.json()["openapi"].startswith("3.")
    paths = served.json()["paths"]
    for documented in (
        "/v1/connect/token",
        "/v1/human/activities/summaries",
        "/v1/apps/{client_id}/users",
        "/v1/apps/{client_id}/users/{humanId}",
        "/v1/apps/{client_id}/users/heart_rates",
        "/v1/apps/{client_id}/users/activities/summaries",
        "/v1/apps/{client_id}/users/{humanId}/sources",
        "/v1/apps/{client_id}/users/{humanId}/sync",
        "/v1/apps/{client_id}/audit",
    ):
        assert documented in paths, documented
    docs = client.get("/docs")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "/v1/human/{measurement}" not in html and "/v1/human/heart_rate/readings" in html
    assert "ActivitySummary" in html and "X-Total-Count" not in html.split("<main>")[0]
    assert "<script src" not in html and "https://" not in html and "<link" not in html
