"""Bad input anywhere gets a clear 4xx JSON error: every route of the URLconf is walked with
hostile parameters, bodies, methods and credentials, and no answer may be a 5xx or a non-JSON
error (except the two pages a person reads in the OAuth popup)."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from connect.models import Human, Token, TokenKind
from connect.services import CreatedApplication
from tests.conftest import Persona

HTML_ERROR_PAGES = ("/connect/oauth/callback", "/connect/oauth/")  # shown to a person in the popup
VALUES = {
    "day": "2026-13-45",
    "slug": "no-such-source",
    "connection_id": "nope",
    "name": "..%2f..%2fsettings.py",
    "ref": "abc",
    "type": "weights",
    "id": "99999999",
}
QUERIES = (
    "",
    "?limit=abc&offset=-3&start_date=2026-01-01",
    "?updated_since=garbage&source=%00&limit=99999999999999999999",
)
BODIES = ("{", "[1, 2]", '{"limit": "-1", "client_id": ["a"], "type": {"x": 1}, "externalId": null}', "\x00\xff")


def routes(patterns: list[Any], prefix: str = "") -> list[str]:
    found: list[str] = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            found.extend(routes(pattern.url_patterns, prefix + str(pattern.pattern)))
        elif isinstance(pattern, URLPattern):
            found.append(prefix + str(pattern.pattern))
    # The demo page (DEMO_MODE) is a sample client app that calls this server over HTTP, which
    # the test client can't serve; it answers a 503 that says what is missing.
    return [r for r in found if not r.startswith(("admin", "demo"))]


def concrete(route: str, persona: Persona) -> str:
    values = {**VALUES, "client_id": persona.app.application.client_id, "humanId": persona.human.pk}
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values.get(m.group(1), "x"), route)


def test_it_answers_hostile_input_on_every_route_with_a_4xx_json_error(alice: Persona) -> None:
    _, access = Token.mint(kind=TokenKind.ACCESS, human=alice.human, ttl=3600)
    basic = "Basic " + base64.b64encode(f"{alice.app.app_key}:".encode()).decode()
    credentials = ({}, {"HTTP_AUTHORIZATION": f"Bearer {access}"}, {"HTTP_AUTHORIZATION": basic})
    client = Client(raise_request_exception=False)
    problems = []
    paths = routes(get_resolver().url_patterns)
    assert len(paths) > 90
    for path in (concrete(route, alice) for route in paths):
        for method in ("get", "post", "put", "delete"):
            for auth in credentials:
                for query in QUERIES:
                    for body in BODIES if method != "get" else (None,):
                        extra: dict[str, Any] = dict(auth)
                        if body is not None:
                            extra.update(data=body, content_type="application/json")
                        response = getattr(client, method)(path + query, **extra)
                        status, kind = response.status_code, response.get("Content-Type", "")
                        human_page = path.startswith(HTML_ERROR_PAGES) and method == "get"
                        if status >= 500 or (status >= 400 and "json" not in kind and not human_page):
                            problems.append(f"{status} {method.upper()} {path}{query} {kind}")
    assert problems == []


@pytest.mark.parametrize(
    ("method", "path", "body", "kind"),
    [
        ("get", "/v1/apps/%00/users", None, None),
        ("get", "/connect/assets/a%00.js", None, None),
        ("get", "/v1/human/activities?source=%00", None, None),
        ("post", "/connect/connections/%00/disconnect", None, None),
        ("post", "/v1/connect/token", '{"client_user_id": "a\\u0000"}', "application/json"),
        ("post", "/connect/sources/demo/connect", "token=x&username=a%00b", "application/x-www-form-urlencoded"),
    ],
)
def test_it_refuses_nul_characters_anywhere_with_a_400(
    method: str, path: str, body: str | None, kind: str | None, db: None
) -> None:
    extra: dict[str, Any] = {"data": body, "content_type": kind} if body is not None else {}
    response = getattr(Client(raise_request_exception=False), method)(path, **extra)
    assert response.status_code == 400 and "NUL" in response.json()["message"]


def test_it_accepts_a_literal_percent_00_in_json(alice: Persona) -> None:
    body = {
        "client_id": alice.app.application.client_id,
        "client_secret": "100%00 sure",
        "type": "id",
        "client_user_id": "alice-user-1",
    }
    assert Client().post("/v1/connect/token", body, content_type="application/json").status_code == 401


@pytest.mark.parametrize("path", ["/connect/connections", "/connect/sources/demo/connect"])
def test_it_refuses_a_wrong_method_with_the_json_envelope(path: str, db: None) -> None:
    response = Client().get(path)
    assert response.status_code == 405
    assert response.json()["statusCode"] == 405 and "POST" in response["Allow"]
    assert response["X-Request-Id"] == response.json()["requestId"]


@pytest.mark.parametrize(
    "path",
    ["/v1/connect/token", "/v1/connect/tokens", "/v1/connect/publictokens", "/connect/sources/demo/connect"],
)
def test_it_refuses_deeply_nested_json_with_a_400(path: str, db: None) -> None:
    body = "[" * 100_000 + "]" * 100_000
    response = Client(raise_request_exception=False).post(path, body, content_type="application/json")
    assert 400 <= response.status_code < 500, response.content[:200]
    assert response.json()["statusCode"] == response.status_code


def app_key_header(app: CreatedApplication) -> str:
    return "Basic " + base64.b64encode(f"{app.app_key}:".encode()).decode()


def session_request(app: CreatedApplication) -> dict[str, str]:
    """The body of a session token request, less its user id."""
    return {
        "client_id": app.application.client_id,
        "client_secret": app.client_secret,
        "type": "session",
        "client_user_email": "n@example.com",
    }


def test_it_refuses_a_value_of_the_wrong_type_where_the_schema_says_text(alice: Persona) -> None:
    """DRF's CharField would take `true` as "True" and `1.5` as "1.5": bodies the published
    schema refuses, which change nothing."""
    app = alice.app
    client = Client()
    basic, token = app_key_header(app), session_request(app)
    calls = [
        (f"/v1/apps/{app.application.client_id}/users", {"externalId": True}, basic, "externalId"),
        (f"/v1/apps/{app.application.client_id}/users", {"externalId": 1.5}, basic, "externalId"),
        ("/v1/connect/token", {**token, "client_user_id": {"id": 1}}, "", "client_user_id"),
        ("/v1/connect/token", {**token, "client_user_id": False}, "", "client_user_id"),
        ("/v1/connect/publictokens", {"humanId": 1, "clientId": "x", "clientSecret": "y"}, "", "humanId"),
    ]
    before = Human.objects.count()
    for path, body, auth, key in calls:
        response = client.post(path, body, content_type="application/json", HTTP_AUTHORIZATION=auth)
        assert response.status_code == 400, (path, response.content)
        assert response.json()["validation"]["keys"] == [key]
    assert Human.objects.count() == before


def test_a_numeric_user_id_is_the_same_user_as_its_text(alice: Persona) -> None:
    """Apps often send their own numeric ids as JSON numbers: 12345 and "12345" are one user."""
    app = alice.app
    basic, token = app_key_header(app), session_request(app)
    client = Client()
    as_number = client.post("/v1/connect/token", {**token, "client_user_id": 12345}, content_type="application/json")
    as_text = client.post("/v1/connect/token", {**token, "client_user_id": "12345"}, content_type="application/json")
    assert as_number.status_code == as_text.status_code == 200
    assert as_number.json()["human_id"] == as_text.json()["human_id"]
    created = client.post(
        f"/v1/apps/{app.application.client_id}/users",
        {"externalId": 12345},
        content_type="application/json",
        HTTP_AUTHORIZATION=basic,
    )
    assert created.status_code == 200 and created.json()["humanId"] == as_text.json()["human_id"]
    assert Human.objects.filter(application=app.application, client_user_id="12345").count() == 1


JSON, FORM = "application/json", "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("query", "body", "kind"),
    [
        ("?source=", '{"source": "demo"}', JSON),
        ("?source=demo", '{"source": "oura"}', JSON),
        ("?source=demo", '{"source": null}', JSON),
        ("?source=demo", "source=", FORM),
    ],
)
def test_it_refuses_a_sync_source_that_is_no_slug_or_said_two_ways(
    alice: Persona, query: str, body: str, kind: str
) -> None:
    basic = "Basic " + base64.b64encode(f"{alice.app.app_key}:".encode()).decode()
    path = f"/v1/apps/{alice.app.application.client_id}/users/{alice.human.pk}/sync{query}"
    response = Client().post(path, body, content_type=kind, HTTP_AUTHORIZATION=basic)
    assert response.status_code == 400 and response.json()["validation"]["keys"] == ["source"]


@pytest.mark.parametrize("body", ["[1, 2]", '"demo"', "1"])
def test_it_refuses_a_sync_body_that_is_no_object(alice: Persona, body: str) -> None:
    basic = "Basic " + base64.b64encode(f"{alice.app.app_key}:".encode()).decode()
    path = f"/v1/apps/{alice.app.application.client_id}/users/{alice.human.pk}/sync"
    response = Client().post(path, body, content_type="application/json", HTTP_AUTHORIZATION=basic)
    assert response.status_code == 400 and "Expected a dictionary" in response.json()["message"]
