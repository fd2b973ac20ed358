"""The OAuth2 authorization-code flow of Connect, against an emulated provider over real HTTP.

The Django side runs in the test client; the browser's trip to the provider's authorize page
and the server's code exchange both go over sockets to `tests/emulators/oauth_provider.py`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.test import Client
from django.utils import timezone

from connect.models import AuditEntry, OAuthState, Token, TokenKind
from connect.views import csrf_for
from humanapi_project import crypto
from sources.base import RawPage, Record, SyncContext
from sources.models import Connection, ConnectionStatus
from sources.oauth import OAuth2CodeSource
from sources.registry import plugin_classes
from tests.conftest import Persona
from tests.emulators.oauth_provider import CLIENT_ID, CLIENT_SECRET, USER_ID, OAuthProviderEmulator, start_provider

SLUG = "emuoauth"


class EmuSource(OAuth2CodeSource):
    """A test-only plugin: the standard OAuth2 code flow with PKCE, nothing provider-specific."""

    slug = SLUG
    name = "Emu Health"
    data_types = ("activities",)
    scopes = ("activity",)
    supports_pkce = True
    client_auth = "basic"

    def fetch(self, ctx: SyncContext) -> Iterator[RawPage]:
        return iter(())

    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Record]:
        return []


@pytest.fixture
def provider(settings: Any) -> Iterator[OAuthProviderEmulator]:
    emulator, server = start_provider()
    settings.SOURCES_ENABLED = []
    settings.SOURCE_SETTINGS = {
        **settings.SOURCE_SETTINGS,
        "SOURCE_EMUOAUTH_CLIENT_ID": CLIENT_ID,
        "SOURCE_EMUOAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "SOURCE_EMUOAUTH_AUTHORIZE_URL": server.url + "/oauth/authorize",
        "SOURCE_EMUOAUTH_TOKEN_URL": server.url + "/oauth/token",
        "SOURCE_EMUOAUTH_API_URL": server.url + "/api",
    }
    plugin_classes()[SLUG] = EmuSource  # which plugins exist: test setup, not a patch
    try:
        yield emulator
    finally:
        plugin_classes().pop(SLUG, None)
        server.stop()


def session_of(persona: Persona, kind: str = TokenKind.SESSION) -> tuple[Token, str]:
    return Token.mint(kind=kind, human=persona.human, ttl=3600)


def start(browser: Client, token: Token, value: str, *, redirect: bool = False, slug: str = SLUG) -> Any:
    query: dict[str, str] = {"token": value, "csrf": csrf_for(token)}
    if redirect:
        query["redirect"] = "1"
    return browser.get(f"/connect/oauth/{slug}/start", query)


def authorize(location: str) -> str:
    """The browser's visit to the provider's authorize page; returns where it sends us back."""
    answer = requests.get(location, allow_redirects=False, timeout=5)
    assert answer.status_code == 302, answer.text
    return str(answer.headers["Location"])


def flow(browser: Client, token: Token, value: str, *, redirect: bool = False) -> tuple[str, Any]:
    started = start(browser, token, value, redirect=redirect)
    assert started.status_code == 302, started.content
    callback = authorize(started["Location"])
    return callback, browser.get(callback)


def result_of(page: Any) -> dict[str, Any]:
    html = page.content.decode()
    marker = '<script id="oauth-result" type="application/json">'
    assert marker in html
    return dict(json.loads(html.split(marker, 1)[1].split("</script>", 1)[0]))


def with_param(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return parts.path + "?" + "&".join(f"{k}={v}" for k, v in query.items())


def actions(persona: Persona) -> list[str]:
    return list(
        AuditEntry.objects.filter(application=persona.app.application).order_by("id").values_list("action", flat=True)
    )


def test_it_connects_an_oauth_source_with_pkce(alice: Persona, provider: OAuthProviderEmulator) -> None:
    token, value = session_of(alice)
    browser = Client()
    _callback, page = flow(browser, token, value)

    assert page.status_code == 200
    result = result_of(page)
    connection = Connection.objects.get(human=alice.human, source=SLUG)
    assert result["type"] == "hapi-oauth-result" and result["ok"] is True and result["slug"] == SLUG
    assert result["connection"] == {"id": connection.pk, "name": "Emu Health", "source": SLUG}
    assert {"id": connection.pk, "source": SLUG, "name": "Emu Health", "status": "active"} in result[
        "currentConnections"
    ]
    assert connection.status == ConnectionStatus.ACTIVE and connection.external_user_id == USER_ID
    assert connection.credentials["access_token"] in provider.access_tokens
    # PKCE S256 was asked for and checked by the provider; redirect_uri is the one callback.
    asked = provider.authorize_requests[-1]
    assert asked["code_challenge_method"] == "S256" and asked["code_challenge"]
    assert asked["redirect_uri"] == "http://testserver/connect/oauth/callback"
    assert provider.grants["authorization_code"] == 1
    assert "oauth.started" in actions(alice) and "connection.connected" in actions(alice)
    # The page is CSP-safe: its script is a file of this server, none inline.
    assert (
        "script-src 'self'" in page["Content-Security-Policy"]
        and "frame-ancestors 'none'" in page["Content-Security-Policy"]
    )
    assert "<script>" not in page.content.decode()
    script = browser.get("/connect/oauth/done.js")
    assert script.status_code == 200 and b"opener.postMessage" in b"".join(script.streaming_content)


@pytest.mark.parametrize("lifetime", ["1e400", 10**30, -5, "soon", None, True, [3600]])
def test_it_connects_whatever_lifetime_the_provider_claims(
    alice: Persona, provider: OAuthProviderEmulator, lifetime: Any
) -> None:
    """A hostile or broken `expires_in` is taken as an unknown lifetime (the token is refreshed
    when it is refused), never a 500 in the user's popup."""
    provider.expires_in = lifetime
    token, value = session_of(alice)
    _callback, page = flow(Client(), token, value)
    assert page.status_code == 200 and result_of(page)["ok"] is True
    connection = Connection.objects.get(human=alice.human, source=SLUG)
    assert connection.token_expires_at is None


