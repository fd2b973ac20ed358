"""CONTRACT §2: the token exchange, its legacy v1 endpoints, and their rate limits."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connection as db_connection
from django.test import Client
from django.utils import timezone

from connect import ratelimit
from connect.models import AuditEntry, Human, RateLimitBucket, Token, TokenKind
from tests.conftest import Persona
from tests.factories import make_connection
from tests.live import start_stack, stop_stack

ENVELOPE = {"statusCode", "error", "message", "requestId"}


def post(client: Client, path: str, body: Any, **extra: Any) -> Any:
    return client.post(path, json.dumps(body), content_type="application/json", **extra)


def exchange(persona: Persona, kind: str, **fields: str) -> Any:
    body = {"client_id": persona.app.application.client_id, "client_secret": persona.app.client_secret, "type": kind}
    body.setdefault("client_user_id", persona.human.client_user_id) if kind != "refresh" else None
    body.update(fields)
    return post(Client(), "/v1/connect/token", body)


def access_pair(persona: Persona) -> dict[str, Any]:
    make_connection(persona.human)
    answer = exchange(persona, "access")
    assert answer.status_code == 200, answer.content
    return dict(answer.json())


def data_api(access_token: str) -> int:
    return int(Client().get("/v1/human/activities", HTTP_AUTHORIZATION=f"Bearer {access_token}").status_code)


# --- session, id, access -------------------------------------------------------------------


def test_it_creates_a_human_on_the_first_session_exchange_only(alice: Persona) -> None:
    first = exchange(alice, "session", client_user_id="new-user", client_user_email="new@example.com")
    again = exchange(alice, "session", client_user_id="new-user", client_user_email="renamed@example.com")

    assert first.status_code == again.status_code == 200
    body = first.json()
    assert set(body) == {"session_token", "expires_in", "human_id"} and body["expires_in"] == 3600
    assert again.json()["human_id"] == body["human_id"] and again.json()["session_token"] != body["session_token"]
    human = Human.objects.get(pk=body["human_id"])
    assert human.email == "renamed@example.com" and human.application == alice.app.application
    hashes = list(Token.objects.filter(human=human, kind=TokenKind.SESSION).values_list("token_hash", flat=True))
    assert len(hashes) == 2 and body["session_token"] not in hashes  # only hashes are kept
    connect = Client().get("/connect/", {"token": body["session_token"]})
    assert b'"status": ""' in connect.content


def test_it_gives_id_tokens_to_existing_humans_only(alice: Persona) -> None:
    answer = exchange(alice, "id")
    assert answer.status_code == 200
    assert set(answer.json()) == {"id_token", "id_token_expires_in", "human_id"}
    assert answer.json()["human_id"] == alice.human.pk

    unknown = exchange(alice, "id", client_user_id="nobody")
    assert unknown.status_code == 404 and set(unknown.json()) == ENVELOPE


def test_it_gives_access_tokens_only_after_a_connection(alice: Persona) -> None:
    before = exchange(alice, "access")
    assert before.status_code == 404 and "not connected" in before.json()["message"]

    body = access_pair(alice)
    assert set(body) == {"access_token", "expires_in", "token_type", "refresh_token", "human_id"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 86400
    assert data_api(body["access_token"]) == 200
    assert access_pair(alice)["access_token"] != body["access_token"]  # asking again mints a new one


def test_it_audits_every_exchange_without_its_secrets(alice: Persona) -> None:
    pair = access_pair(alice)
    refreshed = exchange(alice, "refresh", refresh_token=pair["refresh_token"]).json()
    session = exchange(alice, "session", client_user_email="a@example.com").json()

    rows = AuditEntry.objects.filter(action="token.exchange", application=alice.app.application)
    assert Counter(r.details["type"] for r in rows) == {"access": 1, "refresh": 1, "session": 1}
    assert all(r.actor == "app_server" and r.ip == "127.0.0.1" and r.human_id == alice.human.pk for r in rows)
    dump = json.dumps(list(AuditEntry.objects.values("details")))
    for secret in (alice.app.client_secret, pair["access_token"], pair["refresh_token"], refreshed["refresh_token"]):
        assert secret not in dump
    assert session["session_token"] not in dump


# --- refresh ---------------------------------------------------------------------------------


def test_it_rotates_refresh_tokens(alice: Persona) -> None:
    pair = access_pair(alice)
    renewed = exchange(alice, "refresh", refresh_token=pair["refresh_token"])

    assert renewed.status_code == 200
    body = renewed.json()
    assert body["refresh_token"] != pair["refresh_token"] and body["access_token"] != pair["access_token"]
    assert data_api(body["access_token"]) == 200
    spent = exchange(alice, "refresh", refresh_token=pair["refresh_token"])
    assert spent.status_code == 401 and set(spent.json()) == ENVELOPE


def test_it_revokes_the_chain_when_a_spent_refresh_token_comes_back(alice: Persona) -> None:
    pair = access_pair(alice)
    second = exchange(alice, "refresh", refresh_token=pair["refresh_token"]).json()
    third = exchange(alice, "refresh", refresh_token=second["refresh_token"]).json()

    assert exchange(alice, "refresh", refresh_token=pair["refresh_token"]).status_code == 401
    # The newest refresh token of the chain (maybe the thief's) stops working as well.
    assert exchange(alice, "refresh", refresh_token=third["refresh_token"]).status_code == 401
    # ...and so do the access tokens the chain minted.
    assert data_api(third["access_token"]) == 401 and data_api(second["access_token"]) == 401
    assert AuditEntry.objects.filter(action="token.refresh_reused", human_id=alice.human.pk).exists()
    # Another chain of the same Human is untouched.
    other = access_pair(alice)
    assert data_api(other["access_token"]) == 200
    assert exchange(alice, "refresh", refresh_token=other["refresh_token"]).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_it_lets_exactly_one_of_concurrent_refreshes_win(alice: Persona) -> None:
    pair = access_pair(alice)
    barrier = threading.Barrier(6)

    def attempt(_: int) -> int:
        try:
            barrier.wait(timeout=10)
            return int(exchange(alice, "refresh", refresh_token=pair["refresh_token"]).status_code)
        finally:
            db_connection.close()

    with ThreadPoolExecutor(6) as pool:
        statuses = Counter(pool.map(attempt, range(6)))
    assert statuses == {200: 1, 401: 5}
    live = Token.objects.filter(human=alice.human, kind=TokenKind.REFRESH).live()
    assert live.count() <= 1  # the winner's new token, unless a loser's reuse revoked the chain


def test_it_never_accepts_a_token_of_another_application(alice: Persona, charlie: Persona) -> None:
    pair = access_pair(alice)
    as_charlie = exchange(charlie, "refresh", refresh_token=pair["refresh_token"])
    assert as_charlie.status_code == 401
    # Alice's token is still hers to use: Charlie's attempt did not spend it.
    assert exchange(alice, "refresh", refresh_token=pair["refresh_token"]).status_code == 200

    session = exchange(alice, "session", client_user_email="a@example.com").json()
    legacy = post(
        Client(),
        "/v1/connect/tokens",
        {
            "humanId": alice.human.pk,
            "clientId": charlie.app.application.client_id,
            "clientSecret": charlie.app.client_secret,
            "sessionToken": session["session_token"],
        },
    )
    assert legacy.status_code == 401
    public = post(
        Client(),
        "/v1/connect/publictokens",
        {
            "humanId": alice.human.pk,
            "clientId": charlie.app.application.client_id,
            "clientSecret": charlie.app.client_secret,
        },
    )
    assert public.status_code == 404


# --- credentials and bad input --------------------------------------------------------------


@pytest.mark.parametrize("case", ["wrong-secret", "unknown-client", "secret-of-another-app"])
def test_it_refuses_wrong_credentials(alice: Persona, charlie: Persona, case: str) -> None:
    body = {
        "client_id": alice.app.application.client_id,
        "client_secret": {"wrong-secret": "nope", "secret-of-another-app": charlie.app.client_secret}.get(
            case, alice.app.client_secret
        ),
        "client_user_id": "u1",
        "client_user_email": "u1@example.com",
        "type": "session",
    }
    if case == "unknown-client":
        body["client_id"] = "f" * 40
    answer = post(Client(), "/v1/connect/token", body)
    assert answer.status_code == 401 and answer.json()["message"] == "Invalid client credentials"
    assert not Human.objects.filter(client_user_id="u1").exists()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
        (b"null", "application/json"),
        (b"{not json", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b'{"client_id": {"a": 1}, "client_secret": "s", "type": "session"}', "application/json"),
        (b'{"client_id": ["a"], "client_secret": "s", "type": "session"}', "application/json"),
        (b'{"client_id": "a", "client_secret": true, "type": "session"}', "application/json"),
        (b'{"client_id": "a", "client_secret": "s", "type": "bogus", "client_user_id": "u"}', "application/json"),
        (b'{"client_id": "a", "client_secret": "s", "type": "session", "client_user_id": "u"}', "application/json"),
        (
            b'{"client_id": "a", "client_secret": "s", "type": "session", "client_user_id": "u\\u0000", '
            b'"client_user_email": "u@example.com"}',
            "application/json",
        ),
        (
            json.dumps({"client_id": "a" * 5000, "client_secret": "s", "type": "id", "client_user_id": "u"}).encode(),
            "application/json",
        ),
        (b"client_id=a&type=session", "application/x-www-form-urlencoded"),
        (b"<xml/>", "application/xml"),
    ],
)
def test_it_answers_bad_input_with_a_clear_4xx(alice: Persona, body: bytes, content_type: str) -> None:
    answer = Client().post("/v1/connect/token", body, content_type=content_type)
    assert 400 <= answer.status_code < 500
    assert set(answer.json()) >= ENVELOPE and answer.json()["message"]
    assert answer["X-Request-Id"]


def test_it_refuses_a_huge_body_with_a_400(alice: Persona) -> None:
    body = json.dumps({"client_id": "a", "client_secret": "x" * 3_000_000, "type": "session"})
    for path in ("/v1/connect/token", "/v1/connect/tokens", "/v1/connect/publictokens"):
        answer = Client().post(path, body, content_type="application/json")
        assert answer.status_code == 400 and set(answer.json()) >= ENVELOPE


def test_it_takes_form_encoded_bodies(alice: Persona) -> None:
    answer = Client().post(
        "/v1/connect/token",
        {
            "client_id": alice.app.application.client_id,
            "client_secret": alice.app.client_secret,
            "type": "id",
            "client_user_id": alice.human.client_user_id,
        },
    )
    assert answer.status_code == 200 and answer.json()["human_id"] == alice.human.pk


# --- legacy v1 ---------------------------------------------------------------------------------


def legacy(persona: Persona, session_token: str, **changes: str) -> Any:
    body = {
        "humanId": persona.human.pk,
        "clientId": persona.app.application.client_id,
        "clientSecret": persona.app.client_secret,
        "sessionToken": session_token,
        **changes,
    }
    return post(Client(), "/v1/connect/tokens", body)


def public_tokens(persona: Persona, **changes: str) -> Any:
    body = {
        "humanId": persona.human.pk,
        "clientId": persona.app.application.client_id,
        "clientSecret": persona.app.client_secret,
        **changes,
    }
    return post(Client(), "/v1/connect/publictokens", body)


def test_it_exchanges_a_session_token_the_v1_way(alice: Persona) -> None:
    make_connection(alice.human)
    session = exchange(alice, "session", client_user_email="a@example.com").json()["session_token"]
    answer = legacy(alice, session)

    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"humanId", "accessToken", "publicToken", "clientId", "clientUserId"}
    assert body["humanId"] == alice.human.pk and body["clientId"] == alice.app.application.client_id
    assert body["clientUserId"] == alice.human.client_user_id
    assert data_api(body["accessToken"]) == 200
    # The public token reopens Connect for this Human (edit mode).
    page = Client().get("/connect/", {"token": body["publicToken"], "mode": "edit"})
    assert b'"status": ""' in page.content and b"Demo" in page.content
    assert AuditEntry.objects.filter(action="token.exchange", details__type="legacy").count() == 1


@pytest.mark.parametrize("case", ["wrong-secret", "other-human", "expired", "public-token", "garbage", "not-connected"])
def test_it_refuses_a_bad_v1_exchange(alice: Persona, case: str) -> None:
    if case != "not-connected":
        make_connection(alice.human)
    token, value = Token.mint(
        kind=TokenKind.PUBLIC if case == "public-token" else TokenKind.SESSION, human=alice.human, ttl=3600
    )
    changes: dict[str, str] = {}
    if case == "wrong-secret":
        changes["clientSecret"] = "nope"
    elif case == "other-human":
        changes["humanId"] = "0" * 24
    elif case == "expired":
        Token.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif case == "garbage":
        value = "garbage"
    answer = legacy(alice, value, **changes)
    assert answer.status_code == (404 if case == "not-connected" else 401)
    assert set(answer.json()) == ENVELOPE


def test_it_rotates_public_tokens(alice: Persona) -> None:
    first = public_tokens(alice)
    second = public_tokens(alice)

    assert first.status_code == second.status_code == 200
    assert set(first.json()) == {"humanId", "publicToken"} and first.json()["humanId"] == alice.human.pk
    old = Client().get("/connect/", {"token": first.json()["publicToken"]})
    new = Client().get("/connect/", {"token": second.json()["publicToken"]})
    assert b"SESSION_TOKEN_INVALID" in old.content and b'"status": ""' in new.content
    assert public_tokens(alice, clientSecret="nope").status_code == 401
    assert public_tokens(alice, humanId="nobody").status_code == 404
    for bad in ([], "x", {"humanId": 5}):
        answer = post(Client(), "/v1/connect/publictokens", bad)
        assert answer.status_code == 400 and set(answer.json()) >= ENVELOPE


def test_it_rotates_public_tokens_when_connect_adds_a_connection(alice: Persona) -> None:
    older = public_tokens(alice).json()["publicToken"]
    session = exchange(alice, "session", client_user_email="a@example.com").json()["session_token"]
    token = Token.find(session, (TokenKind.SESSION,))
    assert token is not None
    from connect.views import csrf_for

    form = {"token": session, "csrf": csrf_for(token), "username": "demouser", "password": "password"}
    assert Client().post("/connect/sources/demo/connect", form).status_code == 200
    assert b"SESSION_TOKEN_INVALID" in Client().get("/connect/", {"token": older}).content
    assert public_tokens(alice).status_code == 200  # how the app gets the new one


# --- rate limits ---------------------------------------------------------------------------------


def test_it_limits_token_requests_per_client(alice: Persona, settings: Any) -> None:
    settings.RATE_LIMIT_TOKEN_PER_CLIENT = 3
    settings.RATE_LIMIT_TOKEN_PER_IP = 100
    answers = [exchange(alice, "id") for _ in range(4)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    limited = answers[-1]
    assert set(limited.json()) == ENVELOPE and limited.json()["statusCode"] == 429
    assert 1 <= int(limited["Retry-After"]) <= settings.RATE_LIMIT_WINDOW
    # Other clients are not affected.
    other = post(
        Client(), "/v1/connect/token", {"client_id": "other", "client_secret": "x", "type": "id", "client_user_id": "u"}
    )
    assert other.status_code == 401


def test_it_cannot_be_dodged_by_padding_the_client_id_or_adding_a_decoy(alice: Persona, settings: Any) -> None:
    settings.RATE_LIMIT_TOKEN_FAILURES = 2  # wrong secrets from one address, per client
    settings.RATE_LIMIT_TOKEN_PER_IP = 100
    client_id, secret = alice.app.application.client_id, alice.app.client_secret
    padded = [
        post(
            Client(),
            "/v1/connect/token",
            {"client_id": " " * i + client_id, "client_secret": "wrong", "type": "id", "client_user_id": "u"},
        )
        for i in range(4)
    ]
    assert [a.status_code for a in padded] == [401, 401, 429, 429]
    legacy = [
        post(
            Client(),
            "/v1/connect/publictokens",
            {"clientId": f"{client_id} ", "client_id": f"decoy-{i}", "humanId": alice.human.pk, "clientSecret": secret},
        )
        for i in range(2)
    ]
    assert [a.status_code for a in legacy] == [429, 429]


def test_it_limits_token_requests_per_ip(alice: Persona, charlie: Persona, settings: Any) -> None:
    settings.RATE_LIMIT_TOKEN_PER_CLIENT = 100
    settings.RATE_LIMIT_TOKEN_PER_IP = 2
    assert exchange(alice, "id").status_code == 200
    assert exchange(charlie, "id").status_code == 200
    assert exchange(alice, "id").status_code == 429
    assert public_tokens(alice).status_code == 429
    elsewhere = Client(REMOTE_ADDR="10.1.2.3")
    body = {"client_id": alice.app.application.client_id, "client_secret": alice.app.client_secret, "type": "id"}
    assert (
        post(elsewhere, "/v1/connect/token", {**body, "client_user_id": alice.human.client_user_id}).status_code == 200
    )


def test_it_counts_windows_and_cleans_up_old_buckets(db: None, settings: Any) -> None:
    settings.RATE_LIMIT_WINDOW = 60
    limit = ratelimit.Limit("test", 2)
    start = 1_700_000_040  # a past window boundary (divisible by 60)
    assert [ratelimit.hit(limit, "k", now=start + i).allowed for i in range(3)] == [True, True, False]
    assert ratelimit.hit(limit, "k", now=start + 10).retry_after == 50
    assert ratelimit.hit(limit, "k", now=start + 60).allowed  # the next window
    assert RateLimitBucket.objects.count() == 2
    # Opening a bucket sweeps expired ones (these windows ended long ago).
    ratelimit.hit(limit, "fresh")
    assert RateLimitBucket.objects.count() == 1


def test_it_can_keep_its_counters_in_redis(db: None, settings: Any) -> None:
    settings.RATE_LIMIT_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    limit = ratelimit.Limit(f"test-redis-{os.getpid()}-{timezone.now().timestamp()}", 2)
    assert [ratelimit.hit(limit, "k").allowed for _ in range(3)][:2] == [True, True]
    assert not ratelimit.hit(limit, "k").allowed
    assert not RateLimitBucket.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_cannot_be_locked_out_by_anyone_who_knows_its_client_id(alice: Persona, tmp_path: Path) -> None:
    """On a running server behind one trusted proxy: junk secrets sent with the tenant's public
    client_id from a few addresses slow those addresses down, never the tenant."""
    # A day-long window: counts that restart at a minute's turn mid-test would double the budgets.
    limits = {
        "RATE_LIMIT_TOKEN_PER_CLIENT": "10",
        "RATE_LIMIT_TOKEN_FAILURES": "5",
        "TRUSTED_PROXIES": "1",
        "RATE_LIMIT_WINDOW": "86400",
    }
    stack = start_stack(tmp_path, {**limits, "RATE_LIMIT_TOKEN_PER_IP": "1000"}, worker=False)
    try:
        body = {
            "client_id": alice.app.application.client_id,
            "type": "id",
            "client_user_id": alice.human.client_user_id,
        }

        def attempt(secret: str, address: str) -> int:
            answer = requests.post(
                stack.url("/v1/connect/token"),
                json={**body, "client_secret": secret},
                headers={"X-Forwarded-For": address},
                timeout=10,
            )
            return answer.status_code

        attackers = ("203.0.113.7", "198.51.100.9", "192.0.2.44")
        junk = Counter(attempt(f"guess-{n}", attackers[n % 3]) for n in range(60))
        assert junk == {401: 15, 429: 45}  # five failures per address, then nothing more is tried
        tenant = [attempt(alice.app.client_secret, "198.18.0.1") for _ in range(11)]
        assert tenant == [200] * 10 + [429]  # the tenant's whole budget, its own
    finally:
        stop_stack(stack)


@pytest.mark.django_db(transaction=True)
def test_it_shares_limits_across_web_processes(alice: Persona, tmp_path: Path) -> None:
    stack = start_stack(
        tmp_path,
        {"RATE_LIMIT_TOKEN_PER_CLIENT": "10", "RATE_LIMIT_TOKEN_PER_IP": "1000", "RATE_LIMIT_WINDOW": "86400"},
        worker=False,
    )
    try:
        body = {
            "client_id": alice.app.application.client_id,
            "client_secret": alice.app.client_secret,
            "type": "id",
            "client_user_id": alice.human.client_user_id,
        }
        # New connections each time, spread over gunicorn's two workers.
        with ThreadPoolExecutor(4) as pool:
            statuses = Counter(
                pool.map(
                    lambda _: requests.post(stack.url("/v1/connect/token"), json=body, timeout=10).status_code,
                    range(16),
                )
            )
        assert statuses == {200: 10, 429: 6}
    finally:
        stop_stack(stack)
