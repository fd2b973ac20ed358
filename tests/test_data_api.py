from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client

from connect.models import Token, TokenKind
from data_api.models import Record
from data_api.selectors import ANCHOR_EVERY
from tests.conftest import Persona
from tests.data_api_helpers import T0, access_client, activity, demo_connection, reading, sleep, store, stored_records


def links_of(response: Any) -> dict[str, str]:
    out = {}
    for part in response.headers.get("Link", "").split(", "):
        if part:
            url, rel = part.split("; ")
            out[rel.removeprefix('rel="').rstrip('"')] = url.strip("<>")
    return out


def ids_in_order(human_id: str, kind: str) -> list[str]:
    return [str(r.pk) for r in stored_records(kind, human_id=human_id)]


def test_it_pages_newest_first_with_a_stable_tie_break_and_links(alice: Persona) -> None:
    connection = demo_connection(alice.human)
    # Pairs share a timestamp: the id decides, the same way on every page.
    store(connection, [reading("heart_rate", n, T0 + timedelta(minutes=n // 2), 60 + n) for n in range(7)])
    client = access_client(alice.human)
    expected = ids_in_order(alice.human.pk, "heart_rate")

    first = client.get("/v1/human/heart_rate/readings", {"limit": 3})
    assert first.status_code == 200
    assert first.headers["X-Total-Count"] == "7"
    assert [r["id"] for r in first.json()] == expected[:3]
    assert set(links_of(first)) == {"next", "last"}
    assert "offset=6" in links_of(first)["last"]

    middle = client.get("/v1/human/heart_rate/readings", {"limit": 3, "offset": 3})
    assert [r["id"] for r in middle.json()] == expected[3:6]
    assert set(links_of(middle)) == {"next", "prev", "last", "first"}

    last = client.get("/v1/human/heart_rate/readings", {"limit": 3, "offset": 6})
    assert [r["id"] for r in last.json()] == expected[6:]
    assert set(links_of(last)) == {"prev", "first"}
    body = last.json()[0]
    assert body["timestamp"].endswith("Z") and body["tzOffset"] == "+00:00"
    assert body["unit"] == "bpm" and body["humanId"] == alice.human.pk and body["source"] == "demo"


def test_it_answers_deep_offsets_exactly_as_a_plain_offset_would(alice: Persona) -> None:
    connection = demo_connection(alice.human)
    count = ANCHOR_EVERY * 2 + 37
    store(connection, [reading("heart_rate", n, T0 + timedelta(seconds=30 * (n // 3)), 70) for n in range(count)])
    client = access_client(alice.human)
    expected = ids_in_order(alice.human.pk, "heart_rate")
    for offset in (0, 1, ANCHOR_EVERY - 1, ANCHOR_EVERY, ANCHOR_EVERY + 1, 2 * ANCHOR_EVERY + 5, count - 1, count):
        response = client.get("/v1/human/heart_rate/readings", {"limit": 7, "offset": offset})
        assert response.status_code == 200
        assert response.headers["X-Total-Count"] == str(count)
        assert [r["id"] for r in response.json()] == expected[offset : offset + 7], offset


def test_it_sees_new_and_deleted_records_at_once(alice: Persona) -> None:
    connection = demo_connection(alice.human)
    store(connection, [reading("weight", n, T0 + timedelta(days=n), 80) for n in range(3)])
    client = access_client(alice.human)
    assert client.get("/v1/human/weight/readings").headers["X-Total-Count"] == "3"

    store(connection, [reading("weight", 9, T0 + timedelta(days=9), 79)])
    response = client.get("/v1/human/weight/readings")
    assert response.headers["X-Total-Count"] == "4"
    assert response.json()[0]["value"] == 79

    Record.objects.filter(external_id="weight-9").delete()
    assert client.get("/v1/human/weight/readings").headers["X-Total-Count"] == "3"
    assert client.get("/v1/human/weight").json()["value"] == 80


def test_it_filters_by_day_time_and_source(alice: Persona) -> None:
    demo = demo_connection(alice.human)
    other = demo_connection(alice.human, slug="otherwatch")
    store(demo, [activity(n, T0 + timedelta(days=n), 30, 1000) for n in range(5)])
    store(other, [activity(100, T0 + timedelta(days=2, hours=1), 10, 500)])
    client = access_client(alice.human)

    ranged = client.get("/v1/human/activities", {"start_date": "2026-03-02", "end_date": "2026-03-03"})
    assert sorted(a["startTime"][:10] for a in ranged.json()) == ["2026-03-02", "2026-03-03", "2026-03-03"]

    only_other = client.get("/v1/human/activities", {"source": "otherwatch"})
    assert [a["source"] for a in only_other.json()] == ["otherwatch"]

    created = Record.objects.get(external_id="act-100").created_at
    compact = created.strftime("%Y%m%dT%H%M%SZ")
    since = client.get("/v1/human/activities", {"created_since": (created - timedelta(seconds=1)).isoformat()})
    assert {a["source"] for a in since.json()} <= {"demo", "otherwatch"}
    assert client.get("/v1/human/activities", {"updated_before": compact}).status_code == 200

    daily = client.get("/v1/human/activities/daily/2026-03-03")
    assert daily.headers["X-Total-Count"] == "2"
    assert all(a["startTime"].startswith("2026-03-03") for a in daily.json())


@pytest.mark.parametrize(
    ("path", "params", "key"),
    [
        ("/v1/human/activities", {"limit": "0"}, "limit"),
        ("/v1/human/activities", {"limit": "501"}, "limit"),
        ("/v1/human/activities", {"offset": "-1"}, "offset"),
        ("/v1/human/activities", {"offset": "ten"}, "offset"),
        ("/v1/human/activities", {"start_date": "2026-03-01"}, "end_date"),
        ("/v1/human/activities", {"start_date": "2026-03-05", "end_date": "2026-03-01"}, "end_date"),
        ("/v1/human/activities", {"created_since": "yesterday"}, "created_since"),
        ("/v1/human/activities", {"source": "Not A Slug!"}, "source"),
        ("/v1/human/activities/daily/2026-02-30", {}, "day"),
        ("/v1/human/heart_rate/readings/daily/March", {}, "day"),
        ("/v1/human/activities/summaries/2026-13-01", {}, "day"),
    ],
)
def test_it_rejects_bad_input_with_the_error_envelope(
    alice: Persona, path: str, params: dict[str, str], key: str
) -> None:
    response = access_client(alice.human).get(path, params)
    assert response.status_code == 400
    body = response.json()
    assert body["statusCode"] == 400 and body["error"] == "Bad Request"
    assert key in body["message"] and body["validation"]["keys"] == [key]
    assert body["requestId"] == response.headers["X-Request-Id"]


def test_it_keeps_each_human_to_their_own_records(alice: Persona, charlie: Persona) -> None:
    store(demo_connection(charlie.human), [activity(1, T0, 20, 900), reading("weight", 1, T0, 90, unit="kg")])
    theirs = Record.objects.get(human=charlie.human, type="activities").pk
    client = access_client(alice.human)
    assert client.get("/v1/human/activities").json() == []
    assert client.get("/v1/human/activities").headers["X-Total-Count"] == "0"
    assert client.get("/v1/human/weight").json() == {}
    response = client.get(f"/v1/human/activities/{theirs}")
    assert response.status_code == 404 and response.json()["statusCode"] == 404
    assert access_client(charlie.human).get(f"/v1/human/activities/{theirs}").json()["steps"] == 900


@pytest.mark.parametrize(
    "path",
    [
        "/v1/human/activities/123456789",
        "/v1/human/activities/not-an-id",
        "/v1/human/heart_rate/readings/99999999999999999999999",
        "/v1/human/activities/summaries/activities-20260301",
        "/v1/human/activities/summaries/sleeps-20260301",
        "/v1/human/nonsense",
        "/v1/human/shifts/summaries",
    ],
)
def test_it_answers_unknown_ids_and_paths_with_404(alice: Persona, path: str) -> None:
    response = access_client(alice.human).get(path)
    assert response.status_code == 404
    assert response.json()["statusCode"] == 404 and response.json()["error"] == "Not Found"


def test_it_needs_a_valid_access_token(alice: Persona) -> None:
    assert Client().get("/v1/human/activities").status_code == 401
    bad = Client(headers={"Authorization": "Bearer nope"}).get("/v1/human/profile")
    assert bad.status_code == 401 and bad.json()["message"] == "Invalid access token"
    _, value = Token.mint(kind=TokenKind.ACCESS, human=alice.human, ttl=3600)
    assert Client().get("/v1/human/profile", {"access_token": value}).json()["humanId"] == alice.human.pk
    _, session = Token.mint(kind=TokenKind.SESSION, human=alice.human, ttl=3600)
    assert Client().get("/v1/human/profile", {"access_token": session}).status_code == 401


def test_it_summarizes_each_local_day(alice: Persona) -> None:
    connection = demo_connection(alice.human)
    minus5 = -300
    # 02:00 UTC on Mar 2 is still Mar 1 at UTC-05:00.
    store(
        connection,
        [
            activity(1, T0, 30, 1000, tz=minus5),
            activity(2, T0 + timedelta(hours=14), 20, 600, tz=minus5),
            activity(3, T0 + timedelta(days=1), 10, 300, tz=minus5),
            sleep(1, T0 + timedelta(hours=10), 480, 30, tz=minus5),
            *[reading("heart_rate", n, T0 + timedelta(minutes=n), 50 + n, tz=minus5) for n in range(20)],
        ],
    )
    client = access_client(alice.human)

    days = client.get("/v1/human/activities/summaries")
    assert days.headers["X-Total-Count"] == "2"
    latest, first = days.json()
    assert (first["date"], first["steps"], first["count"], first["duration"]) == ("2026-03-01", 1600, 2, 3000)
    assert first["distance"] == 1200.0 and first["calories"] == 225.0
    assert (latest["date"], latest["steps"]) == ("2026-03-02", 300)
    assert first["id"] == "activities-20260301"

    by_id = client.get(f"/v1/human/activities/summaries/{first['id']}").json()
    assert by_id == first
    assert client.get("/v1/human/activities/summaries/2026-03-01").json() == first
    assert client.get("/v1/human/activities/summary/2026-03-01").json() == first
    assert client.get("/v1/human/activities/summary/2026-04-01").status_code == 404

    night = client.get("/v1/human/sleeps/summaries").json()[0]
    assert (night["timeInBed"], night["timeAsleep"], night["timeAwake"], night["efficiency"]) == (480, 450, 30, 94)

    heart = client.get("/v1/human/heart_rate/summaries/2026-03-01").json()
    assert (heart["min"], heart["max"], heart["avg"], heart["restingHeartRate"]) == (50, 69, 59.5, 51)
    assert heart["count"] == 20 and heart["unit"] == "bpm"


def test_it_keeps_summaries_in_step_with_changed_records(alice: Persona) -> None:
    connection = demo_connection(alice.human)
    store(connection, [activity(1, T0, 30, 1000), activity(2, T0 + timedelta(hours=1), 30, 500)])
    client = access_client(alice.human)
    assert client.get("/v1/human/activities/summary/2026-03-01").json()["steps"] == 1500

    store(connection, [activity(2, T0 + timedelta(hours=1), 30, 700)])  # the provider changed it
    assert client.get("/v1/human/activities/summary/2026-03-01").json()["steps"] == 1700

    store(connection, [activity(2, T0 + timedelta(days=3), 30, 700)])  # moved to another day
    assert client.get("/v1/human/activities/summary/2026-03-01").json()["steps"] == 1000
    assert client.get("/v1/human/activities/summary/2026-03-04").json()["steps"] == 700

    Record.objects.filter(external_id="act-1").delete()
    assert client.get("/v1/human/activities/summary/2026-03-01").status_code == 404
    assert client.get("/v1/human/activities/summaries").headers["X-Total-Count"] == "1"


def test_it_summarizes_one_source_the_same_way(alice: Persona) -> None:
    store(demo_connection(alice.human), [activity(1, T0, 30, 1000), activity(2, T0 + timedelta(hours=2), 5, 50)])
    store(demo_connection(alice.human, slug="otherwatch"), [activity(3, T0, 30, 4000)])
    client = access_client(alice.human)
    every = client.get("/v1/human/activities/summaries").json()[0]
    demo_only = client.get("/v1/human/activities/summaries", {"source": "demo"}).json()[0]
    other_only = client.get("/v1/human/activities/summaries", {"source": "otherwatch"}).json()[0]
    # One source answers for the day (the first connected), never the sum of both.
    assert (every["steps"], every["source"]) == (1050, "demo")
    assert (demo_only["steps"], other_only["steps"]) == (1050, 4000)
    assert set(every) == set(demo_only)
    ranged = client.get("/v1/human/activities/summaries", {"start_date": "2026-03-02", "end_date": "2026-03-09"})
    assert ranged.json() == [] and ranged.headers["X-Total-Count"] == "0"


def test_it_answers_cors_preflights_and_exposes_list_headers(alice: Persona) -> None:
    preflight = Client().options(
        "/v1/human/activities",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in preflight.headers

    response = access_client(alice.human).get("/v1/human/activities", headers={"Origin": "https://app.example.com"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert all(name in exposed for name in ("X-Total-Count", "Link", "X-Request-Id"))
    unauthenticated = Client().get("/v1/human/activities", headers={"Origin": "https://app.example.com"})
    assert unauthenticated.status_code == 401 and unauthenticated.headers["Access-Control-Allow-Origin"] == "*"


def test_it_shows_connected_sources_and_their_sync(alice: Persona, settings: Any) -> None:
    from sources.sync import connection_sync

    settings.DEMO_HISTORY_DAYS = 2
    connection = demo_connection(alice.human)
    client = access_client(alice.human)
    before = client.get("/v1/human/sources").json()
    assert before[0]["historySync"]["status"] == "pending" and before[0]["syncStatus"]["synchedAt"] is None

    connection_sync(connection_id=connection.pk)
    (source,) = client.get("/v1/human/sources").json()
    assert (source["id"], source["source"], source["sourceName"]) == (connection.pk, "demo", "Demo")
    assert "activities" in source["supportedDataTypes"]
    assert source["historySync"]["status"] == "completed" and source["historySync"]["oldestDate"]
    assert source["syncStatus"]["status"] == "ok" and source["syncStatus"]["synchedAt"].endswith("Z")

    summary = client.get("/v1/human/").json()
    assert summary["humanId"] == alice.human.pk and summary["email"] == alice.human.email
    assert summary["heartRate"]["unit"] == "bpm" and summary["weight"]["unit"] == "kg"
    assert summary["activitySummary"]["steps"] >= 0 and summary["sleepSummary"]["timeInBed"] > 0


@pytest.mark.django_db(transaction=True)
def test_it_leaves_no_rollup_behind_when_a_human_is_deleted(alice: Persona) -> None:
    from data_api.models import DayStat, ListCache, TypeVersion

    store(demo_connection(alice.human), [activity(1, T0, 30, 1000), reading("heart_rate", 1, T0, 60)])
    client = access_client(alice.human)
    assert client.get("/v1/human/activities/summaries").headers["X-Total-Count"] == "1"
    assert client.get("/v1/human/heart_rate/readings").headers["X-Total-Count"] == "1"
    human_id = alice.human.pk
    alice.human.delete()
    for model in (Record, DayStat, ListCache, TypeVersion):
        assert not model.objects.filter(human_id=human_id).exists(), model.__name__


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"start_date": "2026-03-02", "end_date": "2026-03-04"},
        {"created_since": "20200101T000000Z", "updated_before": "2999-01-01T00:00:00Z"},
        {"source": "demo", "updated_since": "2999-01-01T00:00:00Z"},
        {"source": "other"},
    ],
)
def test_it_selects_the_same_rows_in_sql_and_through_the_orm(alice: Persona, params: dict[str, str]) -> None:
    from django.db import connection as db
    from django.http import QueryDict

    from data_api.records import Filters

    connection = demo_connection(alice.human)
    store(connection, [reading("weight", n, T0 + timedelta(days=n), 80) for n in range(6)])
    query = QueryDict(mutable=True)
    query.update(params)
    filters = Filters.parse(query)
    through_orm = set(filters.apply(Record.objects.filter(human=alice.human)).values_list("id", flat=True))
    where, values = filters.sql()
    with db.cursor() as cursor:
        cursor.execute(f"SELECT id FROM data_api_record WHERE human_id = %s{where}", [alice.human.pk, *values])
        in_sql = {row[0] for row in cursor.fetchall()}
    assert through_orm == in_sql


def test_it_answers_a_warm_list_or_summary_page_in_two_queries_the_token_counting_its_rate_limits(
    alice: Persona,
) -> None:
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    from connect.models import RateLimitBucket

    if db.vendor != "postgresql":
        pytest.skip("the two-query path is PostgreSQL's")
    connection = demo_connection(alice.human)
    store(connection, [activity(n, T0 + timedelta(days=n), 30, 1000 + n) for n in range(5)])
    client = access_client(alice.human)
    for path in ("/v1/human/activities", "/v1/human/activities/summaries"):
        assert client.get(path).status_code == 200  # computes the cached total / rollup once
        counted = sorted(RateLimitBucket.objects.values_list("count", flat=True))
        with CaptureQueriesContext(db) as queries:
            assert client.get(path).status_code == 200
        # The token read in one statement with the rate limits' counts (a token seen before:
        # whose Human and Application name the buckets), then the page.
        assert len(queries) == 2, [q["sql"][:120] for q in queries.captured_queries]
        assert "INSERT INTO connect_ratelimitbucket" in queries.captured_queries[0]["sql"]
        assert sorted(RateLimitBucket.objects.values_list("count", flat=True)) == [n + 1 for n in counted]


def test_a_token_revoked_or_expired_after_use_is_refused_and_counts_nothing(alice: Persona) -> None:
    from django.utils import timezone

    from connect.models import RateLimitBucket

    _, value = Token.mint(kind=TokenKind.ACCESS, human=alice.human, ttl=3600)
    client = Client(headers={"Authorization": f"Bearer {value}"})
    assert client.get("/v1/human/activities").status_code == 200
    assert client.get("/v1/human/activities").status_code == 200  # this process knows the token's owner now
    counted = sorted(RateLimitBucket.objects.values_list("key", "count"))
    token = Token.objects.get(human=alice.human, kind=TokenKind.ACCESS, expires_at__gt=timezone.now())
    for change in ({"revoked_at": timezone.now()}, {"revoked_at": None, "expires_at": timezone.now()}):
        Token.objects.filter(pk=token.pk).update(**change)
        response = client.get("/v1/human/activities")
        assert response.status_code == 401, response.content
        assert sorted(RateLimitBucket.objects.values_list("key", "count")) == counted


def test_it_keeps_a_bounded_number_of_filtered_list_caches(alice: Persona) -> None:
    from django.db import connection as db

    from data_api.models import ListCache
    from data_api.selectors import MAX_CACHED_LISTS

    if db.vendor != "postgresql":
        pytest.skip("list caches are PostgreSQL's")
    connection = demo_connection(alice.human)
    store(connection, [reading("weight", n, T0 + timedelta(days=n), 80) for n in range(3)])
    client = access_client(alice.human)
    for second in range(MAX_CACHED_LISTS + 10):  # a caller polling with a new updated_since each time
        response = client.get("/v1/human/weight/readings", {"updated_since": f"2020-01-01T00:00:{second:02d}Z"})
        assert response.status_code == 200 and response.headers["X-Total-Count"] == "3"
    assert ListCache.objects.filter(human=alice.human, type="weight").count() <= MAX_CACHED_LISTS