def test_it_returns_to_connect_with_the_result_in_redirect_mode(
    alice: Persona, provider: OAuthProviderEmulator
) -> None:
    token, value = session_of(alice)
    browser = Client()
    _callback, back = flow(browser, token, value, redirect=True)

    assert back.status_code == 302
    target = urlsplit(back["Location"])
    assert target.path == "/connect/" and parse_qs(target.query)["token"] == [value]
    page = browser.get(back["Location"])
    state = json.loads(page.content.decode().split('id="connect-state" type="application/json">', 1)[1].split("<")[0])
    assert state["oauthResult"]["ok"] is True and state["oauthResult"]["connection"]["source"] == SLUG
    # A made-up result (no valid signature) is ignored.
    forged = browser.get("/connect/", {"token": value, "oauth_result": "eyJvayI6dHJ1ZX0:forged:sig"})
    assert "oauthResult" not in forged.content.decode()


def test_it_says_clearly_when_the_user_denies_access(alice: Persona, provider: OAuthProviderEmulator) -> None:
    token, value = session_of(alice)
    provider.deny_next = True
    callback, page = flow(Client(), token, value)

    assert "error=access_denied" in callback
    assert page.status_code == 400
    result = result_of(page)
    assert result["ok"] is False and "did not allow access to Emu Health" in result["message"]
    assert "Close this window" in page.content.decode()  # the way back
    assert not Connection.objects.filter(human=alice.human).exists()
    assert "oauth.denied" in actions(alice)


