"""Hardening: HTTPS settings read from the environment and checked for contradictions, logs that
never carry a secret at any level, origins validated wherever they are entered, hostile JSON
and token lifetimes answered without a 500, and Humanity time text read in linear time."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
import requests
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from connect.models import Application, AuditEntry, Human
from connect.services import application_create
from data_api.models import Record
from humanapi_project.checks import check_https_settings
from humanapi_project.log_redaction import REDACTED, RedactSecrets, redact
from sources.http import ProviderHttp
from sources.models import Connection, SyncOutcome
from sources.providers import humanity as humanity_plugin
from sources.sync import RetryLater, connection_sync
from tests.app_client import basic
from tests.conftest import Persona
from tests.data_api_helpers import access_client
from tests.emulators import humanity as humanity_emulator
from tests.emulators.humanity import HumanityEmulator
from tests.emulators.oauth_provider import CLIENT_ID, CLIENT_SECRET, OAuthProviderEmulator
from tests.emulators.strava import StravaEmulator
from tests.emulators.strava import summary as strava_summary
from tests.humanity_helpers import good_form, humanity_settings, post_connect_form, seed
from tests.live import ROOT, LiveStack, start_stack, stop_stack, wait_until
from tests.test_connect_oauth import SLUG, flow, provider, result_of, session_of  # noqa: F401 - provider is a fixture
from tests.test_humanity_live import connect_over_http, finished_runs
from tests.test_strava import connect as strava_connect
from tests.test_strava import provider_ids as strava_provider_ids
from tests.test_strava import stored_ids as strava_stored_ids
from tests.test_strava import strava  # noqa: F401 - a fixture, asked for by name

# --- HTTPS -----------------------------------------------------------------------------------

HTTPS_ENV = {
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "TRUSTED_PROXIES": "1",
    "TRUSTED_PROXY_TLS_HEADER": "X-Forwarded-Proto: https",
}


@pytest.fixture(scope="module")
def https_stack(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    stack = start_stack(tmp_path_factory.mktemp("https"), HTTPS_ENV, worker=False)
    try:
        yield stack
    finally:
        stop_stack(stack)


def test_https_hardening_comes_from_the_environment_and_spares_health_checks(https_stack: LiveStack) -> None:
    def get(path: str, **headers: str) -> requests.Response:
        return requests.get(https_stack.url(path), headers=headers, allow_redirects=False, timeout=10)

    plain = get("/connect/?token=abc")
    assert plain.status_code == 301
    assert plain.headers["Location"] == https_stack.url("/connect/?token=abc").replace("http://", "https://")
    assert get("/connect/", **{"X-Forwarded-Proto": "http"}).status_code == 301

    proxied = get("/connect/", **{"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code != 301
    assert proxied.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    login = get("/admin/login/", **{"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert "secure" in login.headers["Set-Cookie"].lower()

    for probe in ("/healthz", "/readyz", "/livez"):  # a load balancer's health checks come without TLS
        assert get(probe).status_code != 301, probe


def test_the_paths_spared_the_redirect_are_a_setting(settings: Any, db: None) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^status$"]
    assert Client().get("/status").status_code != 301
    assert Client().get("/connect/").status_code == 301


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"SECURE_HSTS_PRELOAD": True}, "SECURE_HSTS_PRELOAD do nothing without SECURE_HSTS_SECONDS"),
        (
            {"SECURE_HSTS_SECONDS": 3600, "SECURE_HSTS_PRELOAD": True, "SECURE_HSTS_INCLUDE_SUBDOMAINS": True},
            "SECURE_HSTS_PRELOAD needs SECURE_HSTS_SECONDS of at least 31536000",
        ),
        ({"SECURE_SSL_REDIRECT": True, "SECURE_COOKIES": False}, "SECURE_COOKIES=0 with SECURE_SSL_REDIRECT"),
        ({"SECURE_SSL_REDIRECT": True, "TRUSTED_PROXIES": 1}, "needs TRUSTED_PROXY_TLS_HEADER"),
        ({"TRUSTED_PROXY_TLS_HEADER": "X-Forwarded-Proto: https"}, "set TRUSTED_PROXIES"),
        ({"SECURE_HSTS_SECONDS": 60, "PUBLIC_BASE_URL": "http://api.example.com"}, "PUBLIC_BASE_URL is http://"),
        ({"SECURE_REDIRECT_EXEMPT": ["^(healthz"]}, "SECURE_REDIRECT_EXEMPT has a bad regular expression"),
    ],
)
def test_contradicting_https_settings_fail_the_checks(settings: Any, changes: dict[str, Any], says: str) -> None:
    settings.SECURE_COOKIES, settings.TRUSTED_PROXIES = True, 0
    for name, value in changes.items():
        setattr(settings, name, value)
    assert any(says in str(m.msg) for m in check_https_settings()), [m.msg for m in check_https_settings()]


def test_consistent_https_settings_pass_the_checks(settings: Any) -> None:
    settings.SECURE_COOKIES, settings.PUBLIC_BASE_URL = True, "https://api.example.com"
    for name, value in HTTPS_ENV.items():
        setattr(settings, name, int(value) if value.isdigit() else value)
    assert check_https_settings() == []


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "TRUSTED_PROXY"))}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_a_contradiction_stops_the_web_server_and_a_malformed_header_setting_is_named() -> None:
    started = run(["-c", "import humanapi_project.wsgi"], SECURE_SSL_REDIRECT="1", TRUSTED_PROXIES="2")
    assert started.returncode != 0 and "needs TRUSTED_PROXY_TLS_HEADER" in started.stderr
    checked = run(["manage.py", "check"], TRUSTED_PROXY_TLS_HEADER="X Forwarded Proto", TRUSTED_PROXIES="1")
    assert checked.returncode != 0 and "TRUSTED_PROXY_TLS_HEADER must be a header name and value" in checked.stderr


# --- logs never carry a secret ----------------------------------------------------------------


@contextmanager
def console_log(*debug_loggers: str) -> Iterator[StringIO]:
    """What the root handlers of settings.LOGGING write, with these loggers turned to DEBUG (as
    an operator chasing a provider problem would)."""
    handlers = [h for h in logging.getLogger().handlers if any(isinstance(f, RedactSecrets) for f in h.filters)]
    assert handlers, "settings.LOGGING puts the redaction filter on the root handlers"
    buffer = StringIO()
    streams = [(h, h.setStream(buffer)) for h in handlers if isinstance(h, logging.StreamHandler)]
    loggers = [logging.getLogger(name) for name in debug_loggers]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        for handler, stream in streams:
            if stream is not None:
                handler.setStream(stream)


def humanity_secrets(emulator: HumanityEmulator) -> list[str]:
    with emulator.lock:
        return [*emulator.access, *emulator.refresh, humanity_emulator.CLIENT_SECRET, humanity_emulator.PASSWORD]


@pytest.mark.django_db(transaction=True)
def test_debug_logs_of_provider_calls_never_show_the_access_token(humanity: HumanityEmulator, alice: Persona) -> None:
    seed(humanity)
    with console_log("urllib3", "sources") as log:
        response, _ = post_connect_form(Client(), alice.human, **good_form(humanity))
        assert response.status_code == 200, response.content
        run = connection_sync(connection_id=response.json()["connection"]["id"], http=ProviderHttp())
    assert run is not None and run.outcome == SyncOutcome.SUCCEEDED, run and run.error
    text = log.getvalue()
    assert "/api/v2/shifts?" in text and f"access_token={REDACTED}" in text  # the DEBUG request lines are there
    assert humanity.access and not [s for s in humanity_secrets(humanity) if s in text]


def test_debug_logs_of_an_oauth_sign_in_never_show_a_secret(alice: Persona, request: pytest.FixtureRequest) -> None:
    emulator: OAuthProviderEmulator = request.getfixturevalue("provider")
    token, value = session_of(alice)
    with console_log("urllib3", "requests_oauthlib", "oauthlib") as log:
        _callback, page = flow(Client(), token, value)
    assert result_of(page)["ok"] is True
    text = log.getvalue()
    assert "Obtained token" in text and REDACTED in text  # requests-oauthlib's token lines were written
    basic_auth = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    leaked = [*emulator.access_tokens, *emulator.refresh_tokens, *emulator.codes, CLIENT_SECRET, basic_auth, value]
    assert emulator.access_tokens and not [s for s in leaked if s in text]


@pytest.fixture(scope="module")
def debug_stack(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveStack, HumanityEmulator]]:
    emulator = HumanityEmulator().start()
    env = {**humanity_settings(emulator, history_days=30), "LOG_LEVEL": "DEBUG"}
    stack = start_stack(tmp_path_factory.mktemp("debug-logs"), env)
    try:
        yield stack, emulator
    finally:
        stop_stack(stack)
        emulator.stop()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_logging_at_debug_never_writes_the_access_token(
    debug_stack: tuple[LiveStack, HumanityEmulator], alice: Persona
) -> None:
    stack, emulator = debug_stack
    seed(emulator)
    connection = connect_over_http(stack, emulator, alice.human)
    runs = wait_until(lambda: finished_runs(connection), timeout=60, message="the history sync") or []
    assert runs[0].outcome == SyncOutcome.SUCCEEDED, stack.log_tail()
    worker_log = stack.logs[1].read_text(errors="replace")
    assert "/api/v2/shifts?" in worker_log and f"access_token={REDACTED}" in worker_log, worker_log[-3000:]
    assert not [s for s in humanity_secrets(emulator) if s in worker_log]


def test_gunicorn_logs_neither_query_strings_nor_the_secrets_in_a_request_line(
    transactional_db: None, tmp_path: Any
) -> None:
    """gunicorn.conf.py, read from the project root as tests/live.py starts gunicorn there."""
    stack = start_stack(tmp_path, worker=False)
    try:
        url = stack.url("/connect/?token=secret-value&code=abc")
        assert requests.get(url, headers={"Referer": url}, timeout=10).status_code < 500
        with socket.create_connection(("127.0.0.1", int(stack.base_url.rsplit(":", 1)[1])), timeout=10) as raw:
            # A request line gunicorn cannot parse: its error log quotes the line.
            raw.sendall(b"GET /connect/?token=secret-value&code=abc\x7f HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert raw.recv(1024).startswith(b"HTTP/1.1 400")
        log = wait_until(
            lambda: (text := stack.logs[0].read_text(errors="replace")).count("GET /connect/") >= 3 and text,
            timeout=15,
            message="gunicorn's access lines (the stack's own probe, this request) and its error line",
        )
    finally:
        stop_stack(stack)
    lines = [line for line in log.splitlines() if "/connect/" in line]
    assert "secret-value" not in log and not [line for line in lines if "abc" in line], lines
    assert any('"GET /connect/" 200 ' in line for line in lines), lines  # the access line: the path only
    assert any(f"token={REDACTED}" in line for line in lines), lines  # the unparsed line, redacted


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (
            'http://h:80 "GET /api/v2/shifts?start_date=2026-01-01&access_token=s3cr3tvalue HTTP/1.1" 200 9',
            "s3cr3tvalue",
        ),
        ("Request headers were {'Authorization': 'Bearer s3cr3tvalue', 'Accept': '*/*'}", "s3cr3tvalue"),
        ("Authorization: Basic ZW11LWNsaWVudC0xOmVtdS1zZWNyZXQtMQ==", "ZW11LWNsaWVudC0xOmVtdS1zZWNyZXQtMQ=="),
        ('Response content {"access_token": "s3cr3tvalue", "expires_in": 3600}', "s3cr3tvalue"),
        ('{"refresh_token":"s3cr\\"etvalue","token_type":"Bearer"}', 'etvalue"'),
        ("Prepared body grant_type=authorization_code&code=s3cr3tvalue&code_verifier=v3rifier", "v3rifier"),
        ("client_secret='s3cr3t value'", "s3cr3t value"),
        ("GET /connect/?token=s3cr3tvalue&csrf=c5rfvalue HTTP/1.1", "c5rfvalue"),
        ("broker redis://:s3cr3tvalue@redis:6379/0", "s3cr3tvalue"),
        ("X-Api-Key: s3cr3tvalue", "s3cr3tvalue"),
        ("Obtained token {'accessToken': 's3cr3tvalue', 'userId': 7}", "s3cr3tvalue"),
    ],
)
def test_redaction_covers_the_shapes_secrets_take(line: str, secret: str) -> None:
    cleaned = redact(line)
    assert secret not in cleaned and REDACTED in cleaned, cleaned


def test_redaction_covers_tracebacks_and_keeps_plain_words() -> None:
    try:
        raise ConnectionError("Max retries exceeded with url: /api/v2/me?access_token=s3cr3tvalue")
    except ConnectionError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "call to %s failed", ("humanity",), sys.exc_info())
    assert RedactSecrets().filter(record)
    shown = logging.Formatter().format(record)
    assert "s3cr3tvalue" not in shown and "call to humanity failed" in shown and f"access_token={REDACTED}" in shown
    kept = "sync of connection c1 (humanity) was partial: 2 shifts unreadable; status_code=500"
    assert redact(kept) == kept


@pytest.mark.parametrize(
    "line",
    [
        "sync of connection c1 (humanity) finished: state=partial, 2 shifts unreadable",
        "Strava refused the refresh (code=invalid_grant); the user must reconnect",
        "rate limit key=connect:session window=60 reached",
        "token endpoint client auth=client_secret_basic",
        "the sync state is partial; key rotation done; exit code 2",
        "Humanity asks for basic authentication; the Bearer tokenization scheme is unused",
        "kwargs code='E002', state='retrying'",
    ],
)
def test_redaction_keeps_words_that_only_name_secrets_in_urls_and_json(line: str) -> None:
    assert redact(line) == line


@pytest.mark.parametrize(
    ("line", "secrets"),
    [
        ("GET /connect/oauth/callback?code=c0de1&state=st4te1 HTTP/1.1", ["c0de1", "st4te1"]),
        ("Prepared body code=c0de1&grant_type=authorization_code", ["c0de1"]),
        ("body grant_type=authorization_code&code=c0de1", ["c0de1"]),
        ('Response {"code": "c0de1", "state": "st4te1", "key": "k3y1"}', ["c0de1", "st4te1", "k3y1"]),
        ("GET https://maps.example.com/geo?q=x&key=k3y1 HTTP/1.1", ["k3y1"]),
        ("Request {'auth': ('client-1', 'p4ss1')}", ["p4ss1"]),
        ("callback state=https://app.example.com/cb?token=t0k1 done", ["t0k1"]),
        ("Authorization: Bearer AbCdEfGhIjKlMnOpQrSt", ["AbCdEfGhIjKlMnOpQrSt"]),
        ("sent with Bearer AbCdEfGhIjKlMnOpQrSt", ["AbCdEfGhIjKlMnOpQrSt"]),
    ],
)
def test_redaction_still_hides_those_names_in_urls_forms_and_json(line: str, secrets: list[str]) -> None:
    cleaned = redact(line)
    assert not [s for s in secrets if s in cleaned] and REDACTED in cleaned, cleaned


def test_redaction_takes_time_in_proportion_to_the_text() -> None:
    shapes = ["token=", '"access_token": "', "a-", "://x:", "Bearer ", "a=", '"a": ', "Authorization: "]
    shapes += ["code=", "code=(", "state=a ", "Bearer Abc", "basic x"]
    for shape in shapes:
        text = shape * (100_000 // len(shape))  # 100 kB of what makes a careless pattern backtrack
        began = time.perf_counter()
        redact(text)
        assert time.perf_counter() - began < 0.5, shape


# --- origins -------------------------------------------------------------------------------

BAD_ORIGINS = ["https://a.com *", "https://a.com/path", "https://*.a.com", "a.com", "https://a.com https://b.com"]


@pytest.mark.parametrize("typed", BAD_ORIGINS)
def test_the_model_refuses_an_origin_that_is_not_one(typed: str, alice: Persona) -> None:
    application = Application.objects.get(pk=alice.app.application.pk)
    application.allowed_origins = ["https://ok.example.com", typed]
    with pytest.raises(ValidationError, match=r"is not an origin like https://app\.example\.com"):
        application.full_clean()
    with pytest.raises(ValueError, match="is not an origin"):
        application_create(name="Bob's app", origins=[typed])
    assert not Application.objects.filter(name="Bob's app").exists()


def test_the_model_keeps_origins_in_one_form(alice: Persona) -> None:
    application = Application.objects.get(pk=alice.app.application.pk)
    application.allowed_origins = ["HTTPS://App.Example.com:8443/"]
    application.full_clean()
    assert application.allowed_origins == ["https://app.example.com:8443"]
    application.allowed_origins = "https://app.example.com"  # not a list
    with pytest.raises(ValidationError, match="must be a list"):
        application.full_clean()


def test_the_admin_change_form_refuses_a_bad_origin_and_changes_nothing(alice: Persona) -> None:
    from django.contrib.auth.models import User

    User.objects.create_superuser("ops", "ops@example.com", "ops-password")
    browser = Client()
    browser.force_login(User.objects.get(username="ops"))
    url = f"/admin/connect/application/{alice.app.application.pk}/change/"
    page = browser.post(url, {"name": "Renamed", "allowed_origins": "https://a.com *", "notify_url": ""})
    assert page.status_code == 200 and b"is not an origin" in page.content
    stored = Application.objects.get(pk=alice.app.application.pk)
    assert stored.name == "Alice's app" and stored.allowed_origins == ["http://127.0.0.1:9999"]
    assert not AuditEntry.objects.filter(action="admin.application_changed").exists()


def test_the_demo_setup_refuses_a_bad_origin(settings: Any, tmp_path: Any, db: None) -> None:
    settings.DEMO_CREDENTIALS_FILE = str(tmp_path / "application.json")
    with pytest.raises(CommandError, match=r"--origin .* is not an origin"):
        call_command("setup_demo", "--origin", "https://a.com *", stdout=StringIO())
    assert not Application.objects.exists()


# --- hostile JSON and token lifetimes ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/connect/token", "/v1/connect/tokens", "/v1/connect/publictokens"])
def test_text_that_is_not_unicode_is_a_400_and_changes_nothing(path: str, alice: Persona) -> None:
    base = {
        "client_id": alice.app.application.client_id,
        "client_secret": alice.app.client_secret,
        "type": "session",
        "client_user_email": "x@example.com",
        "clientId": alice.app.application.client_id,
        "clientSecret": alice.app.client_secret,
        "humanId": alice.human.pk,
    }
    for key in ("client_user_id", "type", "sessionToken", "humanId"):
        body = json.dumps({k: v for k, v in base.items() if k != key})[:-1] + f', "{key}": "a\\ud800b"}}'
        response = Client(raise_request_exception=False).post(path, body, content_type="application/json")
        assert response.status_code == 400, (key, response.content[:300])
        assert response.json()["statusCode"] == 400 and "Unicode" in response.json()["message"]
    assert Human.objects.count() == 1


@pytest.mark.parametrize("path", ["/connect/connections", "/connect/sources/demo/connect"])
def test_connect_forms_answer_text_that_is_not_unicode_with_a_4xx(path: str, alice: Persona) -> None:
    body = '{"token": "a\\udc00b", "csrf": "\\ud800", "username": "demouser", "password": "password"}'
    response = Client(raise_request_exception=False).post(path, body, content_type="application/json")
    assert 400 <= response.status_code < 500 and response.json()["statusCode"] == response.status_code


def test_the_application_api_answers_text_that_is_not_unicode_with_a_400(alice: Persona) -> None:
    url = f"/v1/apps/{alice.app.application.client_id}/users/{alice.human.pk}/sync"
    response = Client(raise_request_exception=False).post(
        url, '{"source": "\\ud800"}', content_type="application/json", HTTP_AUTHORIZATION=basic(alice.app.app_key)
    )
    assert response.status_code == 400 and response.json()["statusCode"] == 400


@pytest.mark.parametrize("record_id", ["\u00b2", "1\u00b2", "\u0663", "\uff13"])
@pytest.mark.parametrize("kind", ["activities", "heart_rate/readings"])
def test_a_record_id_of_digits_int_cannot_read_is_a_404(record_id: str, kind: str, alice: Persona) -> None:
    """str.isdigit() admits superscripts and other scripts' digits; int() refuses "²". Records
    and readings of a time series (day rows) both answer 404."""
    response = access_client(alice.human).get(f"/v1/human/{kind}/{record_id}")
    assert response.status_code == 404 and response.json()["statusCode"] == 404


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["http429", "status91"])
def test_a_retry_after_of_digits_float_cannot_read_is_an_unknown_wait(
    humanity: HumanityEmulator, alice: Persona, kind: str
) -> None:
    """`Retry-After: ²` over real HTTP: the normal backoff, not an internal error."""
    seed(humanity)
    response, _ = post_connect_form(Client(), alice.human, **good_form(humanity))
    humanity.fail("/api/v2/shifts", kind, retry_after="\u00b2")
    naps: list[float] = []
    run = connection_sync(connection_id=response.json()["connection"]["id"], http=ProviderHttp(sleep=naps.append))
    assert run is not None and run.outcome == SyncOutcome.SUCCEEDED, run and run.error
    assert len(naps) == 1 and naps[0] <= 1.0  # the first wait of the backoff (jitter up to 1s)


@pytest.mark.django_db(transaction=True)
def test_strava_rate_headers_of_digits_int_cannot_read_are_ignored(
    alice: Persona, request: pytest.FixtureRequest
) -> None:
    emulator: StravaEmulator = request.getfixturevalue("strava")
    connection = strava_connect(alice, emulator)
    # Superscripts are Latin-1, so a header can carry them: `X-RateLimit-Usage: ²,1`.
    odd = {"X-RateLimit-Usage": "\u00b2,1", "X-RateLimit-Limit": "200,\u00b3"}
    emulator.fail(
        "activities", 503, headers={**odd, "X-ReadRateLimit-Usage": "1,1", "X-ReadRateLimit-Limit": "100,1000"}
    )
    run = connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda s: None))
    assert run is not None and run.outcome == SyncOutcome.SUCCEEDED, run and run.error
    assert strava_stored_ids(connection) == strava_provider_ids(emulator)


@pytest.mark.django_db(transaction=True)
def test_strava_retry_after_of_digits_float_cannot_read_is_its_usual_wait(
    alice: Persona, request: pytest.FixtureRequest
) -> None:
    emulator: StravaEmulator = request.getfixturevalue("strava")
    connection = strava_connect(alice, emulator)
    emulator.fail("activities", 429, headers={"Retry-After": "\u00b2"})
    # A 429 without a readable Retry-After empties Strava's shared budget until its 15-minute
    # window (aligned to the quarter hour) ends: the run waits for that, and is no internal error.
    with pytest.raises(RetryLater) as raised:
        connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda s: None))
    now = time.time()
    window_end = (now // 900 + 1) * 900
    assert raised.value.retry_after is not None
    to_boundary = min(abs(raised.value.retry_after - (end - now)) for end in (window_end, window_end + 900))
    assert to_boundary < 5, raised.value.retry_after
    assert "internal error" not in str(raised.value)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("odd_id", ["\u00b2", "1\u0663", "\uff13"])
def test_a_strava_activity_id_of_digits_int_cannot_read_is_unreadable(
    alice: Persona, request: pytest.FixtureRequest, odd_id: str
) -> None:
    emulator: StravaEmulator = request.getfixturevalue("strava")
    connection = strava_connect(alice, emulator)
    good = strava_summary(next(iter(emulator.activities.values())))
    emulator.fail("activities", 200, body=json.dumps([good, {**good, "id": odd_id}]))
    run = connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda s: None))
    assert run is not None and run.outcome == SyncOutcome.PARTIAL, run and run.error
    assert run.counts["activities"]["unreadable"] == 1
    assert strava_stored_ids(connection) == [str(good["id"])]


HOSTILE_LIFETIMES = [
    float("inf"),
    float("-inf"),
    float("nan"),
    1e308,
    -0.0,
    2**63,
    "²",
    "\uff13\uff16\uff10\uff10",
    "",
    {"s": 1},
]


@pytest.mark.parametrize("lifetime", HOSTILE_LIFETIMES)
def test_a_hostile_lifetime_at_sign_in_or_refresh_is_an_unknown_expiry(
    alice: Persona, request: pytest.FixtureRequest, lifetime: Any
) -> None:
    """JSON from the provider may carry Infinity and NaN (Python writes and reads them), huge or
    negative numbers, digits of other scripts: the token is kept with an unknown expiry, and
    refreshed when refused, both when signing in and when a sync refreshes."""
    emulator: OAuthProviderEmulator = request.getfixturevalue("provider")
    emulator.expires_in = lifetime
    token, value = session_of(alice)
    _callback, page = flow(Client(), token, value)
    assert page.status_code == 200 and result_of(page)["ok"] is True
    connection = Connection.objects.get(human=alice.human, source=SLUG)
    assert connection.token_expires_at is None

    Connection.objects.filter(pk=connection.pk).update(token_expires_at=timezone.now() - timedelta(minutes=1))
    run = connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda s: None))
    assert run is not None and run.outcome == SyncOutcome.SUCCEEDED, run and run.error
    refreshed = Connection.objects.get(pk=connection.pk)
    assert emulator.grants["refresh_token"] == 1 and refreshed.token_expires_at is None
    assert refreshed.credentials["access_token"] in emulator.access_tokens


# --- Humanity time text --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_100_kb_hostile_time_is_read_quickly_and_reported_as_unreadable(
    humanity: HumanityEmulator, alice: Persona
) -> None:
    at = seed(humanity)
    hostile = "2026-12-07 1" + ":1" * 50_000 + "x"  # 100 kB: the shape that made the old pattern backtrack
    shift = humanity.add_shift("s-hostile", at["soon"] + timedelta(days=1), title="Hostile")
    humanity.add_raw_shift(
        {
            **shift,
            "start_date": {**shift["start_date"], "timestamp": hostile, "iso8601": hostile},
            "start_timestamp": hostile,
        }
    )
    began = time.perf_counter()
    with pytest.raises(humanity_plugin.UnreadableItem):
        humanity_plugin._shift(humanity.shifts["s-hostile"], {}, humanity_emulator.EMPLOYEE_ID)
    assert time.perf_counter() - began < 0.5

    response, _ = post_connect_form(Client(), alice.human, **good_form(humanity))
    run = connection_sync(connection_id=response.json()["connection"]["id"], http=ProviderHttp())
    assert run is not None and run.outcome == SyncOutcome.PARTIAL, run and run.error
    assert run.counts["shifts"]["unreadable"] == 1
    assert any("start_date.timestamp" in reason for reason in run.unreadable["shifts"])
    stored = Record.objects.filter(connection_id=run.connection_id, type="shifts").values_list("external_id", flat=True)
    assert {"s-past", "s-soon"} <= set(stored) and "s-hostile" not in stored
