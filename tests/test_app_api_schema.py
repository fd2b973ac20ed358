"""The OpenAPI schema (/v1/schema) against real responses of the Application API (CONTRACT §7)
and the token exchange (§2): every path, method, status and documented header, strictly (a
field the code returns but the schema doesn't document fails too). Also: the schema and the
URLconf list the same routes, and /docs shows every operation."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import LazySettings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from data_api.app_selectors import SUMMARY_SUMS
from data_api.openapi import schema
from sources.base import Record as NewRecord
from sources.sync import connection_sync
from sources.types import BATCH_TYPES
from tests.app_client import app_call, basic
from tests.data_api_helpers import T0, access_client, reading, store
from tests.factories import Persona, make_connection, make_human
from tests.openapi_check import check_response, errors, header_errors, template_of
from tests.test_data_api_schema import every_concrete_path

APP_PREFIX = "/v1/apps/{client_id}/"
TOKEN_PATHS = ("/v1/connect/token", "/v1/connect/tokens", "/v1/connect/publictokens")


@pytest.fixture
def synced(alice: Persona, settings: LazySettings) -> Persona:
    """Alice's user with four days of Demo data, synced by the engine, plus a shift, a
    timeclock and a height (which Demo yields on the first of a month only), so every batch
    feed has records."""
    settings.DEMO_HISTORY_DAYS = 4  # at least one weekday: locations are weekday commutes
    settings.DEMO_HEART_RATE_INTERVAL_MINUTES = 120
    demo = make_connection(alice.human)
    run = connection_sync(connection_id=demo.pk)
    assert run is not None and run.outcome == "succeeded"
    start = T0 + timedelta(hours=2)
    common: dict[str, Any] = {"start_time": start, "end_time": start + timedelta(hours=8), "tz_offset": 60}
    work = {"position": "Barista", "location": "Main St"}
    store(
        make_connection(alice.human, slug="humanity"),
        [
            NewRecord(
                type="shifts",
                external_id="s1",
                fields={"title": "Morning", "published": True, "employeeId": "42", **work},
                **common,
            ),
            NewRecord(type="timeclocks", external_id="t1", fields={"duration": 480, "shiftId": "s1", **work}, **common),
        ],
    )
    store(demo, [reading("height", 1, T0, 178.0, unit="cm")])
    return alice


def app(client: Client, persona: Persona, method: str, path: str, **kwargs: Any) -> tuple[Any, Any]:
    """Call the Application API and check the whole response against the schema."""
    response = app_call(client, persona, method, path, **kwargs)
    return response, check_response(schema(), response.request["PATH_INFO"], response, method)


def post_token(path: str, body: dict[str, str], *, form: bool = False) -> tuple[Any, Any]:
    """Call a token endpoint (JSON, or form-encoded) and check the whole response."""
    if form:
        response = Client().post(path, urlencode(body), content_type="application/x-www-form-urlencoded")
    else:
        response = Client().post(path, json.dumps(body), content_type="application/json")
    return response, check_response(schema(), path, response, "post")


def credentials(persona: Persona) -> dict[str, str]:
    return {"client_id": persona.app.application.client_id, "client_secret": persona.app.client_secret}


def legacy_credentials(persona: Persona) -> dict[str, str]:
    return {"clientId": persona.app.application.client_id, "clientSecret": persona.app.client_secret}


# --- the Application API ---------------------------------------------------------------------


def test_it_documents_every_user_operation(client: Client, synced: Persona) -> None:
    human_id = synced.human.pk
    make_human(synced.app, "alice-user-2", "u2@example.com")

    response, users = app(client, synced, "GET", "users?limit=1")
    assert response.status_code == 200 and len(users) == 1
    assert response["X-Total-Count"] == "2" and 'rel="next"' in response["Link"]
    response, found = app(client, synced, "GET", "users?externalId=alice-user-2")
    assert [u["externalId"] for u in found] == ["alice-user-2"] and "Link" not in response

    body = {"data": {"externalId": "new-user"}, "content_type": "application/json"}
    created, user = app(client, synced, "POST", "users", **body)
    assert created.status_code == 201
    again, same = app(client, synced, "POST", "users", **body)
    assert again.status_code == 200 and same["humanId"] == user["humanId"]

    response, one = app(client, synced, "GET", f"users/{human_id}")
    assert response.status_code == 200 and one["humanId"] == human_id

    response, sources = app(client, synced, "GET", f"users/{human_id}/sources")
    assert response.status_code == 200
    assert {s["source"] for s in sources} == {"demo", "humanity"}
    assert any(s["syncRuns"] and s["syncRuns"][0]["counts"] for s in sources)

    response, queued = app(client, synced, "POST", f"users/{human_id}/sync")
    assert response.status_code == 202 and len(queued["connections"]) == 2
    response, queued = app(
        client, synced, "POST", f"users/{human_id}/sync", data={"source": "demo"}, content_type="application/json"
    )
    assert response.status_code == 202 and [c["source"] for c in queued["connections"]] == ["demo"]
    response, _ = app(client, synced, "POST", f"users/{human_id}/sync?source=demo")
    assert response.status_code == 202
    response, conflict = app(client, synced, "POST", f"users/{user['humanId']}/sync")
    assert response.status_code == 409 and conflict["statusCode"] == 409

    response, entries = app(client, synced, "GET", "audit?limit=2")
    assert response.status_code == 200 and len(entries) == 2 and 'rel="next"' in response["Link"]
    response, mine = app(client, synced, "GET", f"audit?humanId={human_id}&action=connection.resync&offset=1")
    assert response.status_code == 200 and mine and 'rel="first"' in response["Link"]
    assert {e["humanId"] for e in mine} == {human_id}

    deleted, nothing = app(client, synced, "DELETE", f"users/{user['humanId']}")
    assert deleted.status_code == 204 and nothing is None


def test_it_documents_every_batch_feed_with_real_records(client: Client, synced: Persona) -> None:
    spec = schema()
    routes = [*BATCH_TYPES, *(f"{kind}/summaries" for kind in SUMMARY_SUMS)]
    templates = set()
    for route in routes:
        response, items = app(client, synced, "GET", f"users/{route}?limit=2")
        assert response.status_code == 200 and items, f"users/{route} returned nothing to check"
        assert {item["humanId"] for item in items} == {synced.human.pk}
        if int(response["X-Total-Count"]) > 2:
            assert 'rel="next"' in response["Link"] and 'rel="last"' in response["Link"], route
        templates.add(template_of(spec, response.request["PATH_INFO"]))
    batch = {p for p in spec["paths"] if re.fullmatch(r"/v1/apps/\{client_id\}/users/[a-z0-9_/]+", p)}
    assert templates == batch

    # Filters and a later page, as an incremental client uses them.
    since = (T0 - timedelta(days=30)).strftime("%Y%m%dT%H%M%SZ")
    for route in ("activities", "activities/summaries", "sleeps/summaries"):
        response, items = app(
            client, synced, "GET", f"users/{route}?updated_since={since}&source=demo&limit=1&offset=1"
        )
        assert response.status_code == 200 and items and 'rel="prev"' in response["Link"], route


@pytest.mark.parametrize(
    ("method", "path", "key"),
    [
        ("GET", "users?limit=0", "limit"),
        ("GET", "users?offset=x", "offset"),
        ("POST", "users", "externalId"),
        ("GET", "users/activities?updated_since=yesterday", "updated_since"),
        ("GET", "users/weights?source=NOT%20A%20SLUG", "source"),
        ("GET", "users/activities/summaries?start_date=2026-01-01", "end_date"),
        ("GET", "users/sleeps/summaries?created_since=2026-13-01", "created_since"),
        ("GET", "audit?since=never", "since"),
        ("GET", "audit?action=DROP%20TABLE", "action"),
        ("POST", "users/{human}/sync?source=Bad!", "source"),
    ],
)
def test_it_documents_the_validation_errors(client: Client, alice: Persona, method: str, path: str, key: str) -> None:
    kwargs = {"data": {}, "content_type": "application/json"} if method == "POST" else {}
    response, body = app(client, alice, method, path.format(human=alice.human.pk), **kwargs)
    assert response.status_code == 400 and body["validation"]["keys"] == [key]


def test_it_documents_the_errors_of_auth_and_unknown_users(client: Client, alice: Persona) -> None:
    unknown = "0123456789abcdef01234567"
    for method, path in (
        ("GET", f"users/{unknown}"),
        ("DELETE", f"users/{unknown}"),
        ("GET", f"users/{unknown}/sources"),
        ("POST", f"users/{unknown}/sync"),
        ("GET", "users/stepz"),
    ):
        response, body = app(client, alice, method, path)
        assert response.status_code == 404 and body["requestId"] == response["X-Request-Id"], path
    response, body = app(client, alice, "POST", "users", data="{nope", content_type="application/json")
    assert response.status_code == 400 and "validation" not in body

    spec = schema()
    every_operation = [
        (path.replace("{client_id}", alice.app.application.client_id).replace("{humanId}", alice.human.pk), method)
        for path, item in spec["paths"].items()
        if path.startswith(APP_PREFIX)
        for method in item
    ]
    for concrete, method in every_operation:
        for auth in ({}, {"HTTP_AUTHORIZATION": basic("wrong-key")}):
            response = getattr(client, method)(concrete, **auth)
            assert response.status_code == 401, (method, concrete)
            check_response(spec, concrete, response, method)
            assert response["WWW-Authenticate"].startswith("Basic")
    other_app = client.get("/v1/apps/no-such-app/users", HTTP_AUTHORIZATION=basic(alice.app.app_key))
    assert other_app.status_code == 401
    check_response(spec, "/v1/apps/no-such-app/users", other_app)


# --- the token exchange ----------------------------------------------------------------------


def test_it_documents_every_token_exchange(synced: Persona) -> None:
    spec = schema()
    user = {**credentials(synced), "client_user_id": synced.human.client_user_id}
    options = {name: {"$ref": f"#/components/schemas/{name}"} for name in ("SessionToken", "IdToken", "AccessToken")}

    def answer(kind: str, body: dict[str, str], *, form: bool = False) -> dict[str, Any]:
        response, token = post_token("/v1/connect/token", body, form=form)
        assert response.status_code == 200, token
        matching = [name for name, option in options.items() if not errors(spec, option, token, strict=True)]
        assert matching == [kind], (kind, matching)
        return dict(token)

    session = answer("SessionToken", {**user, "type": "session", "client_user_email": "a@example.com"})
    answer("SessionToken", {**user, "type": "session", "client_user_email": "a@example.com"}, form=True)
    answer("IdToken", {**user, "type": "id"})
    access = answer("AccessToken", {**user, "type": "access"})
    answer("AccessToken", {**credentials(synced), "type": "refresh", "refresh_token": access["refresh_token"]})

    legacy = {**legacy_credentials(synced), "humanId": synced.human.pk}
    response, tokens = post_token("/v1/connect/tokens", {**legacy, "sessionToken": session["session_token"]})
    assert response.status_code == 200 and tokens["humanId"] == synced.human.pk
    response, public = post_token("/v1/connect/publictokens", legacy)
    assert response.status_code == 200 and public["publicToken"]
    response, public = post_token("/v1/connect/publictokens", legacy, form=True)
    assert response.status_code == 200


def test_it_documents_the_errors_of_the_token_exchange(alice: Persona) -> None:
    user = {**credentials(alice), "client_user_id": alice.human.client_user_id}
    legacy = {**legacy_credentials(alice), "humanId": alice.human.pk}
    session = {**user, "type": "session", "client_user_email": "a@example.com"}
    _, token = post_token("/v1/connect/token", session)
    cases: list[tuple[str, dict[str, str], int, list[str] | None]] = [
        ("/v1/connect/token", {**user, "type": "session"}, 400, ["client_user_email"]),
        ("/v1/connect/token", {**user, "type": "nope"}, 400, ["type"]),
        ("/v1/connect/token", {"type": "id"}, 400, ["client_id", "client_secret"]),
        ("/v1/connect/token", {**credentials(alice), "type": "refresh"}, 400, ["refresh_token"]),
        ("/v1/connect/token", {**user, "client_secret": "wrong", "type": "id"}, 401, None),
        ("/v1/connect/token", {**credentials(alice), "type": "refresh", "refresh_token": "nope"}, 401, None),
        ("/v1/connect/token", {**user, "client_user_id": "nobody", "type": "id"}, 404, None),
        ("/v1/connect/token", {**user, "type": "access"}, 404, None),  # nothing connected yet
        ("/v1/connect/tokens", legacy, 400, ["sessionToken"]),
        ("/v1/connect/tokens", {**legacy, "sessionToken": "nope"}, 401, None),
        ("/v1/connect/tokens", {**legacy, "sessionToken": token["session_token"]}, 404, None),
        ("/v1/connect/publictokens", {**legacy, "clientSecret": "wrong"}, 401, None),
        ("/v1/connect/publictokens", {**legacy, "humanId": "nobody"}, 404, None),
        ("/v1/connect/publictokens", {"humanId": alice.human.pk}, 400, ["clientId", "clientSecret"]),
    ]
    for path, body, status, keys in cases:
        response, error = post_token(path, body)
        assert response.status_code == status, (path, body, error)
        assert error.get("validation", {}).get("keys") == keys, (path, error)
    for path in TOKEN_PATHS:
        response = Client().post(path, "{nope", content_type="application/json")
        assert response.status_code == 400
        check_response(schema(), path, response, "post")


def test_it_documents_the_rate_limit_of_the_token_exchange(alice: Persona, settings: LazySettings) -> None:
    settings.RATE_LIMIT_TOKEN_PER_CLIENT = 100
    settings.RATE_LIMIT_TOKEN_PER_IP = 1
    legacy = {**legacy_credentials(alice), "humanId": alice.human.pk}
    response, _ = post_token("/v1/connect/token", {**credentials(alice), "type": "id", "client_user_id": "x"})
    assert response.status_code == 404
    for path, body in (
        ("/v1/connect/token", {**credentials(alice), "type": "id", "client_user_id": "x"}),
        ("/v1/connect/tokens", {**legacy, "sessionToken": "x"}),
        ("/v1/connect/publictokens", legacy),
    ):
        response, error = post_token(path, body)
        assert response.status_code == 429 and error["statusCode"] == 429, path
        assert 1 <= int(response["Retry-After"]) <= settings.RATE_LIMIT_WINDOW


# --- the schema, the URLconf and /docs -------------------------------------------------------


def _routes(patterns: list[URLPattern | URLResolver], prefix: str = "/") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern.callback


def _methods(callback: Any) -> set[str]:
    view = getattr(callback, "view_class", None)
    return {m for m in ("get", "post", "put", "patch", "delete") if view is not None and hasattr(view, m)}


def _shape(path: str) -> str:
    """A path with every parameter as `{}`: `<str:human_id>` and `{humanId}` are the same."""
    return re.sub(r"<(?:\w+:)?\w+>|\{[^}]+\}", "{}", path)


def _is_api(path: str) -> bool:
    return path.startswith(("/v1/apps/", "/v1/human/")) or path in TOKEN_PATHS


def test_it_documents_exactly_the_routes_of_the_url_conf() -> None:
    spec = schema()
    routed = {
        (_shape(path), method)
        for path, callback in _routes(get_resolver().url_patterns)
        if _is_api(path) and "(?P<rest>" not in path  # the Data API's 404 for any other path
        for method in _methods(callback)
    }
    documented = {(_shape(path), method) for path, item in spec["paths"].items() for method in item}
    assert {route for route in routed if not route[0].startswith("/v1/human/")} >= {
        ("/v1/apps/{}/users/{}/sync", "post"),
        ("/v1/connect/tokens", "post"),
    }
    assert routed - documented == set(), "routes missing from the schema"
    assert documented - routed == set(), "documented operations no route serves"


def test_it_resolves_every_documented_path_to_its_own_view() -> None:
    spec = schema()
    samples = {"client_id": "app1", "humanId": "0123456789abcdef01234567", "id": "1", "day": "2026-03-01"}
    samples["ref"] = "2026-03-01"
    for path, item in spec["paths"].items():
        concrete = re.sub(r"\{([^}]+)\}", lambda m: samples[m.group(1)], path)
        match = resolve(concrete)
        assert match.func.__name__ != "not_found", path
        assert set(item) <= _methods(match.func), (path, set(item), _methods(match.func))
        for name in re.findall(r"\{([^}]+)\}", path):
            params = {p["name"] for p in item[next(iter(item))]["parameters"] if p["in"] == "path"}
            assert name in params, (path, name)


def test_it_renders_every_operation_on_the_docs_page() -> None:
    spec = schema()
    html = Client().get("/docs").content.decode()
    for path, item in spec["paths"].items():
        for method in item:
            assert f'<span class="method {method}">{method}</span> <code>{path}</code>' in html, (method, path)
    for name in spec["components"]["schemas"]:
        assert f'id="schema-{name}"' in html, name
    assert "headers X-Total-Count, Link" in html and "headers Retry-After" in html


# --- the checker ---------------------------------------------------------------------------


def test_it_catches_undocumented_fields_statuses_and_headers() -> None:
    spec = schema()
    user = {
        "humanId": "h",
        "externalId": "e",
        "appId": "a",
        "createdAt": "2026-03-01T00:00:00.000Z",
        "updatedAt": "2026-03-01T00:00:00.000Z",
    }
    node = {"$ref": "#/components/schemas/AppUser"}
    assert errors(spec, node, {**user, "secret": "x"}) == []
    assert errors(spec, node, {**user, "secret": "x"}, strict=True) == ["$: 'secret' is not documented"]
    listed = spec["paths"]["/v1/apps/{client_id}/users"]["get"]["responses"]["200"]["headers"]
    assert header_errors(spec, listed, {"X-Request-Id": "r"}) == ["header X-Total-Count is missing"]
    assert header_errors(spec, listed, {"X-Request-Id": "r", "X-Total-Count": "many"}) == [
        "header X-Total-Count: 'many' is not an integer"
    ]
    assert header_errors(spec, listed, {"X-Request-Id": "r", "X-Total-Count": "3", "Link": "next"})
    one = spec["paths"]["/v1/apps/{client_id}/users/{humanId}"]["get"]["responses"]["200"]["headers"]
    assert header_errors(spec, one, {"X-Request-Id": "r", "Link": '<x>; rel="next"'}, strict=True) == [
        "header link is not documented here"
    ]

    class Teapot:
        status_code = 418
        content = b"{}"
        headers = {"Content-Type": "application/json"}

    with pytest.raises(AssertionError, match="status not documented"):
        check_response(spec, "/v1/apps/x/users", Teapot())


def test_it_documents_the_data_api_headers_too(synced: Persona) -> None:
    """The Data API's documented headers and statuses, on a second page of every list (its
    bodies are checked in test_data_api_schema)."""
    spec = schema()
    client = access_client(synced.human)
    for path in every_concrete_path(synced.human.pk):
        response = client.get(path, {"limit": 1, "offset": 1})
        check_response(spec, path, response)
    response = Client().get("/v1/human/profile")
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    check_response(spec, "/v1/human/profile", response)
