"""How the OAuth2 base judges a token endpoint's answers: only a real refusal is a refusal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from werkzeug.wrappers import Request, Response

from sources.base import RateLimited, RawPage, Record, RefreshRefused, SyncContext, TransientError
from sources.http import ProviderHttp
from sources.models import Connection, ConnectionStatus
from sources.oauth import OAuth2CodeSource
from sources.registry import plugin_classes
from sources.sync import RetryLater, connection_sync
from tests.conftest import Persona
from tests.emulators import ServerThread
from tests.factories import make_connection

SLUG = "tokenjudge"


class JudgedSource(OAuth2CodeSource):
    slug = SLUG
    name = "Token Judge"
    data_types = ("activities",)
    scopes = ("activity", "sleep")

    def fetch(self, ctx: SyncContext) -> Iterator[RawPage]:
        return iter(())

    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Record]:
        return []


class TokenEndpoint:
    """Answers each token request with the next scripted answer."""

    def __init__(self) -> None:
        self.script: list[tuple[int, str, dict[str, str]]] = []
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        Request(environ).get_data()
        self.calls += 1
        status, body, headers = self.script.pop(0)
        kind = "application/json" if body.startswith("{") else "text/html"
        return Response(body, status=status, headers=headers, content_type=kind)(environ, start_response)


def grant(**extra: Any) -> str:
    return json.dumps(
        {
            "access_token": "new-access",
            "refresh_token": "new-refresh",
            "token_type": "Bearer",
            "expires_in": 3600,
            **extra,
        }
    )


@pytest.fixture
def endpoint(settings: Any) -> Iterator[tuple[TokenEndpoint, JudgedSource]]:
    app = TokenEndpoint()
    server = ServerThread(app)
    server.start()
    settings.SOURCE_SETTINGS = {
        **settings.SOURCE_SETTINGS,
        "SOURCE_TOKENJUDGE_CLIENT_ID": "client",
        "SOURCE_TOKENJUDGE_CLIENT_SECRET": "secret",
        "SOURCE_TOKENJUDGE_TOKEN_URL": server.url + "/token",
    }
    plugin_classes()[SLUG] = JudgedSource  # which plugins exist: test setup
    try:
        yield app, JudgedSource({"CLIENT_ID": "client", "CLIENT_SECRET": "secret", "TOKEN_URL": server.url + "/token"})
    finally:
        plugin_classes().pop(SLUG, None)
        server.stop()


STORED = {"access_token": "old-access", "refresh_token": "old-refresh", "user_id": "u1"}


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, '{"error": "server_error", "error_description": "try later"}'),
        (502, "<html><body>Bad gateway</body></html>"),
        (200, "<html>maintenance</html>"),
    ],
)
def test_it_treats_an_outage_of_the_token_endpoint_as_transient(endpoint: Any, status: int, body: str) -> None:
    app, plugin = endpoint
    app.script.append((status, body, {}))
    with pytest.raises(TransientError):
        plugin.refresh(dict(STORED), ProviderHttp())


def test_it_reports_a_rate_limited_token_endpoint_with_its_retry_after(endpoint: Any) -> None:
    app, plugin = endpoint
    app.script.append((429, '{"error": "rate_limited"}', {"Retry-After": "42"}))
    with pytest.raises(RateLimited) as caught:
        plugin.refresh(dict(STORED), ProviderHttp())
    assert caught.value.retry_after == 42


def test_it_treats_invalid_grant_as_a_refusal(endpoint: Any) -> None:
    app, plugin = endpoint
    app.script.append((400, '{"error": "invalid_grant"}', {}))
    with pytest.raises(RefreshRefused):
        plugin.refresh(dict(STORED), ProviderHttp())


def test_it_accepts_a_narrower_grant_than_asked_for(endpoint: Any) -> None:
    app, plugin = endpoint
    app.script.append((200, grant(scope="activity"), {}))
    renewed = plugin.refresh(dict(STORED), ProviderHttp())
    assert renewed.data["access_token"] == "new-access"
    assert renewed.data["refresh_token"] == "new-refresh"
    assert renewed.data["scope"] in ("activity", ["activity"])


@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_connection_active_when_the_token_endpoint_is_down(endpoint: Any, alice: Persona) -> None:
    app, _plugin = endpoint
    connection = make_connection(alice.human, slug=SLUG, data=dict(STORED))
    Connection.objects.filter(pk=connection.pk).update(token_expires_at=timezone.now() + timedelta(seconds=30))
    app.script.extend([(503, '{"error": "server_error"}', {})] * 8)
    with pytest.raises(RetryLater):
        connection_sync(connection_id=connection.pk)
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.ACTIVE
    assert connection.credentials["refresh_token"] == "old-refresh"
    assert app.calls >= 1
