"""The whole Connect flow over real HTTP, as a client app's server and its user's browser see it:
an Application made by the operator's command, token exchange, the Connect page and its Demo
form, the real Celery worker syncing, and the Data API serving exactly what Demo generated."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import celery
import pytest
import requests

from data_api.models import Record
from sources.base import SyncContext, as_records
from sources.http import ProviderHttp
from sources.models import Connection, SyncOutcome, SyncRun
from sources.providers.demo import TZ_OFFSET, DemoSource
from tests.live import REDIS_URL, LiveStack, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ORIGIN = "http://127.0.0.1:9700"
STATE = re.compile(r'<script id="connect-state" type="application/json">(.*?)</script>', re.S)
LINK = re.compile(r'<([^>]+)>; rel="(\w+)"')


# --- the client app's side ------------------------------------------------------------------


def create_application(stack: LiveStack, name: str) -> dict[str, str]:
    out = stack.manage("create_application", "--name", name, "--origin", ORIGIN)
    created: dict[str, str] = json.loads(out)
    return created


def exchange(stack: LiveStack, app: dict[str, str], kind: str, user: str) -> requests.Response:
    body = {"client_id": app["client_id"], "client_secret": app["client_secret"], "type": kind}
    body |= {"client_user_id": user, "client_user_email": f"{user}@example.com"}
    return requests.post(stack.url("/v1/connect/token"), json=body, timeout=10)


def session_token(stack: LiveStack, app: dict[str, str], user: str) -> tuple[str, str]:
    response = exchange(stack, app, "session", user)
    assert response.status_code == 200, response.text
    return response.json()["session_token"], response.json()["human_id"]


# --- the user's browser, without a browser -----------------------------------------------------


def connect_state(stack: LiveStack, token: str) -> dict[str, Any]:
    page = requests.get(stack.url("/connect/"), params={"token": token, "mode": "auth"}, timeout=10)
    assert page.status_code == 200
    assert "frame-ancestors " + ORIGIN in page.headers["Content-Security-Policy"]
    match = STATE.search(page.text)
    assert match, "the Connect page carries its state as JSON"
    state: dict[str, Any] = json.loads(match.group(1))
    return state


def post_demo_form(stack: LiveStack, token: str, csrf: str, password: str) -> requests.Response:
    form = {"token": token, "csrf": csrf, "username": "demouser", "password": password}
    return requests.post(stack.url("/connect/sources/demo/connect"), data=form, timeout=10)


# --- what Demo holds ---------------------------------------------------------------------------


def demo_activities(now: datetime) -> dict[str, dict[str, Any]]:
    """The activities a Demo sync at `now` stores, keyed by provider id, as the Data API shows them."""
    plugin = DemoSource({})
    ctx = SyncContext(
        connection_id="",
        external_user_id="demouser",
        credentials={},
        cursor={},
        history=True,
        now=now,
        http=ProviderHttp(),
        settings={},
    )
    out = {}
    for page in plugin.fetch(ctx):
        for r in as_records(plugin.normalize(page, ctx)):
            if r.type == "activities":
                out[r.external_id] = {
                    "source": "demo",
                    "startTime": r.start_time.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    "endTime": r.end_time.strftime("%Y-%m-%dT%H:%M:%S.000Z") if r.end_time else None,
                    "tzOffset": "-05:00",
                    **r.fields,
                    "sourceData": dict(r.source_data),
                }
    return out


def possible_activities(started: datetime, finished: datetime) -> list[dict[str, dict[str, Any]]]:
    """What a sync whose clock read somewhere in [started, finished] may have stored: the set only
    changes when an activity starts or a local day begins, so those instants cover every case."""
    moments = {started, finished}
    moments |= {
        datetime.fromisoformat(a["startTime"].replace("Z", "+00:00"))
        for a in demo_activities(finished).values()
        if started < datetime.fromisoformat(a["startTime"].replace("Z", "+00:00")) <= finished
    }
    local_midnight = (finished + timedelta(minutes=TZ_OFFSET)).replace(hour=0, minute=0, second=0, microsecond=0)
    boundary = local_midnight - timedelta(minutes=TZ_OFFSET)
    if started < boundary <= finished:
        moments.add(boundary)
    return [demo_activities(moment) for moment in sorted(moments)]


def shown(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in ("id", "humanId", "createdAt", "updatedAt")}


# --- the live worker ---------------------------------------------------------------------------


def finished_runs(connection_id: str, count: int) -> list[SyncRun]:
    runs = list(SyncRun.objects.filter(connection_id=connection_id, finished_at__isnull=False).order_by("started_at"))
    return runs if len(runs) >= count else []


def send_sync(stack: LiveStack, connection_id: str) -> None:
    """Queue a sync the way beat does, through the stack's own broker and queue."""
    sender = celery.Celery("e2e-sender", set_as_current=False)  # the project's app stays the current one
    # Explicit: Celery prefers a CELERY_BROKER_URL environment variable (memory:// in tests) to `broker=`.
    with sender.connection_for_write(REDIS_URL) as connection:
        sender.send_task(
            "sources.tasks.sync_connection",
            args=[connection_id],
            queue=stack.env["CELERY_TASK_DEFAULT_QUEUE"],
            connection=connection,
        )


