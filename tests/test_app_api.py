from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest
from django.conf import LazySettings
from django.test import Client
from django.utils import timezone

from connect.models import AuditEntry, Human, Token
from data_api.app_services import app_user_delete
from data_api.models import Record
from sources.models import Connection, SyncRun
from sources.sync import connection_sync
from sources.types import BATCH_TYPES
from tests.app_client import app_call
from tests.conftest import Persona
from tests.data_api_helpers import stored_counts
from tests.factories import make_connection, make_human

USER_KEYS = {"humanId", "externalId", "appId", "createdAt", "updatedAt"}


@pytest.fixture
def synced(alice: Persona, settings: LazySettings) -> Connection:
    """Alice's user with three days of Demo data."""
    settings.DEMO_HISTORY_DAYS = 3
    connection = make_connection(alice.human)
    run = connection_sync(connection_id=connection.pk)
    assert run is not None and run.outcome == "succeeded"
    return connection


def assert_error(response: Any, status: int) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert response.status_code == status, body
    assert body["statusCode"] == status and body["message"] and body["requestId"] == response["X-Request-Id"]
    return body


# --- users ---------------------------------------------------------------------------------


def test_it_lists_only_the_applications_users_with_pagination(client: Client, alice: Persona, charlie: Persona) -> None:
    for n in range(2, 5):
        make_human(alice.app, f"alice-user-{n}", f"u{n}@example.com")
    first = app_call(client, alice, "GET", "users?limit=3")
    assert first.status_code == 200
    assert first["X-Total-Count"] == "4"
    assert 'rel="next"' in first["Link"] and "offset=3" in first["Link"]
    rest = app_call(client, alice, "GET", "users?limit=3&offset=3")
    users = first.json() + rest.json()
    assert [u["externalId"] for u in users] == ["alice-user-1", "alice-user-2", "alice-user-3", "alice-user-4"]
    assert all(set(u) == USER_KEYS for u in users)
    assert {u["appId"] for u in users} == {alice.app.application.client_id}
    assert charlie.human.pk not in {u["humanId"] for u in users}


def test_it_finds_a_user_by_external_id(client: Client, alice: Persona) -> None:
    make_human(alice.app, "alice-user-2", "u2@example.com")
    found = app_call(client, alice, "GET", "users?externalId=alice-user-2").json()
    assert [u["externalId"] for u in found] == ["alice-user-2"]


def test_it_gets_one_user(client: Client, alice: Persona) -> None:
    response = app_call(client, alice, "GET", f"users/{alice.human.pk}")
    assert response.status_code == 200
    assert response.json()["humanId"] == alice.human.pk
    assert response.json()["externalId"] == "alice-user-1"
    assert response.json()["createdAt"].endswith("Z")


def test_it_answers_404_for_an_unknown_user_or_type(client: Client, alice: Persona) -> None:
    assert "No user" in assert_error(app_call(client, alice, "GET", "users/0123456789abcdef01234567"), 404)["message"]
    assert_error(app_call(client, alice, "GET", "users/stepz"), 404)
    assert_error(app_call(client, alice, "GET", "users/" + "a" * 300), 404)


def test_it_creates_a_user_once_and_answers_200_on_a_repeat(client: Client, alice: Persona) -> None:
    created = app_call(client, alice, "POST", "users", data={"externalId": "new-user"}, content_type="application/json")
    assert created.status_code == 201
    assert set(created.json()) == USER_KEYS
    again = app_call(client, alice, "POST", "users", data={"externalId": "new-user"}, content_type="application/json")
    assert again.status_code == 200
    assert again.json()["humanId"] == created.json()["humanId"]
    assert Human.objects.filter(application=alice.app.application, client_user_id="new-user").count() == 1
    assert AuditEntry.objects.filter(action="user.created", human_id=created.json()["humanId"]).count() == 1