def test_it_sends_a_denied_user_back_to_connect_in_redirect_mode(
    alice: Persona, provider: OAuthProviderEmulator
) -> None:
    token, value = session_of(alice)
    provider.deny_next = True
    browser = Client()
    _callback, back = flow(browser, token, value, redirect=True)
    assert back.status_code == 302
    page = browser.get(back["Location"])
    assert "did not allow access" in page.content.decode()


def test_it_refuses_a_tampered_state(alice: Persona, provider: OAuthProviderEmulator) -> None:
    token, value = session_of(alice)
    browser = Client()
    started = start(browser, token, value)
    callback = authorize(started["Location"])
    state = parse_qs(urlsplit(callback).query)["state"][0]
    # One character changed (never to itself: a state starting with "x" stays a different one).
    page = browser.get(with_param(callback, state=("y" if state[0] == "x" else "x") + state[1:]))

    assert page.status_code == 400 and "not valid" in result_of(page)["message"]
    assert not Connection.objects.filter(human=alice.human).exists()
    assert provider.grants["authorization_code"] == 0


def test_it_refuses_a_replayed_state(alice: Persona, provider: OAuthProviderEmulator) -> None:
    token, value = session_of(alice)
    browser = Client()
    callback, first = flow(browser, token, value)
    assert first.status_code == 200

    replay = browser.get(callback)
    assert replay.status_code == 400 and "already used" in result_of(replay)["message"]
    assert Connection.objects.filter(human=alice.human).count() == 1
    assert actions(alice).count("connection.connected") == 1
    assert provider.grants["authorization_code"] == 1


def test_it_reports_a_wrong_pkce_verifier(alice: Persona, provider: OAuthProviderEmulator) -> None:
    token, value = session_of(alice)
    browser = Client()
    started = start(browser, token, value)
    # Whatever the reason the verifier sent differs from the challenge, the provider refuses.
    OAuthState.objects.filter(connect_token=token).update(sealed=crypto.encrypt_json({"code_verifier": "w" * 64}))
    page = browser.get(authorize(started["Location"]))

    assert page.status_code == 400
    assert "did not accept the authorization" in result_of(page)["message"]
    assert provider.refusals == ["invalid_grant"]
    assert not Connection.objects.filter(human=alice.human).exists()
    assert "oauth.failed" in actions(alice)


def test_it_refuses_an_expired_state(alice: Persona, provider: OAuthProviderEmulator) -> None:
    token, value = session_of(alice)
    browser = Client()
    started = start(browser, token, value)
    OAuthState.objects.filter(connect_token=token).update(expires_at=timezone.now() - timedelta(seconds=1))
    page = browser.get(authorize(started["Location"]))

    assert page.status_code == 400 and "expired" in result_of(page)["message"]
    assert not Connection.objects.filter(human=alice.human).exists()


def test_it_refuses_to_finish_a_sign_in_whose_connect_session_was_revoked(
    alice: Persona, provider: OAuthProviderEmulator
) -> None:
    token, value = session_of(alice)
    browser = Client()
    started = start(browser, token, value)
    Token.objects.filter(pk=token.pk).update(revoked_at=timezone.now())  # e.g. an operator revoked a leak
    page = browser.get(authorize(started["Location"]))

    assert page.status_code == 401 and "session has ended" in result_of(page)["message"]
    assert not Connection.objects.filter(human=alice.human).exists()


def test_it_refuses_a_state_from_another_connect_session(
    alice: Persona, charlie: Persona, provider: OAuthProviderEmulator
) -> None:
    alice_token, alice_value = session_of(alice)
    charlie_token, charlie_value = session_of(charlie)
    alice_browser, charlie_browser = Client(), Client()
    assert start(charlie_browser, charlie_token, charlie_value).status_code == 302
    alice_callback = authorize(start(alice_browser, alice_token, alice_value)["Location"])

    # Alice's callback (her state, her code) lands in Charlie's browser and Connect session.
    page = charlie_browser.get(alice_callback)
    assert page.status_code == 403 and "another browser" in result_of(page)["message"]
    assert not Connection.objects.filter(source=SLUG).exists()
    # It was not spent: Alice can still finish, and the connection is hers alone.
    assert alice_browser.get(alice_callback).status_code == 200
    assert list(Connection.objects.filter(source=SLUG).values_list("human_id", flat=True)) == [alice.human.pk]