def get_activities(stack: LiveStack, access: str, **params: str) -> requests.Response:
    return requests.get(
        stack.url("/v1/human/activities"), params=params, headers={"Authorization": f"Bearer {access}"}, timeout=10
    )


def links(response: requests.Response) -> dict[str, str]:
    return {rel: url for url, rel in LINK.findall(response.headers.get("Link", ""))}


def read_all_pages(stack: LiveStack, access: str, limit: int, total: int) -> list[dict[str, Any]]:
    """Walk the list by its `next` links, checking the paging headers of every page."""
    response = get_activities(stack, access, source="demo", limit=str(limit))
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        assert response.status_code == 200, response.text
        assert response.headers["X-Total-Count"] == str(total)
        page = response.json()
        assert len(page) == min(limit, total - offset)
        items.extend(page)
        rels = links(response)
        last_offset = (total - 1) // limit * limit
        expected_rels = {
            "next": offset + limit < total,
            "prev": offset > 0,
            "last": offset != last_offset,
            "first": offset != 0,
        }
        assert set(rels) == {rel for rel, present in expected_rels.items() if present}
        for rel, url in rels.items():
            parts = urlsplit(url)
            assert f"{parts.scheme}://{parts.netloc}" == stack.base_url
            assert parts.path == "/v1/human/activities"
            query = parse_qs(parts.query)
            assert query["source"] == ["demo"] and query["limit"] == [str(limit)]
            want = {"next": offset + limit, "prev": max(0, offset - limit), "last": last_offset, "first": 0}[rel]
            assert query["offset"] == [str(want)]
        if "next" not in rels:
            return items
        offset += limit
        response = requests.get(rels["next"], headers={"Authorization": f"Bearer {access}"}, timeout=10)


# --- the tests ---------------------------------------------------------------------------------