@pytest.mark.parametrize(
    ("body", "key"), [({}, "externalId"), ({"externalId": ""}, "externalId"), ({"externalId": "x" * 256}, "externalId")]
)
def test_it_rejects_a_bad_user_body(client: Client, alice: Persona, body: dict[str, str], key: str) -> None:
    before = Human.objects.count()
    response = app_call(client, alice, "POST", "users", data=body, content_type="application/json")
    assert assert_error(response, 400)["validation"]["keys"] == [key]
    assert Human.objects.count() == before


def test_it_rejects_a_body_that_is_not_json(client: Client, alice: Persona) -> None:
    assert_error(app_call(client, alice, "POST", "users", data="{nope", content_type="application/json"), 400)


# --- deletion ------------------------------------------------------------------------------


def test_it_deletes_a_user_and_every_record_token_and_connection(
    client: Client, alice: Persona, synced: Connection
) -> None:
    human_id = alice.human.pk
    Token.mint(kind="access", human=alice.human, ttl=3600)
    other = make_human(alice.app, "alice-user-2", "u2@example.com")
    stored = stored_counts(human_id=human_id).total()
    assert stored > 100

    response = app_call(client, alice, "DELETE", f"users/{human_id}")

    assert response.status_code == 204
    assert not Human.objects.filter(pk=human_id).exists()
    assert not stored_counts(human_id=human_id)
    assert not stored_counts(connection_id=synced.pk)
    assert not Token.objects.filter(human_id=human_id).exists()
    assert not Connection.objects.filter(human_id=human_id).exists()
    assert not SyncRun.objects.filter(connection_id=synced.pk).exists()
    assert Human.objects.filter(pk=other.pk).exists()
    entry = AuditEntry.objects.get(action="user.deleted", human_id=human_id)
    assert entry.actor == "app_server" and entry.details["records"] == stored and entry.details["sources"] == ["demo"]
    assert_error(app_call(client, alice, "GET", f"users/{human_id}"), 404)


def test_it_deletes_records_in_batches(alice: Persona, synced: Connection) -> None:
    stored = stored_counts(human_id=alice.human.pk).total()
    erased = app_user_delete(human=alice.human, request=None, batch=97)
    assert erased.records == stored and erased.connections == 1
    assert not stored_counts(human_id=alice.human.pk)


# --- batch records -------------------------------------------------------------------------


def test_it_serves_every_batch_type_with_each_records_human(
    client: Client, alice: Persona, charlie: Persona, synced: Connection
) -> None:
    make_connection(charlie.human)
    connection_sync(connection_id=Connection.objects.get(human=charlie.human).pk)
    stored = stored_counts(human=alice.human)
    for route, kind in BATCH_TYPES.items():
        response = app_call(client, alice, "GET", f"users/{route}?limit=500")
        assert response.status_code == 200, route
        items = response.json()
        assert response["X-Total-Count"] == str(stored[kind]), route
        assert len(items) == min(500, stored[kind]), route
        assert {item["humanId"] for item in items} <= {alice.human.pk}, route
    assert stored["heart_rate"] > 0 and stored["shifts"] == 0


def test_it_orders_a_batch_by_update_for_incremental_pulls(client: Client, alice: Persona, synced: Connection) -> None:
    weights = list(Record.objects.filter(human=alice.human, type="weight").order_by("id"))
    later = timezone.now() + timedelta(minutes=5)
    # Two records change at the same instant: the id breaks the tie.
    Record.objects.filter(pk__in=[weights[0].pk, weights[1].pk]).update(updated_at=later)
    everything = app_call(client, alice, "GET", "users/weights").json()
    stamps = [(w["updatedAt"], int(w["id"])) for w in everything]
    assert stamps == sorted(stamps)
    assert [w["id"] for w in everything[-2:]] == [str(weights[0].pk), str(weights[1].pk)]

    since = (later - timedelta(seconds=1)).strftime("%Y%m%dT%H%M%SZ")
    changed = app_call(client, alice, "GET", f"users/weights?updated_since={since}").json()
    assert [w["id"] for w in changed] == [str(weights[0].pk), str(weights[1].pk)]
    assert all(w["humanId"] == alice.human.pk and "value" in w for w in changed)