def test_it_reconnects_a_connection_that_needs_reauthorization(alice: Persona, provider: OAuthProviderEmulator) -> None:
    token, value = session_of(alice)
    flow(Client(), token, value)
    Connection.objects.filter(human=alice.human, source=SLUG).update(status=ConnectionStatus.REAUTH_REQUIRED)

    _callback, page = flow(Client(), token, value)
    assert page.status_code == 200 and result_of(page)["ok"] is True
    assert Connection.objects.get(human=alice.human, source=SLUG).status == ConnectionStatus.ACTIVE
    assert "connection.reauthorized" in actions(alice)


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("no-token", 401, "without a session token"),
        ("bad-token", 401, "not valid"),
        ("expired", 401, "expired"),
        ("bad-csrf", 403, "did not come from the Connect page"),
        ("unknown-source", 404, "No source"),
        ("form-source", 404, "No source"),
    ],
)
def test_it_refuses_to_start_without_a_valid_session(
    alice: Persona, provider: OAuthProviderEmulator, case: str, status: int, words: str
) -> None:
    token, value = session_of(alice)
    query = {"token": value, "csrf": csrf_for(token)}
    slug = {"unknown-source": "nope", "form-source": "demo"}.get(case, SLUG)
    if case == "no-token":
        query.pop("token")
    elif case == "bad-token":
        query["token"] = "not-a-token"
    elif case == "expired":
        Token.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif case == "bad-csrf":
        query["csrf"] = "0" * 64
    page = Client().get(f"/connect/oauth/{slug}/start", query)
    assert page.status_code == status
    assert words in result_of(page)["message"]
    assert not OAuthState.objects.exists()


def test_it_rotates_public_tokens_after_an_oauth_connection(alice: Persona, provider: OAuthProviderEmulator) -> None:
    public, public_value = session_of(alice, TokenKind.PUBLIC)
    _other, _other_value = session_of(alice, TokenKind.PUBLIC)
    _callback, page = flow(Client(), public, public_value)

    assert page.status_code == 200
    live = Token.objects.filter(human=alice.human, kind=TokenKind.PUBLIC).live()
    # The one that opened this Connect session lives on briefly; every other one is revoked.
    assert list(live.values_list("pk", flat=True)) == [public.pk]
    assert live.get().expires_at <= timezone.now() + timedelta(seconds=3601)


def test_it_keeps_secrets_out_of_the_audit_log_and_logs(
    alice: Persona, provider: OAuthProviderEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Even urllib3's request lines, which the settings keep at INFO, would carry no secret here.
    caplog.set_level(logging.DEBUG, logger="urllib3")
    token, value = session_of(alice)
    browser = Client()
    callback = authorize(start(browser, token, value)["Location"])
    caplog.clear()  # what follows is the server's part: the callback and the code exchange
    assert browser.get(callback).status_code == 200
    connection = Connection.objects.get(human=alice.human, source=SLUG)
    state_row = OAuthState.objects.get(connect_token=token)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    state = parse_qs(urlsplit(callback).query)["state"][0]
    secrets = [
        value,
        code,
        state,
        CLIENT_SECRET,
        connection.credentials["access_token"],
        connection.credentials["refresh_token"],
    ]
    # The PKCE verifier is stored encrypted only.
    assert state_row.secrets["code_verifier"] not in state_row.sealed
    rows = json.dumps(list(AuditEntry.objects.values("action", "details", "ip")))
    # The emulator's access log is not the server's.
    lines = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug"))
    assert "oauth" in rows and lines
    for secret in secrets:
        assert secret not in rows
        assert secret not in lines