def test_it_connects_demo_syncs_it_and_serves_exactly_its_records(live_stack: LiveStack) -> None:
    app = create_application(live_stack, "E2E app")
    user = f"e2e-{uuid.uuid4().hex[:6]}"
    token, human_id = session_token(live_stack, app, user)
    assert exchange(live_stack, app, "access", user).status_code == 404  # nothing connected yet

    state = connect_state(live_stack, token)
    assert state["status"] == "" and state["connections"] == []
    assert "Demo" in [s["name"] for s in state["sources"]]
    connected = post_demo_form(live_stack, token, state["csrf"], "password")
    assert connected.status_code == 200, connected.text
    assert connected.json()["status"] == "CONNECTED_SOURCE"
    connection_id = connected.json()["connection"]["id"]
    assert connected.json()["currentConnections"][0]["id"] == connection_id

    (first,) = wait_until(lambda: finished_runs(connection_id, 1), timeout=90, message="the history sync")
    assert first.outcome == SyncOutcome.SUCCEEDED, first.error
    assert first.finished_at is not None

    access = exchange(live_stack, app, "access", user)
    assert access.status_code == 200, access.text
    assert access.json()["human_id"] == human_id
    access_token = access.json()["access_token"]

    total = int(get_activities(live_stack, access_token).headers["X-Total-Count"])
    assert total >= 3
    limit = -(-total // 3)  # three pages: first, middle and last
    items = read_all_pages(live_stack, access_token, limit, total)
    served = {item["sourceData"]["id"]: shown(item) for item in items}
    assert len(served) == len(items) == total  # no duplicates
    assert served in possible_activities(first.started_at, first.finished_at)
    starts = [item["startTime"] for item in items]
    assert starts == sorted(starts, reverse=True)  # newest first
    assert {item["humanId"] for item in items} == {human_id}

    send_sync(live_stack, connection_id)
    runs = wait_until(lambda: finished_runs(connection_id, 2), timeout=60, message="the second sync")
    second = runs[1]
    assert second.outcome == SyncOutcome.SUCCEEDED and second.kind == "incremental"
    assert second.finished_at is not None
    after = get_activities(live_stack, access_token, limit="500").json()
    again = {item["sourceData"]["id"]: shown(item) for item in after}
    assert len(again) == len(after)  # still one copy of each
    assert again in [served | later for later in possible_activities(second.started_at, second.finished_at)]
    # The records were left in place: same ids, same creation times.
    before_ids = {item["id"]: item["createdAt"] for item in items}
    assert {item["id"]: item["createdAt"] for item in after if item["id"] in before_ids} == before_ids
    assert Record.objects.filter(connection_id=connection_id, type="activities").count() == len(again)


def test_it_rejects_a_wrong_demo_password_and_stores_nothing(live_stack: LiveStack) -> None:
    app = create_application(live_stack, "E2E wrong password")
    token, human_id = session_token(live_stack, app, "e2e-wrong")
    state = connect_state(live_stack, token)

    refused = post_demo_form(live_stack, token, state["csrf"], "not-the-password")

    assert refused.status_code == 400
    assert refused.headers["Content-Type"].startswith("application/json")
    body = refused.json()
    assert body["statusCode"] == 400 and body["error"] == "Bad Request"
    assert "Wrong username or password" in body["message"]
    assert "not-the-password" not in refused.text
    assert body["requestId"] == refused.headers["X-Request-Id"]
    assert not Connection.objects.filter(human_id=human_id).exists()
    assert exchange(live_stack, app, "access", "e2e-wrong").status_code == 404
    assert connect_state(live_stack, token)["connections"] == []


def test_it_answers_bad_requests_with_the_error_envelope(live_stack: LiveStack) -> None:
    app = create_application(live_stack, "E2E errors")
    token, _human_id = session_token(live_stack, app, "e2e-errors")
    state = connect_state(live_stack, token)
    connected = post_demo_form(live_stack, token, state["csrf"], "password")
    assert connected.status_code == 200
    access = exchange(live_stack, app, "access", "e2e-errors").json()["access_token"]
    # Let the history sync finish: the test database is flushed after the test.
    wait_until(lambda: finished_runs(connected.json()["connection"]["id"], 1), timeout=90, message="the sync")

    for limit in ("0", "501", "ten"):
        bad = get_activities(live_stack, access, limit=limit)
        assert bad.status_code == 400, bad.text
        body = bad.json()
        assert body["statusCode"] == 400 and body["error"] == "Bad Request"
        assert "limit" in body["message"]
        assert body["requestId"] and body["requestId"] == bad.headers["X-Request-Id"]

    missing = requests.get(live_stack.url("/v1/human/activities"), timeout=10)
    assert missing.status_code == 401
    assert missing.json()["statusCode"] == 401 and missing.json()["requestId"] == missing.headers["X-Request-Id"]

    wrong = get_activities(live_stack, "not-a-token")
    assert wrong.status_code == 401 and wrong.json()["error"] == "Unauthorized"

    forged = requests.post(
        live_stack.url("/connect/sources/demo/connect"),
        data={"token": token, "csrf": "forged", "username": "demouser", "password": "password"},
        timeout=10,
    )
    assert forged.status_code == 403 and forged.json()["statusCode"] == 403