def test_it_pages_a_batch_with_link_headers(client: Client, alice: Persona, synced: Connection) -> None:
    total = stored_counts(human=alice.human)["heart_rate"]
    seen: list[str] = []
    offset = 0
    while True:
        response = app_call(client, alice, "GET", f"users/heart_rates?limit=100&offset={offset}")
        assert response["X-Total-Count"] == str(total)
        seen += [r["id"] for r in response.json()]
        if 'rel="next"' not in response.get("Link", ""):
            break
        offset += 100
    assert len(seen) == len(set(seen)) == total


def test_it_sums_daily_summaries_per_user_and_day(client: Client, alice: Persona, synced: Connection) -> None:
    steps: dict[str, int] = defaultdict(int)
    for record in Record.objects.filter(human=alice.human, type="activities"):
        steps[record.local_day.isoformat()] += record.data["steps"]
    summaries = app_call(client, alice, "GET", "users/activities/summaries").json()
    assert {s["date"]: s["steps"] for s in summaries} == steps
    assert all(
        s["humanId"] == alice.human.pk and s["id"] == f"activities-{s['date'].replace('-', '')}" for s in summaries
    )

    sleeps = app_call(client, alice, "GET", "users/sleeps/summaries").json()
    assert sleeps and all(s["timeInBed"] >= s["timeAsleep"] > 0 and 0 < s["efficiency"] <= 100 for s in sleeps)


def test_it_returns_only_summaries_of_changed_days(client: Client, alice: Persona, synced: Connection) -> None:
    one = Record.objects.filter(human=alice.human, type="activities").first()
    assert one is not None
    later = timezone.now() + timedelta(minutes=5)
    Record.objects.filter(pk=one.pk).update(updated_at=later)
    since = (later - timedelta(seconds=1)).isoformat()
    changed = app_call(client, alice, "GET", "users/activities/summaries", data={"updated_since": since}).json()
    assert [s["date"] for s in changed] == [one.local_day.isoformat()]


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("users/activities?updated_since=yesterday", "updated_since"),
        ("users/activities?limit=0", "limit"),
        ("users/activities?limit=501", "limit"),
        ("users/activities?offset=-1", "offset"),
        ("users/activities?start_date=2026-01-01", "end_date"),
        ("users/activities/summaries?created_since=2026-13-01", "created_since"),
        ("users/weights?source=NOT%20A%20SLUG", "source"),
        ("users?limit=x", "limit"),
        ("audit?since=never", "since"),
        ("audit?humanId=%27%3B--", "humanId"),
    ],
)
def test_it_rejects_bad_query_parameters(client: Client, alice: Persona, path: str, key: str) -> None:
    body = assert_error(app_call(client, alice, "GET", path), 400)
    assert body["validation"]["keys"] == [key]
    assert key in body["message"]


# --- sources and sync ----------------------------------------------------------------------


def test_it_shows_each_connection_with_its_sync_history(client: Client, alice: Persona, synced: Connection) -> None:
    connection_sync(connection_id=synced.pk)
    sources = app_call(client, alice, "GET", f"users/{alice.human.pk}/sources").json()
    assert len(sources) == 1
    demo = sources[0]
    assert demo["id"] == synced.pk and demo["source"] == "demo" and demo["sourceName"] == "Demo"
    assert demo["status"] == "active"
    assert demo["historySync"]["status"] == "completed" and demo["historySync"]["oldestDate"]
    assert demo["syncStatus"]["status"] == "ok" and demo["syncStatus"]["synchedAt"]
    assert [r["kind"] for r in demo["syncRuns"]] == ["incremental", "history"]
    history = demo["syncRuns"][1]
    assert history["outcome"] == "succeeded" and history["counts"]["activities"]["created"] > 0
    assert history["error"] == "" and history["finishedAt"] >= history["startedAt"]


