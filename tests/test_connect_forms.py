"""The Connect page's forms: CSRF bound to the Connect session, the credential form, disconnect,
reconnecting, security headers, and the audit trail they leave."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.test import Client

from connect.models import AuditEntry, Token, TokenKind
from connect.views import csrf_for
from sources.models import Connection, ConnectionStatus
from tests.conftest import Persona
from tests.factories import make_connection

DEMO_LOGIN = {"username": "demouser", "password": "password"}


def session_of(persona: Persona) -> tuple[Token, str]:
    return Token.mint(kind=TokenKind.SESSION, human=persona.human, ttl=3600)


def connect_demo(value: str, csrf: str, **form: str) -> Any:
    return Client().post("/connect/sources/demo/connect", {"token": value, "csrf": csrf, **(form or DEMO_LOGIN)})


def disconnect(connection_id: str, value: str, csrf: str) -> Any:
    return Client().post(f"/connect/connections/{connection_id}/disconnect", {"token": value, "csrf": csrf})


def test_it_connects_demo_with_the_right_csrf(alice: Persona) -> None:
    token, value = session_of(alice)
    answer = connect_demo(value, csrf_for(token))

    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "CONNECTED_SOURCE" and body["connection"]["source"] == "demo"
    assert [c["source"] for c in body["currentConnections"]] == ["demo"]
    entry = AuditEntry.objects.get(action="connection.connected", human_id=alice.human.pk)
    assert entry.actor == "end_user" and entry.ip == "127.0.0.1" and entry.details["source"] == "demo"


@pytest.mark.parametrize("case", ["missing", "wrong", "of-another-session"])
def test_it_refuses_a_form_without_its_csrf_token(alice: Persona, charlie: Persona, case: str) -> None:
    _token, value = session_of(alice)
    other, _ = session_of(charlie)
    csrf = {"missing": "", "wrong": "0" * 64, "of-another-session": csrf_for(other)}[case]

    answer = connect_demo(value, csrf)
    assert answer.status_code == 403 and "CSRF" in answer.json()["message"]
    assert not Connection.objects.filter(human=alice.human).exists()

    connection = make_connection(alice.human)
    refused = disconnect(connection.pk, value, csrf)
    assert refused.status_code == 403
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE


@pytest.mark.parametrize("value", ["", "not-a-token"])
def test_it_refuses_a_form_without_a_valid_session(alice: Persona, value: str) -> None:
    answer = connect_demo(value, "x")
    assert answer.status_code == 401 and answer.json()["statusCode"] == 401


def test_it_shows_a_wrong_demo_password_as_a_form_error(alice: Persona) -> None:
    token, value = session_of(alice)
    answer = connect_demo(value, csrf_for(token), username="demouser", password="wrong")
    assert answer.status_code == 400
    assert set(answer.json()["validation"]["keys"]) == {"username", "password"}
    assert not Connection.objects.filter(human=alice.human).exists()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"[1]", "application/json"), (b"{oops", "application/json"), (b"\xff", "application/json"), (b"", "text/plain")],
)
def test_it_answers_malformed_form_posts_with_a_4xx(alice: Persona, body: bytes, content_type: str) -> None:
    answer = Client().post("/connect/sources/demo/connect", body, content_type=content_type)
    assert 400 <= answer.status_code < 500 and answer.json()["message"]


def test_it_takes_a_json_form(alice: Persona) -> None:
    token, value = session_of(alice)
    body = json.dumps({"token": value, "csrf": csrf_for(token), **DEMO_LOGIN})
    answer = Client().post("/connect/sources/demo/connect", body, content_type="application/json")
    assert answer.status_code == 200


def test_it_refuses_an_unknown_source(alice: Persona) -> None:
    token, value = session_of(alice)
    answer = Client().post("/connect/sources/nope/connect", {"token": value, "csrf": csrf_for(token)})
    assert answer.status_code == 404


def test_it_disconnects_and_audits(alice: Persona) -> None:
    connection = make_connection(alice.human)
    token, value = session_of(alice)
    answer = disconnect(connection.pk, value, csrf_for(token))

    assert answer.status_code == 200 and answer.json()["status"] == "DISCONNECTED_SOURCE"
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == ConnectionStatus.DISCONNECTED and stored.credentials_sealed == ""
    entry = AuditEntry.objects.get(action="connection.disconnected")
    assert entry.actor == "end_user" and entry.details["connection_id"] == connection.pk


def test_it_never_disconnects_someone_elses_connection(alice: Persona, charlie: Persona) -> None:
    alices = make_connection(alice.human)
    token, value = session_of(charlie)
    answer = disconnect(alices.pk, value, csrf_for(token))
    assert answer.status_code == 404
    assert Connection.objects.get(pk=alices.pk).status == ConnectionStatus.ACTIVE


def test_it_reconnects_a_credentials_source_that_needs_reauthorization(alice: Persona) -> None:
    connection = make_connection(alice.human)
    Connection.objects.filter(pk=connection.pk).update(status=ConnectionStatus.REAUTH_REQUIRED)
    token, value = session_of(alice)

    page = Client().get("/connect/", {"token": value})
    assert b'"status": "reauth_required"' in page.content
    answer = connect_demo(value, csrf_for(token))
    assert answer.status_code == 200 and answer.json()["connection"]["id"] == connection.pk
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE
    assert AuditEntry.objects.filter(action="connection.reauthorized", human_id=alice.human.pk).count() == 1


def test_it_lets_only_the_applications_origins_frame_connect(alice: Persona) -> None:
    _token, value = session_of(alice)
    page = Client().get("/connect/", {"token": value})
    policy = page["Content-Security-Policy"]
    assert "frame-ancestors http://127.0.0.1:9999" in policy and "*" not in policy
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert page["Cache-Control"] == "no-store" and page["Referrer-Policy"] == "no-referrer"
    assert "X-Frame-Options" not in page  # CSP frame-ancestors decides

    invalid = Client().get("/connect/", {"token": "nope"})
    assert "frame-ancestors *" in invalid["Content-Security-Policy"]
    assert b"SESSION_TOKEN_INVALID" in invalid.content and b"127.0.0.1:9999" not in invalid.content


def test_it_keeps_form_secrets_out_of_the_audit_log_and_logs(alice: Persona, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token, value = session_of(alice)
    csrf = csrf_for(token)
    connect_demo(value, csrf, username="demouser", password="wrong-secret-pw")
    connection_id = connect_demo(value, csrf).json()["connection"]["id"]
    disconnect(connection_id, value, csrf)

    rows = json.dumps(list(AuditEntry.objects.values("action", "details")))
    assert "connection.disconnected" in rows
    for secret in (value, csrf, "wrong-secret-pw", "password", alice.app.client_secret):
        assert secret not in rows
        assert secret not in caplog.text


# --- the operator's admin ------------------------------------------------------------------


def test_it_creates_an_application_in_the_admin_and_shows_its_secrets_once(operator: Client) -> None:
    from connect.models import Application

    page = operator.post(
        "/admin/connect/application/add/",
        {"name": "Ops app", "allowed_origins": "https://app.example.com/\nhttp://127.0.0.1:3000", "notify_url": ""},
        follow=True,
    )
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    html = page.content.decode()
    application = Application.objects.get(name="Ops app")
    secret = html.split('id="client-secret">', 1)[1].split("<", 1)[0]
    assert application.check_client_secret(secret) and secret not in application.client_secret_hash
    assert application.allowed_origins == ["https://app.example.com", "http://127.0.0.1:3000"]
    entry = AuditEntry.objects.get(action="application.created", application=application)
    assert entry.actor == "operator" and entry.details["operator"] == "ops"
    assert secret not in json.dumps(entry.details)
    # The change page never shows a secret, nor its hash.
    change = operator.get(f"/admin/connect/application/{application.pk}/change/").content.decode()
    assert application.client_secret_hash not in change and application.app_key_hash not in change
    # Reloading the page of secrets shows them no more, and creates nothing (POST/redirect/GET).
    again = operator.get(page.redirect_chain[-1][0])
    assert b"shown once already" in again.content and secret.encode() not in again.content
    assert Application.objects.filter(name="Ops app").count() == 1


def test_it_refuses_a_bad_origin_in_the_admin(operator: Client) -> None:
    page = operator.post("/admin/connect/application/add/", {"name": "X", "allowed_origins": "javascript:alert(1)"})
    assert page.status_code == 200 and b"is not an origin" in page.content
    assert not AuditEntry.objects.filter(action="application.created", details__name="X").exists()


def test_it_audits_admin_changes(operator: Client, alice: Persona) -> None:
    application = alice.app.application
    answer = operator.post(
        f"/admin/connect/application/{application.pk}/change/",
        {"name": "Renamed", "allowed_origins": "https://new.example.com", "notify_url": ""},
    )
    assert answer.status_code == 302
    entry = AuditEntry.objects.get(action="admin.application_changed")
    assert entry.actor == "operator" and entry.details["fields"] == ["allowed_origins", "name"]
    assert entry.application == application

    tokens = operator.get("/admin/connect/token/")
    assert tokens.status_code == 200
    token, _value = session_of(alice)
    assert token.token_hash not in operator.get(f"/admin/connect/token/{token.pk}/change/").content.decode()
    operator.post("/admin/connect/token/", {"action": "revoke", "_selected_action": [token.pk]})
    assert Token.objects.get(pk=token.pk).revoked_at is not None
    assert AuditEntry.objects.filter(action="admin.token_revoked", human_id=alice.human.pk).exists()
    # The audit log can be read, never edited.
    assert operator.get("/admin/connect/auditentry/").status_code == 200
    assert operator.post(f"/admin/connect/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403


def test_it_lists_only_this_sessions_connections_to_the_page(alice: Persona, charlie: Persona) -> None:
    token, value = session_of(alice)
    mine = make_connection(alice.human)
    make_connection(charlie.human)

    answer = Client().post("/connect/connections", {"token": value, "csrf": csrf_for(token)})
    assert answer.status_code == 200
    assert answer.json()["currentConnections"] == [
        {"id": mine.pk, "source": "demo", "name": "Demo", "status": "active"}
    ]
    refused = Client().post("/connect/connections", {"token": value, "csrf": "0" * 64})
    assert refused.status_code == 403
    expired = Client().post("/connect/connections", {"token": "not-a-token", "csrf": csrf_for(token)})
    assert expired.status_code == 401
