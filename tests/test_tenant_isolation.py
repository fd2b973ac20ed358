"""Tenant isolation: Alice's credentials never see or change anything of Charlie's.

A matrix, built from data: every Application API endpoint (the list below) and every Data API
route (read from `data_api.urls` itself, so a route added there is covered without touching
this file), each tried with Alice's credentials against Charlie's application, users, records
and tokens. Each must answer 401/403/404 (or, for Alice's own lists, show none of Charlie's
rows) and leave Charlie's state exactly as it was."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db.models import Max
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver

from connect.models import Application, AuditEntry, Human, Token
from connect.views import csrf_for
from data_api import urls as data_urls
from data_api.app_selectors import SUMMARY_SUMS
from data_api.models import Notification, Record
from data_api.records import MEASUREMENTS, PERIODIC
from sources.models import Connection
from sources.sync import connection_sync
from sources.types import BATCH_TYPES
from tests.app_client import basic
from tests.conftest import Persona
from tests.factories import make_application, make_connection, make_human

pytestmark = pytest.mark.django_db

# --- the endpoints -------------------------------------------------------------------------


@dataclass(frozen=True)
class AppEndpoint:
    method: str
    path: str  # under /v1/apps/{client_id}/; {human} is a user id
    body: dict[str, str] | None = None

    @property
    def names_a_user(self) -> bool:
        return "{human}" in self.path

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


APP_ENDPOINTS = [
    AppEndpoint("GET", "users"),
    AppEndpoint("POST", "users", {"externalId": "charlie-user-1"}),
    AppEndpoint("GET", "users/{human}"),
    AppEndpoint("DELETE", "users/{human}"),
    AppEndpoint("GET", "users/{human}/sources"),
    AppEndpoint("POST", "users/{human}/sync"),
    AppEndpoint("GET", "audit"),
    AppEndpoint("GET", "audit?humanId={human}"),
    *[AppEndpoint("GET", f"users/{route}") for route in BATCH_TYPES],
    *[AppEndpoint("GET", f"users/{kind}/summaries") for kind in SUMMARY_SUMS],
]


def data_api_routes() -> list[str]:
    """Every route of the Data API, as written in its urlconf (`activities/<str:record_id>`)."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[str]:
        for entry in patterns:
            route = str(entry.pattern)
            if isinstance(entry, URLResolver):
                yield from walk(entry.url_patterns, prefix + route)
            elif isinstance(entry, URLPattern):
                yield prefix + route

    return [r for r in walk(list(data_urls.urlpatterns), "") if "(?P<rest>" not in r]


PLACEHOLDER = re.compile(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>[^)]*\)")


def route_type(route: str) -> str | None:
    """The stored record type a Data API route serves (`food/meals/<id>` -> `meals`)."""
    head = route.split("<")[0].strip("/")
    for suffix in ("/readings/daily", "/daily", "/readings", "/summaries", "/summary"):
        head = head.removesuffix(suffix)
    return PERIODIC.get(head) or (head if head in MEASUREMENTS else None)


# --- the world -----------------------------------------------------------------------------


@dataclass
class World:
    alice: Persona
    charlie: Persona
    alice_access: str
    charlie_access: str
    charlie_refresh: str
    charlie_session: str
    charlie_records: dict[str, Record] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(django_db_setup: None, django_db_blocker: Any) -> Iterator[World]:
    """Both tenants with one synced Demo connection (yesterday's data and today's so far: just
    after midnight, today alone holds hardly anything) and live tokens.

    Built once for the module and committed; each test still runs in a transaction that is
    rolled back, so whatever a test changes is undone before the next one."""
    with django_db_blocker.unblock(), override_settings(DEMO_HISTORY_DAYS=2, DEMO_HEART_RATE_INTERVAL_MINUTES=120):
        personas = []
        for name, user in (("Alice's isolated app", "alice-user-1"), ("Charlie's isolated app", "charlie-user-1")):
            app = make_application(name)
            persona = Persona(app, make_human(app, user, f"{user}@example.com"))
            connection_sync(connection_id=make_connection(persona.human).pk)
            personas.append(persona)
        alice, charlie = personas
        try:
            _a, alice_access = Token.mint(kind="access", human=alice.human, ttl=3600)
            _c, charlie_access = Token.mint(kind="access", human=charlie.human, ttl=3600)
            _r, charlie_refresh = Token.mint(kind="refresh", human=charlie.human, ttl=3600, family="c")
            _s, charlie_session = Token.mint(kind="session", human=charlie.human, ttl=3600)
            records = {r.type: r for r in Record.objects.filter(human=charlie.human).order_by("id")}
            yield World(alice, charlie, alice_access, charlie_access, charlie_refresh, charlie_session, records)
        finally:
            apps = [p.app.application.pk for p in personas]
            AuditEntry.objects.filter(application__in=apps).delete()
            Application.objects.filter(pk__in=apps).delete()


