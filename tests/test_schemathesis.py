"""Schemathesis over every operation the server publishes at /v1/schema, against the real server
(gunicorn on the test database), with its CLI and every phase (schema examples, the coverage
phase's boundary and invalid values, random fuzzing, stateful chains).

Each generated request carries valid credentials: the user's access token for the Data API, the
App Key for the Application API, and (part of the time) the Application's client credentials in
token-exchange bodies. Path parameters are often real: the ids and days of a user with 35 days of
synced Demo data, so the answers hold data. Every response must be no 5xx and exactly what the
schema documents (its status, content type, headers and body); invalid input must be refused
(negative_data_rejection), and an operation must refuse a request without its credentials
(ignored_auth). Bounded for CI: a few examples per operation and phase, 10 s per request; the
Data API's per-user limits are off, or most requests would get a (documented) 429 before
reaching the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from django.test import override_settings

from connect.models import Token
from sources.sync import connection_sync
from tests.factories import make_application, make_connection, make_human
from tests.live import LiveStack, start_stack, stop_stack

# The server commits its writes (users, tokens, rate-limit counters, tallies); the flush after the
# test removes them all, with the data the fixture committed.
pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "ignored_auth",
)
MAX_EXAMPLES = 5  # per operation and phase, beyond the coverage phase's own cases: 114 operations in CI's time


@dataclass
class World:
    stack: LiveStack
    client_id: str
    client_secret: str
    app_key: str
    human_id: str
    spare_human_id: str  # the one DELETE /users/{humanId} may remove
    access_token: str


@pytest.fixture(scope="module")
def world(django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """gunicorn over the test database, and an Application whose user has synced Demo data,
    committed (the server is another process)."""
    with django_db_blocker.unblock(), override_settings(DEMO_HISTORY_DAYS=35, DEMO_HEART_RATE_INTERVAL_MINUTES=60):
        app = make_application("Schemathesis app")
        human = make_human(app, "st-user-1", "st-user-1@example.com")
        connection_sync(connection_id=make_connection(human).pk)
        spare = make_human(app, "st-user-2", "st-user-2@example.com")
        _token, access = Token.mint(kind="access", human=human, ttl=3600)
        # Limits that would answer most requests with a 429 (documented) before their logic runs.
        unlimited = dict.fromkeys(("RATE_LIMIT_DATA_PER_HUMAN", "RATE_LIMIT_DATA_LIST_PASSES"), "0")
        stack = start_stack(tmp_path_factory.mktemp("schemathesis"), unlimited, worker=False)
        try:
            yield World(
                stack,
                app.application.client_id,
                app.client_secret,
                app.app_key,
                str(human.pk),
                str(spare.pk),
                access,
            )
        finally:
            stop_stack(stack)


def real_values(world: World, spec: dict[str, Any]) -> tuple[dict[str, list[str]], list[str]]:
    """The ids each Data API detail route can find (read through the lists), and the days that
    hold data."""
    ids: dict[str, list[str]] = {}
    days: set[str] = set()
    headers = {"Authorization": f"Bearer {world.access_token}"}
    for path in spec["paths"]:
        if not path.startswith("/v1/human/") or "{" in path:
            continue
        detail = next((p for p in (f"{path}/{{id}}", f"{path}/{{ref}}") if p in spec["paths"]), None)
        if detail is None:
            continue
        answer = requests.get(world.stack.url(path), params={"limit": 500}, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        items = answer.json()
        if items:
            ids[detail] = [item["id"] for item in items][:20]
            one = requests.get(
                world.stack.url(detail.replace("{id}", ids[detail][0]).replace("{ref}", ids[detail][0])),
                headers=headers,
                timeout=30,
            )
            assert one.status_code == 200, f"{detail}: {one.text}"
        for item in items:
            for key in ("date", "day", "timestamp", "startTime"):
                if isinstance(item.get(key), str):
                    days.add(item[key][:10])
    return ids, sorted(days)


def toml(config: dict[str, Any]) -> str:
    """`config` as TOML: one line per top-level key, nested values as inline tables."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)  # strings, numbers and booleans are written alike

    text = "".join(f"{json.dumps(k)} = {value(v)}\n" for k, v in config.items())
    assert tomllib.loads(text) == config
    return text


def schemathesis_config(world: World, spec: dict[str, Any]) -> dict[str, Any]:
    ids, days = real_values(world, spec)
    assert days and len(ids) > 10, "the Demo user has data to serve"
    dictionaries: dict[str, Any] = {
        "days": {"values": days},
        "humans": {"values": [world.human_id]},
        "client_ids": {"values": [world.client_id]},
        "client_secrets": {"values": [world.client_secret]},
        "users": {"values": ["st-user-1"]},
    }
    # An operation matching several entries takes the parameters of one only: one entry each.
    operations: list[dict[str, Any]] = [
        {
            "include-name": "DELETE /v1/apps/{client_id}/users/{humanId}",
            "parameters": {"path.humanId": world.spare_human_id},
        },
    ]
    for n, (path, values) in enumerate(sorted(ids.items())):
        name, param = f"ids{n}", "path.ref" if path.endswith("{ref}") else "path.id"
        dictionaries[name] = {"values": values + days if param == "path.ref" else values}
        operations.append({"include-path": path, "parameters": {param: {"dictionary": name, "probability": 0.6}}})
    return {
        "dictionaries": dictionaries,
        # Real values in part of the cases; Schemathesis' own in the rest.
        "parameters": {
            "path.client_id": world.client_id,
            "path.day": {"dictionary": "days", "probability": 0.5},
            "path.humanId": {"dictionary": "humans", "probability": 0.7},
            "query.humanId": {"dictionary": "humans", "probability": 0.5},
            "body.client_id": {"dictionary": "client_ids", "probability": 0.7},
            "body.client_secret": {"dictionary": "client_secrets", "probability": 0.7},
            "body.client_user_id": {"dictionary": "users", "probability": 0.5},
            "body.clientId": {"dictionary": "client_ids", "probability": 0.7},
            "body.clientSecret": {"dictionary": "client_secrets", "probability": 0.7},
            "body.humanId": {"dictionary": "humans", "probability": 0.5},
        },
        "auth": {
            "openapi": {
                "accessToken": {"bearer": world.access_token},
                "appKey": {"username": world.app_key, "password": ""},
            }
        },
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "request-timeout": 10,
        "workers": 1,  # several threads trip a CPython 3.11 bug in ast.parse (Hypothesis calls it)
        "cache": {"enabled": False},
        "hooks": str(Path(__file__).with_name("schemathesis_hooks.py")),
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        # Methods a path doesn't document are walked on every route by tests/test_bad_input.py.
        "phases": {"coverage": {"unexpected-methods": []}},
        "operations": operations,
    }


def test_every_operation_answers_as_documented(world: World, tmp_path: Path) -> None:
    spec = requests.get(world.stack.url("/v1/schema"), timeout=30).json()
    (tmp_path / "schemathesis.toml").write_text(toml(schemathesis_config(world, spec)))
    run = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", world.stack.url("/v1/schema")],
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(run.stdout[-20000:])
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-3000:] + world.stack.log_tail()
    operations = sum(len(methods) for methods in spec["paths"].values())
    assert f"Selected: {operations}/{operations}" in run.stdout and f"Tested: {operations}" in run.stdout
