"""Configuration mistakes are caught at startup, naming the setting, and never reach a person
as a server error; Demo (made-up data) is offered only where the operator asked for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from connect.models import Token, TokenKind
from connect.views import csrf_for
from sources.registry import enabled_plugins
from tests.conftest import Persona

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SOURCE_") and k != "OAUTHLIB_INSECURE_TRANSPORT"}
    base.pop("ALLOW_HTTP_PROVIDERS", None)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


def test_it_refuses_a_plain_http_provider_endpoint_at_startup() -> None:
    checked = run(["manage.py", "check"], SOURCE_OURA_AUTHORIZE_URL="http://127.0.0.1:9/oauth/authorize")
    assert checked.returncode != 0
    assert "SOURCE_OURA_AUTHORIZE_URL is plain http" in checked.stderr
    assert "ALLOW_HTTP_PROVIDERS=1" in checked.stderr


def test_it_allows_plain_http_endpoints_when_told_to() -> None:
    checked = run(
        ["manage.py", "check"], SOURCE_OURA_AUTHORIZE_URL="http://127.0.0.1:9/oauth/authorize", ALLOW_HTTP_PROVIDERS="1"
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SOURCE_STRAVA_TOKEN_URL", "strava.example/token", "SOURCE_STRAVA_TOKEN_URL is not an http(s) URL"),
        ("SOURCE_WITHINGS_API_URL", "https://wbsapi.example:notaport", "SOURCE_WITHINGS_API_URL has a malformed port"),
        ("SOURCE_OURA_HISTORY_DAYS", "a year", "SOURCE_OURA_HISTORY_DAYS must be a whole number of at least 1"),
        ("SOURCE_FITBIT_SYNC_INTERVAL", "5", "SOURCE_FITBIT_SYNC_INTERVAL must be a whole number of at least 60"),
        # str.isdigit() admits "²" and other scripts' digits: named, never a crash of the check
        ("SOURCE_FITBIT_SYNC_INTERVAL", "\u00b2", "SOURCE_FITBIT_SYNC_INTERVAL must be a whole number of at least 60"),
        ("SOURCE_OURA_HISTORY_DAYS", "\u0663\u0660", "SOURCE_OURA_HISTORY_DAYS must be a whole number of at least 1"),
        ("SOURCE_HUMANITY_ALLOWED_INSTANCES", "a.example.com:\u00b2", "SOURCE_HUMANITY_ALLOWED_INSTANCES has a bad"),
        (
            "SOURCE_HUMANITY_WINDOW_BACK_DAYS",
            "-3",
            "SOURCE_HUMANITY_WINDOW_BACK_DAYS must be a whole number of at least 0",
        ),
        ("SOURCE_HUMANITY_ALLOWED_INSTANCES", "exa mple.com", "SOURCE_HUMANITY_ALLOWED_INSTANCES has a bad pattern"),
        ("SOURCE_STRAVA_DETAILS_PER_RUN", "some", "SOURCE_STRAVA_DETAILS_PER_RUN must be a whole number of at least 0"),
        ("SOURCES_ENABLED", "oura,fitbitt", "SOURCES_ENABLED names unknown sources: fitbitt"),
        ("SOURCE_PRIORITY", "ouraa", "SOURCE_PRIORITY names unknown sources: ouraa"),
    ],
)
def test_it_names_a_malformed_source_setting_at_startup(name: str, value: str, says: str) -> None:
    checked = run(["manage.py", "check"], **{name: value})
    assert checked.returncode != 0
    assert says in checked.stderr


def test_it_stops_the_web_server_process_on_a_misconfigured_source() -> None:
    started = run(["-c", "import humanapi_project.wsgi"], SOURCE_OURA_TOKEN_URL="http://127.0.0.1:9/token")
    assert started.returncode != 0
    assert "SOURCE_OURA_TOKEN_URL is plain http" in started.stderr


@pytest.mark.django_db
def test_it_offers_demo_only_in_demo_mode_or_when_named(settings: Any) -> None:
    settings.SOURCES_ENABLED = []
    settings.DEMO_MODE = False
    assert "demo" not in [p.slug for p in enabled_plugins()]
    settings.SOURCES_ENABLED = ["demo", "humanity"]
    assert sorted(p.slug for p in enabled_plugins()) == ["demo", "humanity"]
    settings.SOURCES_ENABLED = []
    settings.DEMO_MODE = True
    assert "demo" in [p.slug for p in enabled_plugins()]


@pytest.mark.django_db
def test_it_refuses_to_connect_demo_outside_demo_mode(client: Client, alice: Persona, settings: Any) -> None:
    settings.SOURCES_ENABLED = []
    settings.DEMO_MODE = False
    token, value = Token.mint(kind=TokenKind.SESSION, human=alice.human, ttl=3600)
    page = client.get("/connect/", {"token": value}).content.decode()
    assert '"slug": "demo"' not in page and '"slug":"demo"' not in page
    response = client.post(
        "/connect/sources/demo/connect",
        {"token": value, "csrf": csrf_for(token), "username": "demouser", "password": "password"},
    )
    assert 400 <= response.status_code < 500
    assert not alice.human.connections.exists()


@pytest.mark.django_db
def test_it_shows_a_page_not_a_500_when_the_sign_in_cannot_start(
    alice: Persona, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An http authorize URL that got past the checks (the setting changed under a running
    # process): requests-oauthlib refuses it. The person in the popup reads what happened.
    settings.SOURCE_SETTINGS = {
        **settings.SOURCE_SETTINGS,
        "SOURCE_OURA_CLIENT_ID": "client-1",
        "SOURCE_OURA_CLIENT_SECRET": "secret-1",
        "SOURCE_OURA_AUTHORIZE_URL": "http://127.0.0.1:9/oauth/authorize",
    }
    settings.SOURCES_ENABLED = []
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT", raising=False)
    token, value = Token.mint(kind=TokenKind.SESSION, human=alice.human, ttl=3600)
    response = Client().get("/connect/oauth/oura/start", {"token": value, "csrf": csrf_for(token)})
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert "Oura can&#x27;t be connected right now" in response.content.decode()