def test_it_queues_a_sync_now_and_audits_it(
    client: Client, alice: Persona, synced: Connection, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = app_call(client, alice, "POST", f"users/{alice.human.pk}/sync")
    assert response.status_code == 202
    assert response.json()["connections"] == [{"id": synced.pk, "source": "demo"}]
    assert len(callbacks) == 1  # the sync task, published once the request commits
    entry = AuditEntry.objects.filter(action="connection.resync").latest("id")
    assert entry.human_id == alice.human.pk and entry.actor == "app_server" and entry.details["source"] == "demo"


def test_it_answers_409_when_there_is_nothing_to_sync(client: Client, alice: Persona) -> None:
    assert (
        "no active connection"
        in assert_error(app_call(client, alice, "POST", f"users/{alice.human.pk}/sync"), 409)["message"]
    )
    response = app_call(
        client, alice, "POST", f"users/{alice.human.pk}/sync", data={"source": "Bad!"}, content_type="application/json"
    )
    assert assert_error(response, 400)["validation"]["keys"] == ["source"]


# --- auth and audit ------------------------------------------------------------------------


def test_it_requires_the_app_key(client: Client, alice: Persona) -> None:
    url = f"/v1/apps/{alice.app.application.client_id}/users"
    missing = client.get(url)
    assert_error(missing, 401)
    assert missing["WWW-Authenticate"].startswith("Basic")
    assert_error(app_call(client, alice, "GET", "users", key="wrong-key"), 401)
    assert_error(client.get(url, HTTP_AUTHORIZATION="Basic !!!notbase64"), 401)
    assert_error(client.get(url, HTTP_AUTHORIZATION=f"Bearer {alice.app.app_key}"), 401)
    assert_error(client.get("/v1/apps/no-such-app/users", HTTP_AUTHORIZATION="Basic eDo="), 401)


def test_it_answers_405_for_a_wrong_method(client: Client, alice: Persona) -> None:
    assert_error(app_call(client, alice, "PUT", "users"), 405)


def test_it_lists_the_audit_log_newest_first_with_filters(client: Client, alice: Persona) -> None:
    ids = [
        app_call(client, alice, "POST", "users", data={"externalId": f"x{n}"}, content_type="application/json").json()[
            "humanId"
        ]
        for n in range(3)
    ]
    entries = app_call(client, alice, "GET", "audit").json()
    stamps = [(e["at"], e["id"]) for e in entries]
    assert stamps == sorted(stamps, reverse=True)
    assert entries[0]["action"] == "user.created" and entries[0]["actor"] == "app_server"
    assert entries[0]["ip"] == "127.0.0.1"
    created = app_call(client, alice, "GET", "audit?action=user.created&limit=2")
    assert created["X-Total-Count"] == "3" and len(created.json()) == 2
    mine = app_call(client, alice, "GET", f"audit?humanId={ids[1]}").json()
    assert [(e["humanId"], e["action"]) for e in mine] == [(ids[1], "user.created")]
    future = (timezone.now() + timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")
    assert app_call(client, alice, "GET", f"audit?since={future}").json() == []


def test_it_serves_the_same_summaries_as_the_data_api(client: Client, alice: Persona, synced: Connection) -> None:
    _token, access = Token.mint(kind="access", human=alice.human, ttl=3600)
    for kind in ("activities", "sleeps"):
        batch = app_call(client, alice, "GET", f"users/{kind}/summaries").json()
        own = client.get(f"/v1/human/{kind}/summaries", HTTP_AUTHORIZATION=f"Bearer {access}").json()
        assert sorted(batch, key=lambda s: s["date"]) == sorted(own, key=lambda s: s["date"])