def snapshot(persona: Persona) -> dict[str, Any]:
    """Everything of one tenant that an attack could change."""
    app = persona.app.application
    records = Record.objects.filter(human__application=app)
    return {
        "humans": sorted(Human.objects.filter(application=app).values_list("pk", "client_user_id", "email")),
        "records": (records.count(), records.aggregate(Max("updated_at"))["updated_at__max"]),
        "connections": sorted(
            Connection.objects.filter(human__application=app).values_list(
                "pk", "status", "credentials_sealed", "sync_requested", "next_sync_at"
            )
        ),
        "tokens": sorted(Token.objects.filter(application=app).values_list("pk", "revoked_at", "expires_at")),
        "audit": AuditEntry.objects.filter(application=app).count(),
        "notifications": Notification.objects.filter(application=app).count(),
    }


def leaks(body: Any, human_id: str) -> bool:
    """Whether a JSON body holds a row of this user's (a user, a record, an audit entry, ...).
    An error message may quote the id the caller sent; that tells the caller nothing new."""
    if isinstance(body, dict):
        return body.get("humanId") == human_id or any(leaks(v, human_id) for v in body.values())
    if isinstance(body, list):
        return any(leaks(v, human_id) for v in body)
    return False


def call_app(client: Client, world: World, endpoint: AppEndpoint, client_id: str, human_id: str) -> Any:
    url = f"/v1/apps/{client_id}/" + endpoint.path.format(human=human_id)
    method = getattr(client, endpoint.method.lower())
    kwargs: dict[str, Any] = {"HTTP_AUTHORIZATION": basic(world.alice.app.app_key)}
    if endpoint.body is not None:
        kwargs |= {"data": endpoint.body, "content_type": "application/json"}
    return method(url, **kwargs)


# --- the Application API -------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", APP_ENDPOINTS, ids=str)
def test_it_refuses_alices_app_key_on_charlies_application(client: Client, world: World, endpoint: AppEndpoint) -> None:
    before = snapshot(world.charlie)
    response = call_app(client, world, endpoint, world.charlie.app.application.client_id, world.charlie.human.pk)
    assert response.status_code == 401
    assert not leaks(response.json(), world.charlie.human.pk)
    assert snapshot(world.charlie) == before


@pytest.mark.parametrize("endpoint", [e for e in APP_ENDPOINTS if e.names_a_user], ids=str)
def test_it_hides_charlies_users_from_alices_application(client: Client, world: World, endpoint: AppEndpoint) -> None:
    before = snapshot(world.charlie)
    response = call_app(client, world, endpoint, world.alice.app.application.client_id, world.charlie.human.pk)
    body = response.json()
    if endpoint.path.startswith("audit"):
        assert response.status_code == 200 and body == []
    else:
        assert response.status_code == 404, body
    assert not leaks(body, world.charlie.human.pk)
    assert snapshot(world.charlie) == before


@pytest.mark.parametrize("endpoint", [e for e in APP_ENDPOINTS if not e.names_a_user], ids=str)
def test_it_shows_alices_application_none_of_charlies_rows(client: Client, world: World, endpoint: AppEndpoint) -> None:
    before = snapshot(world.charlie)
    response = call_app(client, world, endpoint, world.alice.app.application.client_id, "")
    assert response.status_code in (200, 201)
    assert not leaks(response.json(), world.charlie.human.pk)
    assert snapshot(world.charlie) == before


# --- the Data API --------------------------------------------------------------------------


def fill(route: str, world: World, kind: str | None) -> str:
    record = world.charlie_records.get(kind or "") or next(iter(world.charlie_records.values()))

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if "day" in name or name == "ref":
            return record.local_day.isoformat()
        if "id" in name:
            return str(record.pk)
        return "x"

    return "/v1/human/" + PLACEHOLDER.sub(value, route)


DATA_ROUTES = data_api_routes()


