"""The audit log (CONTRACT §10) as the client app reads it from `GET /audit`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from connect.models import AuditEntry, Token
from connect.views import csrf_for
from sources.models import Connection
from sources.sync import mark_reauth_required
from tests.app_client import app_call
from tests.conftest import Persona

PROVIDER_SECRET = "prov-refresh-5b9e7c0d2f"


def exchange(client: Client, persona: Persona, kind: str, **extra: str) -> dict[str, Any]:
    body = {
        "client_id": persona.app.application.client_id,
        "client_secret": persona.app.client_secret,
        "type": kind,
        "client_user_id": persona.human.client_user_id,
        "client_user_email": persona.human.email,
        **extra,
    }
    response = client.post("/v1/connect/token", data=body, content_type="application/json")
    assert response.status_code == 200, response.content
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.django_db(transaction=True)
def test_it_shows_every_audited_event_and_never_a_secret(client: Client, alice: Persona) -> None:
    session = exchange(client, alice, "session")["session_token"]
    token = Token.find(session, ("session",))
    assert token is not None
    connected = client.post(
        "/connect/sources/demo/connect",
        data={"token": session, "csrf": csrf_for(token), "username": "demouser", "password": "password"},
    )
    assert connected.status_code == 200, connected.content
    connection = Connection.objects.select_related("human__application").get(human=alice.human, source="demo")
    connection.set_credentials({"access_token": "x", "refresh_token": PROVIDER_SECRET}, None)
    connection.save()
    tokens = exchange(client, alice, "access")
    refreshed = exchange(client, alice, "refresh", refresh_token=tokens["refresh_token"])
    assert app_call(client, alice, "POST", f"users/{alice.human.pk}/sync").status_code == 202
    mark_reauth_required(connection, "the provider refused the refresh")
    disconnected = client.post(
        f"/connect/connections/{connection.pk}/disconnect", data={"token": session, "csrf": csrf_for(token)}
    )
    assert disconnected.status_code == 200, disconnected.content
    assert app_call(client, alice, "DELETE", f"users/{alice.human.pk}").status_code == 204

    response = app_call(client, alice, "GET", "audit?limit=500")
    entries = response.json()
    actions = [e["action"] for e in reversed(entries) if e["humanId"] == alice.human.pk]
    assert actions == [
        "token.exchange",
        "connection.connected",
        "token.exchange",
        "token.exchange",
        "connection.resync",
        "connection.reauth_required",
        "connection.disconnected",
        "user.deleted",
    ]
    by_action = {e["action"]: e for e in entries}
    assert by_action["connection.connected"]["actor"] == "end_user"
    assert by_action["user.deleted"]["actor"] == "app_server"
    assert by_action["connection.reauth_required"]["actor"] == "system"
    assert by_action["user.deleted"]["ip"] == "127.0.0.1"
    assert [e["details"].get("type") for e in entries if e["action"] == "token.exchange"] == [
        "refresh",
        "access",
        "session",
    ]

    secrets = {
        alice.app.client_secret,
        alice.app.app_key,
        alice.app.webhook_secret,
        session,
        csrf_for(token),
        tokens["access_token"],
        tokens["refresh_token"],
        refreshed["access_token"],
        refreshed["refresh_token"],
        PROVIDER_SECRET,
    }
    served = response.content.decode()
    stored = json.dumps([list(e) for e in AuditEntry.objects.values_list("action", "details", "ip", "human_id")])
    for secret in secrets:
        assert secret not in served and secret not in stored


def test_it_shows_an_application_only_its_own_entries(client: Client, alice: Persona, charlie: Persona) -> None:
    app_call(client, charlie, "POST", "users", data={"externalId": "c-2"}, content_type="application/json")
    app_call(client, alice, "POST", "users", data={"externalId": "a-2"}, content_type="application/json")
    seen = app_call(client, alice, "GET", "audit").json()
    assert [e["action"] for e in seen if e["action"] == "user.created"] == ["user.created"]
    assert all(e["humanId"] != charlie.human.pk for e in seen)
    assert AuditEntry.objects.filter(application=charlie.app.application, action="user.created").count() == 1


def test_it_does_not_show_a_tenant_who_its_operators_are(client: Client, alice: Persona) -> None:
    from connect.audit import audit

    audit("admin.changed", actor="operator", application=alice.app.application, operator="ops-jane", fields=["name"])
    seen = [e for e in app_call(client, alice, "GET", "audit").json() if e["action"] == "admin.changed"]
    assert seen and seen[0]["actor"] == "operator" and seen[0]["details"] == {"fields": ["name"]}
    assert "ops-jane" not in json.dumps(app_call(client, alice, "GET", "audit").json())
    assert AuditEntry.objects.get(action="admin.changed").details["operator"] == "ops-jane"  # kept for operators


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "203.0.113.9", "127.0.0.1"),  # no proxy trusted: the header is ignored
        (1, "198.51.100.7, 203.0.113.9", "203.0.113.9"),  # the one proxy's view of the client
        (2, "198.51.100.7, 203.0.113.9", "198.51.100.7"),
        (1, "", "127.0.0.1"),
        (1, "not-an-address", "127.0.0.1"),
    ],
)
def test_it_takes_the_client_address_from_trusted_proxies_only(
    settings: Any, proxies: int, forwarded: str, expected: str
) -> None:
    from django.test import RequestFactory

    from connect.audit import client_ip

    settings.TRUSTED_PROXIES = proxies
    request = RequestFactory().get("/", HTTP_X_FORWARDED_FOR=forwarded) if forwarded else RequestFactory().get("/")
    assert client_ip(request) == expected
