"""The demo as `scripts/demo` runs it, on SQLite: exchange tokens, connect Demo in Connect, sync,
then read every Data API route and the Application API's feeds as a client app would."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern
from django.utils import timezone

from humanapi_project import metrics
from sources.models import Connection, SyncOutcome
from sources.sync import connection_sync
from tests.factories import make_application


def routes() -> list[str]:
    from data_api import urls

    return [str(p.pattern) for p in urls.urlpatterns if isinstance(p, URLPattern) and "(?P" not in str(p.pattern)]


@pytest.mark.django_db(transaction=True)
def test_it_runs_the_demo_end_to_end_on_sqlite(settings: Any) -> None:
    settings.DEMO_HISTORY_DAYS = 3
    app = make_application("Demo app")
    client = Client()
    secret = {"client_id": app.application.client_id, "client_secret": app.client_secret}
    session = client.post(
        "/v1/connect/token",
        {**secret, "client_user_id": "u1", "client_user_email": "u1@example.com", "type": "session"},
        content_type="application/json",
    ).json()
    page = client.get("/connect/", {"token": session["session_token"]}).content.decode()
    csrf = re.search(r'"csrf": ?"([^"]+)"', page)
    assert csrf, "the Connect page carries its CSRF value"
    connected = client.post(
        "/connect/sources/demo/connect",
        {"token": session["session_token"], "csrf": csrf.group(1), "username": "demouser", "password": "password"},
    )
    assert connected.status_code == 200, connected.content
    connection = Connection.objects.get(human_id=session["human_id"], source="demo")
    run = connection_sync(connection_id=connection.pk)
    assert run is not None and run.outcome == SyncOutcome.SUCCEEDED, run and run.error

    access = client.post(
        "/v1/connect/token", {**secret, "client_user_id": "u1", "type": "access"}, content_type="application/json"
    ).json()["access_token"]
    reader = Client(headers={"Authorization": f"Bearer {access}"})
    day = reader.get("/v1/human/activities", {"limit": 1}).json()[0]["startTime"][:10]
    values = {"day": day, "ref": day, "record_id": "1"}
    for route in routes():
        path = "/v1/human/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], route)
        response = reader.get(path)
        assert response.status_code in (200, 404), (path, response.status_code, response.content[:300])
    summaries = reader.get("/v1/human/activities/summaries").json()
    assert summaries and all(s["source"] == "demo" for s in summaries)
    sleeps = reader.get("/v1/human/sleeps").json()
    assert all(s["day"] == s["endTime"][:10] for s in sleeps)  # Demo's offset is small: UTC day of the end
    assert reader.get(f"/v1/human/sleeps/summary/{sleeps[0]['day']}").status_code == 200
    [source] = reader.get("/v1/human/sources").json()
    assert source["syncStatus"]["status"] == "ok"

    basic = "Basic " + base64.b64encode(f"{app.app_key}:".encode()).decode()
    base = f"/v1/apps/{app.application.client_id}"
    for feed in ("users", "users/activities", "users/activities/summaries", "users/sleeps/summaries"):
        response = client.get(f"{base}/{feed}", HTTP_AUTHORIZATION=basic)
        assert response.status_code == 200 and response.json(), feed

    # The operator's metrics read, and beat folds them, the same way on SQLite.
    settings.METRICS_TOKEN = "metrics-token-on-sqlite"
    bearer = {"HTTP_AUTHORIZATION": "Bearer metrics-token-on-sqlite"}
    scraped = client.get("/metrics", **bearer)
    assert scraped.status_code == 200
    assert 'humanapi_sync_runs_total{outcome="succeeded",source="demo"} 1.0' in scraped.content.decode()
    metrics.fold(timezone.now() + timedelta(hours=1))
    again = client.get("/metrics", **bearer).content.decode()
    assert _counters(again) == _counters(scraped.content.decode())


def _counters(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("humanapi_") and "seconds " not in line]
