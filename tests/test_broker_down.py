"""With the message broker out of reach, connecting a source still succeeds: the connection and
its events are stored, and beat enqueues the sync once the broker is back."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from data_api.models import Notification
from sources.models import Connection, ConnectionStatus
from tests.live import LiveStack, start_stack, stop_stack

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
_STATE = re.compile(r'<script id="connect-state" type="application/json">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def stack(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    # Port 1 on loopback: nothing listens there, so every publish fails at once.
    live = start_stack(
        tmp_path_factory.mktemp("no-broker"), {"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}, worker=False
    )
    try:
        yield live
    finally:
        stop_stack(live)


def test_it_connects_a_source_while_the_broker_is_unreachable(stack: LiveStack) -> None:
    app = json.loads(
        stack.manage("create_application", "--name", "No broker", "--notify-url", "http://127.0.0.1:1/hooks")
    )
    session = requests.post(
        stack.url("/v1/connect/token"),
        json={
            **{k: app[k] for k in ("client_id", "client_secret")},
            "type": "session",
            "client_user_id": "u1",
            "client_user_email": "u1@example.com",
        },
        timeout=30,
    )
    assert session.status_code == 200, session.text
    token = session.json()["session_token"]
    page = requests.get(stack.url("/connect/"), params={"token": token}, timeout=10)
    state = json.loads(_STATE.search(page.text)[1])  # type: ignore[index]

    answer = requests.post(
        stack.url("/connect/sources/demo/connect"),
        data={"token": token, "csrf": state["csrf"], "username": "demouser", "password": "password"},
        timeout=60,
    )

    assert answer.status_code == 200, answer.text
    connection = Connection.objects.get(human__client_user_id="u1")
    assert connection.status == ConnectionStatus.ACTIVE and connection.next_sync_at is not None
    event = Notification.objects.get(event_type="source.connected")
    assert event.next_attempt_at is not None and event.delivered_at is None  # beat will deliver it
    assert "could not enqueue" in stack.log_tail(20000)
