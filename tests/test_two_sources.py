"""A Human with two real sources (Demo and an Oura ring, each synced by the engine from its own
provider): every day's summary is one source's own summary, never the sum of both."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Persona
from tests.data_api_helpers import access_client
from tests.emulators.oura import OuraEmulator
from tests.factories import make_connection
from tests.test_oura import connect, oura, sync  # noqa: F401 - the Oura emulator fixture

pytestmark = pytest.mark.django_db(transaction=True)


def by_day(client: Any, path: str, **params: Any) -> dict[str, dict[str, Any]]:
    response = client.get(f"/v1/human/{path}", {"limit": 500, **params})
    assert response.status_code == 200, response.content
    return {s["date"]: s for s in response.json()}


def test_it_answers_each_day_with_one_sources_own_summary(
    alice: Persona, settings: Any, request: pytest.FixtureRequest
) -> None:
    ring_provider: OuraEmulator = request.getfixturevalue("oura")
    settings.DEMO_HISTORY_DAYS = 10
    demo = make_connection(alice.human)  # connected first: it answers where both have data
    sync(demo)
    ring = connect(alice, ring_provider)
    sync(ring)
    client = access_client(alice.human)

    for path in ("activities/summaries", "sleeps/summaries"):
        merged = by_day(client, path)
        own = {slug: by_day(client, path, source=slug) for slug in ("demo", "oura")}
        both = set(own["demo"]) & set(own["oura"])
        assert both, f"the two sources share days of {path}"
        for day, summary in merged.items():
            assert summary == own[summary["source"]][day], (path, day)
        for day in both:
            assert merged[day]["source"] == "demo"
        if path == "activities/summaries":
            day = sorted(both)[-1]
            total = own["demo"][day]["steps"] + own["oura"][day]["steps"]
            assert merged[day]["steps"] != total  # never added up

    alice.app.application.source_priority = "oura"  # this Application trusts the ring first
    alice.app.application.save(update_fields=["source_priority"])
    merged = by_day(client, "activities/summaries")
    ring_days = by_day(client, "activities/summaries", source="oura")
    for day, summary in ring_days.items():
        assert merged[day] == summary
        # Oura's own daily totals, whether or not there was a workout that day.
        assert summary["steps"] is not None and summary["source"] == "oura"