@pytest.mark.parametrize("route", DATA_ROUTES)
def test_it_shows_alices_access_token_nothing_of_charlies(client: Client, world: World, route: str) -> None:
    kind = route_type(route)
    url = fill(route, world, kind)
    before = snapshot(world.charlie)
    response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {world.alice_access}")
    assert response.status_code < 500
    assert world.charlie.human.pk not in response.content.decode()
    if "record_id" in route:
        assert response.status_code == 404, url
        if kind in world.charlie_records:
            # The same URL with Charlie's own token finds the record: the 404 above is
            # isolation, not a malformed URL.
            control = client.get(url, HTTP_AUTHORIZATION=f"Bearer {world.charlie_access}")
            assert control.status_code == 200, url
    assert snapshot(world.charlie) == before


def test_it_covers_every_data_api_route_with_ids() -> None:
    with_ids = [r for r in DATA_ROUTES if "record_id" in r]
    assert len(with_ids) >= len(PERIODIC) + len(MEASUREMENTS)
    assert all(route_type(r) for r in with_ids)


# --- token exchange and Connect ------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    name: str
    path: str
    body: dict[str, str]
    status: tuple[int, ...]

    def __str__(self) -> str:
        return self.name


def exchanges(world: World) -> list[Exchange]:
    alice, charlie = world.alice.app, world.charlie.app
    mine = {"client_id": alice.application.client_id, "client_secret": alice.client_secret}
    crossed = {"client_id": alice.application.client_id, "client_secret": charlie.client_secret}
    user = {"client_user_id": "charlie-user-1", "client_user_email": "charlie-user-1@example.com"}
    return [
        *[
            Exchange(f"charlie-secret-{kind}", "/v1/connect/token", {**crossed, **user, "type": kind}, (401,))
            for kind in ("session", "id", "access")
        ],
        Exchange(
            "charlie-refresh",
            "/v1/connect/token",
            {**mine, "type": "refresh", "refresh_token": world.charlie_refresh},
            (401,),
        ),
        Exchange("charlie-user-access", "/v1/connect/token", {**mine, **user, "type": "access"}, (404,)),
        Exchange("charlie-user-id", "/v1/connect/token", {**mine, **user, "type": "id"}, (404,)),
        Exchange(
            "legacy-tokens-charlie-session",
            "/v1/connect/tokens",
            {
                "humanId": world.charlie.human.pk,
                "clientId": alice.application.client_id,
                "clientSecret": alice.client_secret,
                "sessionToken": world.charlie_session,
            },
            (401, 403, 404),
        ),
        Exchange(
            "legacy-publictokens-charlie-human",
            "/v1/connect/publictokens",
            {
                "humanId": world.charlie.human.pk,
                "clientId": alice.application.client_id,
                "clientSecret": alice.client_secret,
            },
            (401, 403, 404),
        ),
    ]


EXCHANGE_NAMES = [
    "charlie-secret-session",
    "charlie-secret-id",
    "charlie-secret-access",
    "charlie-refresh",
    "charlie-user-access",
    "charlie-user-id",
    "legacy-tokens-charlie-session",
    "legacy-publictokens-charlie-human",
]


@pytest.mark.parametrize("name", EXCHANGE_NAMES)
def test_it_refuses_one_applications_tokens_at_the_others_exchange(client: Client, world: World, name: str) -> None:
    case = next(c for c in exchanges(world) if c.name == name)
    before = snapshot(world.charlie), snapshot(world.alice)["humans"]
    response = client.post(case.path, data=case.body, content_type="application/json")
    assert response.status_code in case.status, response.content
    assert world.charlie.human.pk not in response.content.decode()
    assert (snapshot(world.charlie), snapshot(world.alice)["humans"]) == before


def test_it_keeps_charlies_refresh_token_working_after_alice_tried_it(client: Client, world: World) -> None:
    attempt = next(c for c in exchanges(world) if c.name == "charlie-refresh")
    client.post(attempt.path, data=attempt.body, content_type="application/json")
    own = {
        "client_id": world.charlie.app.application.client_id,
        "client_secret": world.charlie.app.client_secret,
        "type": "refresh",
        "refresh_token": world.charlie_refresh,
    }
    assert client.post("/v1/connect/token", data=own, content_type="application/json").status_code == 200


def test_it_refuses_alices_connect_session_on_charlies_connection(client: Client, world: World) -> None:
    _token, session = Token.mint(kind="session", human=world.alice.human, ttl=3600)
    token = Token.find(session, ("session",))
    assert token is not None
    connection = Connection.objects.get(human=world.charlie.human)
    before = snapshot(world.charlie)
    response = client.post(
        f"/connect/connections/{connection.pk}/disconnect", data={"token": session, "csrf": csrf_for(token)}
    )
    assert response.status_code == 404
    assert snapshot(world.charlie) == before
