"""The Connect page as the server renders it: who may frame it, and the state its script reads."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client

from connect.models import Human, Token, TokenKind
from sources.models import Connection, ConnectionStatus
from tests.conftest import Persona
from tests.factories import make_connection

STATE = re.compile(r'<script id="connect-state" type="application/json">(.*?)</script>', re.S)


def session_token(human: Human, ttl: int = 3600) -> str:
    _token, value = Token.mint(kind=TokenKind.SESSION, human=human, ttl=ttl)
    return value


def page_state(html: str) -> dict[str, Any]:
    found = STATE.search(html)
    assert found, "the page carries its state as JSON"
    return dict(json.loads(found.group(1)))


def frame_ancestors(response: Any) -> str:
    policy = response["Content-Security-Policy"]
    directive = next(d.strip() for d in policy.split(";") if d.strip().startswith("frame-ancestors"))
    return directive.removeprefix("frame-ancestors").strip()


def test_it_lets_only_the_applications_origins_frame_the_page(client: Client, alice: Persona) -> None:
    response = client.get("/connect/", {"token": session_token(alice.human), "mode": "auth"})
    assert response.status_code == 200
    assert frame_ancestors(response) == "http://127.0.0.1:9999"
    assert "X-Frame-Options" not in response


def test_it_serves_the_page_under_a_strict_content_security_policy(client: Client, alice: Persona) -> None:
    response = client.get("/connect/", {"token": session_token(alice.human)})
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "style-src 'self'" in policy
    assert "'unsafe-inline'" not in policy
    html = response.content.decode()
    # Nothing the policy would block: no inline script, style element or style attribute.
    assert " style=" not in html and "<style" not in html
    scripts = re.findall(r"<script([^>]*)>", html)
    assert all('src="' in attrs or 'type="application/json"' in attrs for attrs in scripts)
    assert response["Cache-Control"] == "no-store"
    assert response["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("token", "status"),
    [("", "MISSING_SESSION_TOKEN"), ("not-a-token", "SESSION_TOKEN_INVALID")],
)
def test_it_lets_any_origin_frame_a_page_without_a_usable_token(
    client: Client, alice: Persona, token: str, status: str
) -> None:
    response = client.get("/connect/", {"token": token} if token else {})
    assert response.status_code == 200
    assert frame_ancestors(response) == "*"
    state = page_state(response.content.decode())
    assert state["status"] == status
    assert state["origins"] == []
    assert "csrf" not in state and "sources" not in state and "connections" not in state


def test_it_shows_no_data_on_an_expired_token_page(client: Client, alice: Persona) -> None:
    make_connection(alice.human)
    response = client.get("/connect/", {"token": session_token(alice.human, ttl=-1)})
    html = response.content.decode()
    state = page_state(html)
    assert state["status"] == "SESSION_TOKEN_EXPIRED"
    assert "expired" in state["message"]
    assert frame_ancestors(response) == "*"
    # Neither the application, its origins nor the user's connections are on the page.
    assert alice.app.application.name not in html
    assert "127.0.0.1:9999" not in html
    assert '"demo"' not in html


def test_it_renders_the_state_the_page_script_needs(client: Client, alice: Persona) -> None:
    connection = make_connection(alice.human)
    token = session_token(alice.human)
    response = client.get("/connect/", {"token": token})
    html = response.content.decode()
    state = page_state(html)
    assert state["status"] == ""
    assert state["csrf"] and token not in html
    assert state["origins"] == ["http://127.0.0.1:9999"]
    demo = next(s for s in state["sources"] if s["slug"] == "demo")
    assert demo["name"] == "Demo" and demo["initials"] == "D" and demo["authKind"] == "credentials"
    assert [(f["name"], f["label"], f["kind"]) for f in demo["fields"]] == [
        ("username", "Username", "text"),
        ("password", "Password", "password"),
    ]
    assert state["connections"] == [{"id": connection.pk, "source": "demo", "name": "Demo", "status": "active"}]
    assert "Alice&#x27;s app" in html or "Alice's app" in html


def test_it_lists_a_connection_that_needs_reconnecting(client: Client, alice: Persona) -> None:
    connection = make_connection(alice.human)
    Connection.objects.filter(pk=connection.pk).update(status=ConnectionStatus.REAUTH_REQUIRED)
    state = page_state(client.get("/connect/", {"token": session_token(alice.human)}).content.decode())
    assert state["connections"][0]["status"] == "reauth_required"


def test_it_never_lists_another_tenants_connections(client: Client, alice: Persona, charlie: Persona) -> None:
    make_connection(charlie.human)
    response = client.get("/connect/", {"token": session_token(alice.human)})
    state = page_state(response.content.decode())
    assert state["connections"] == []
    assert state["origins"] == ["http://127.0.0.1:9999"]
    assert "127.0.0.1:9998" not in frame_ancestors(response)


def test_it_accepts_the_form_with_the_pages_csrf_and_explains_a_wrong_password(client: Client, alice: Persona) -> None:
    token = session_token(alice.human)
    state = page_state(client.get("/connect/", {"token": token}).content.decode())
    form = {"token": token, "csrf": state["csrf"], "username": "demouser"}

    wrong = client.post("/connect/sources/demo/connect", {**form, "password": "nope"})
    assert wrong.status_code == 400
    assert "Wrong username or password" in wrong.json()["message"]
    assert "nope" not in wrong.content.decode()

    right = client.post("/connect/sources/demo/connect", {**form, "password": "password"})
    assert right.status_code == 200
    body = right.json()
    assert body["status"] == "CONNECTED_SOURCE"
    assert body["connection"]["name"] == "Demo" and body["connection"]["source"] == "demo"
    assert [c["id"] for c in body["currentConnections"]] == [body["connection"]["id"]]


def test_it_refuses_the_form_with_another_sessions_csrf(client: Client, alice: Persona) -> None:
    mine, other = session_token(alice.human), session_token(alice.human)
    other_csrf = page_state(client.get("/connect/", {"token": other}).content.decode())["csrf"]
    response = client.post(
        "/connect/sources/demo/connect",
        {"token": mine, "csrf": other_csrf, "username": "demouser", "password": "password"},
    )
    assert response.status_code == 403
    assert not Connection.objects.filter(human=alice.human).exists()


def test_it_tells_the_page_when_its_session_expired(client: Client, alice: Persona) -> None:
    response = client.post(
        "/connect/sources/demo/connect",
        {"token": session_token(alice.human, ttl=-1), "csrf": "x", "username": "demouser", "password": "password"},
    )
    assert response.status_code == 401
    assert response.json()["message"] == "SESSION_TOKEN_EXPIRED"


def test_it_serves_the_page_assets_and_the_drop_in_client(client: Client, db: None) -> None:
    for path, kind, marker in [
        ("/connect/client.js", "text/javascript", "HumanConnect"),
        ("/connect/assets/connect.js", "text/javascript", "hapi-oauth-result"),
        ("/connect/assets/connect.css", "text/css", ".source-item"),
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response["Content-Type"].startswith(kind)
        assert marker in b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    assert client.get("/connect/assets/..%2Fviews.py").status_code == 404


@pytest.mark.parametrize(
    "typed",
    ["https://a.com *", "https://a.com;script-src *", "https://*.a.com", "https://user@a.com", "https://a.com:0"],
)
def test_it_never_lets_an_operator_widen_who_may_frame_connect(typed: str, db: None) -> None:
    from django.core.management import CommandError, call_command

    from connect.admin import ApplicationCreateForm

    with pytest.raises(CommandError, match="is not an origin"):
        call_command("create_application", "--name", "Bob's app", "--origin", typed)
    form = ApplicationCreateForm(data={"name": "Bob's app", "allowed_origins": typed, "notify_url": ""})
    assert not form.is_valid() and "is not an origin" in str(form.errors["allowed_origins"])


def test_it_frames_connect_only_from_the_exact_origins_typed(client: Client, db: None) -> None:
    from connect.admin import ApplicationCreateForm

    form = ApplicationCreateForm(
        data={
            "name": "Bob's app",
            "allowed_origins": "https://App.Example.com:8443/\nhttp://[::1]:3000",
            "notify_url": "",
        }
    )
    assert form.is_valid(), form.errors
    assert form.cleaned_data["allowed_origins"] == ["https://app.example.com:8443", "http://[::1]:3000"]
