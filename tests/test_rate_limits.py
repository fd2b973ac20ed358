"""CONTRACT §9: every API answers 429 with Retry-After and the error envelope when a limit is hit;
a limit counts per tenant, user, session or address, so nobody else is locked out; under the
limits nothing changes. Also the bounds on reads that would otherwise cost a pass over a whole
list per request. The token endpoint's own limits are in test_token_exchange."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from django.test import Client
from django.utils import timezone

from connect import ratelimit
from connect.models import AuditEntry, OAuthState, Token, TokenKind
from connect.views import csrf_for
from data_api import records
from data_api.models import ListCache
from sources.models import Connection, ConnectionStatus
from tests.app_client import app_call, basic
from tests.conftest import Persona
from tests.data_api_helpers import access_client, activity, store
from tests.emulators.humanity import CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME, HumanityEmulator
from tests.factories import make_connection, make_human
from tests.live import start_stack, stop_stack
from tests.test_connect_oauth import provider, start  # noqa: F401 - `provider` is a fixture

ROOT = Path(__file__).resolve().parent.parent
ENVELOPE = {"statusCode", "error", "message", "requestId"}
T0 = timezone.now().replace(microsecond=0) - timedelta(days=3)


@pytest.fixture(autouse=True)
def day_long_windows(settings: Any) -> None:
    """Counts that restart at a minute's (or an hour's) turn mid-test would double a budget."""
    settings.RATE_LIMIT_WINDOW = 86400
    settings.RATE_LIMIT_SLOW_WINDOW = 86400


def assert_limited(answer: Any, *, says: str = "") -> None:
    assert answer.status_code == 429, answer.content[:300]
    body = answer.json()
    assert set(body) == ENVELOPE and body["statusCode"] == 429 and body["error"] == "Too Many Requests"
    assert 1 <= int(answer["Retry-After"]) <= 86400
    assert f"Retry in {answer['Retry-After']} seconds" in body["message"] and says in body["message"]


def statuses(calls: Iterable[Any]) -> list[int]:
    return [call.status_code for call in calls]


# --- Data API ------------------------------------------------------------------------------------


def test_it_limits_the_data_api_per_user_and_no_one_else(alice: Persona, charlie: Persona, settings: Any) -> None:
    settings.RATE_LIMIT_DATA_PER_HUMAN = 3
    settings.RATE_LIMIT_DATA_PER_APP = 100
    reader = access_client(alice.human)
    answers = [reader.get("/v1/human/profile") for _ in range(4)]

    assert statuses(answers) == [200, 200, 200, 429]
    assert_limited(answers[-1], says="Data API requests for this user: at most 3 per day")
    # A browser may read the wait: the 429 is readable cross-origin like every Data API answer.
    assert "Retry-After" in answers[-1]["Access-Control-Expose-Headers"]
    assert access_client(make_human(alice.app, "alice-user-2")).get("/v1/human/profile").status_code == 200
    assert access_client(charlie.human).get("/v1/human/profile").status_code == 200
    # Another token of the same user shares the user's budget.
    assert access_client(alice.human).get("/v1/human/profile").status_code == 429


def test_it_limits_the_data_api_per_application_without_counting_refused_requests(
    alice: Persona, charlie: Persona, settings: Any
) -> None:
    settings.RATE_LIMIT_DATA_PER_HUMAN = 2
    settings.RATE_LIMIT_DATA_PER_APP = 5
    flooder, neighbour = access_client(alice.human), access_client(make_human(alice.app, "alice-user-2"))

    assert statuses(flooder.get("/v1/human/sources") for _ in range(6)) == [200, 200, 429, 429, 429, 429]
    # The four refused requests used none of the Application's budget: three are left.
    assert statuses(neighbour.get("/v1/human/sources") for _ in range(2)) == [200, 200]
    third = access_client(make_human(alice.app, "alice-user-3"))
    answers = [third.get("/v1/human/sources") for _ in range(2)]
    assert statuses(answers) == [200, 429]
    assert_limited(answers[-1], says="Data API requests for this application's users: at most 5 per day")
    assert access_client(charlie.human).get("/v1/human/sources").status_code == 200


def test_it_changes_nothing_under_the_limits(alice: Persona, settings: Any) -> None:
    store(make_connection(alice.human), [activity(n, T0 + timedelta(hours=n), 30, 100 * n) for n in range(5)])
    reader = access_client(alice.human)
    limited = reader.get("/v1/human/activities", {"limit": 2})
    settings.RATE_LIMIT_DATA_PER_HUMAN = settings.RATE_LIMIT_DATA_PER_APP = 0  # off
    unlimited = reader.get("/v1/human/activities", {"limit": 2})

    assert limited.status_code == unlimited.status_code == 200
    assert limited.json() == unlimited.json() and len(limited.json()) == 2
    assert limited["X-Total-Count"] == unlimited["X-Total-Count"] == "5"
    assert "Retry-After" not in limited and "X-Total-Count-Exact" not in limited


def test_it_counts_in_redis_too(alice: Persona, settings: Any) -> None:
    settings.RATE_LIMIT_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    # Counters of earlier runs (whose Applications had the same ids) are not this test's.
    store_ = redis.Redis.from_url(settings.RATE_LIMIT_REDIS_URL)
    for key in store_.scan_iter("hapi:rl:data-*"):
        store_.delete(key)
    settings.RATE_LIMIT_DATA_PER_HUMAN = 2
    settings.RATE_LIMIT_DATA_PER_APP = 3
    flooder = access_client(alice.human)
    assert statuses(flooder.get("/v1/human/profile") for _ in range(4)) == [200, 200, 429, 429]
    neighbour = access_client(make_human(alice.app, "alice-user-2"))
    assert statuses(neighbour.get("/v1/human/profile") for _ in range(2)) == [200, 429]


# --- Application API and syncs asked for ---------------------------------------------------------


def test_it_limits_the_application_api_per_application_with_the_right_key_only(
    client: Client, alice: Persona, charlie: Persona, settings: Any
) -> None:
    settings.RATE_LIMIT_APP_API_PER_APP = 3
    # Anyone knows a client_id: wrong App Keys never use up the tenant's budget.
    assert {app_call(client, alice, "GET", "users", key="not-the-key").status_code for _ in range(5)} == {401}
    answers = [app_call(client, alice, "GET", "users") for _ in range(4)]

    assert statuses(answers) == [200, 200, 200, 429]
    assert_limited(answers[-1], says="Application API requests for this application: at most 3 per day")
    assert app_call(client, charlie, "GET", "users").status_code == 200


def test_it_limits_syncs_asked_for_per_user_and_application(
    client: Client, alice: Persona, charlie: Persona, settings: Any
) -> None:
    settings.RATE_LIMIT_SYNC_PER_HUMAN = 2
    settings.RATE_LIMIT_SYNC_PER_APP = 3
    second = make_human(alice.app, "alice-user-2")
    for human in (alice.human, second, charlie.human):
        make_connection(human)

    def sync(persona: Persona, human_id: str) -> Any:
        return app_call(client, persona, "POST", f"users/{human_id}/sync")

    first = [sync(alice, alice.human.pk) for _ in range(3)]
    assert statuses(first) == [202, 202, 429]
    assert_limited(first[-1], says="sync requests for this user: at most 2 per day")
    answers = [sync(alice, second.pk) for _ in range(2)]
    assert statuses(answers) == [202, 429]
    assert_limited(answers[-1], says="sync requests for this application: at most 3 per day")
    assert sync(charlie, charlie.human.pk).status_code == 202
    # Refused requests asked for nothing: one resync audited per accepted request.
    resyncs = Counter(AuditEntry.objects.filter(action="connection.resync").values_list("human_id", flat=True))
    assert resyncs == {alice.human.pk: 2, second.pk: 1, charlie.human.pk: 1}


# --- Connect -------------------------------------------------------------------------------------


def session(persona: Persona) -> tuple[Token, str]:
    return Token.mint(kind=TokenKind.SESSION, human=persona.human, ttl=3600)


def sign_in(humanity: HumanityEmulator, token: Token, value: str, username: str, password: str, **extra: Any) -> Any:
    form = {
        "token": value,
        "csrf": csrf_for(token),
        "instance_url": humanity.url,
        "username": username,
        "password": password,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    return Client(**extra).post("/connect/sources/humanity/connect", form)


def test_it_stops_guessing_a_password_through_connect(
    alice: Persona, charlie: Persona, humanity: HumanityEmulator, settings: Any
) -> None:
    settings.RATE_LIMIT_CONNECT_FAILURES = 2
    token, value = session(alice)
    guesses = [sign_in(humanity, token, value, USERNAME, f"guess-{n}") for n in range(4)]

    assert statuses(guesses) == [400, 400, 429, 429]
    assert_limited(guesses[-1], says="failed sign-ins for this username: at most 2 per day")
    assert humanity.calls["/oauth2/token.php"] == 2  # the refused guesses never reached Humanity
    # Case and spaces don't make a new username; another username is another count.
    assert sign_in(humanity, token, value, f" {USERNAME.upper()} ", "guess").status_code == 429
    assert sign_in(humanity, token, value, "someone-else", "guess").status_code == 400
    # The user, in a new Connect session, and another tenant's user are not locked out.
    fresh, fresh_value = session(alice)
    assert sign_in(humanity, fresh, fresh_value, USERNAME, PASSWORD).status_code == 200
    other, other_value = session(charlie)
    assert sign_in(humanity, other, other_value, USERNAME, PASSWORD).status_code == 200


def test_it_limits_connect_per_session_and_per_address(
    alice: Persona, charlie: Persona, humanity: HumanityEmulator, settings: Any
) -> None:
    settings.RATE_LIMIT_CONNECT_PER_SESSION = 3
    token, value = session(alice)
    # Spraying one password over usernames: the session's own limit stops it.
    sprayed = [sign_in(humanity, token, value, f"user-{n}", "Summer2026!") for n in range(5)]
    assert statuses(sprayed) == [400, 400, 400, 429, 429]
    assert_limited(sprayed[-1], says="requests in this Connect session: at most 3 per day")
    assert humanity.calls["/oauth2/token.php"] == 3

    settings.RATE_LIMIT_CONNECT_PER_SESSION = 100
    settings.RATE_LIMIT_CONNECT_PER_IP = 6  # 5 used above
    other, other_value = session(charlie)
    assert sign_in(humanity, other, other_value, "user-9", "x").status_code == 400
    # From this address, even a request without a valid session is refused now...
    bad = Client().post("/connect/sources/humanity/connect", {"token": "nope", "csrf": "x"})
    assert_limited(bad, says="Connect requests from this address")
    # ...while another address is not.
    elsewhere = sign_in(humanity, other, other_value, USERNAME, PASSWORD, REMOTE_ADDR="10.9.8.7")
    assert elsewhere.status_code == 200


def test_it_stops_a_reconnect_loop_from_flooding_webhooks_and_syncs(
    alice: Persona, charlie: Persona, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.RATE_LIMIT_CONNECT_CHANGES = 3
    token, value = session(alice)
    login = {"token": value, "csrf": csrf_for(token), "username": "demouser", "password": "password"}

    with django_capture_on_commit_callbacks() as scheduled:
        first = Client().post("/connect/sources/demo/connect", login)
        connection_id = first.json()["connection"]["id"]
        off = Client().post(f"/connect/connections/{connection_id}/disconnect", login)
        again = Client().post("/connect/sources/demo/connect", login)
        off_again = Client().post(f"/connect/connections/{connection_id}/disconnect", login)
        loop = Client().post("/connect/sources/demo/connect", login)

    assert statuses([first, off, again, off_again]) == [200, 200, 200, 429]
    assert_limited(off_again, says="connections made or removed for this user: at most 3 per day")
    assert_limited(loop)
    assert Connection.objects.get(pk=connection_id).status == ConnectionStatus.ACTIVE
    # Two connects (a sync and a webhook each) and one disconnect (a webhook); nothing after.
    assert len(scheduled) == 5
    theirs, their_value = session(charlie)
    form = {"token": their_value, "csrf": csrf_for(theirs), "username": "demouser", "password": "password"}
    assert Client().post("/connect/sources/demo/connect", form).status_code == 200


@pytest.mark.usefixtures("provider")
def test_it_limits_sign_in_starts_per_session(alice: Persona, charlie: Persona, settings: Any) -> None:
    settings.RATE_LIMIT_CONNECT_PER_SESSION = 2
    token, value = session(alice)
    browser = Client()
    answers = [start(browser, token, value) for _ in range(3)]

    assert statuses(answers) == [302, 302, 429]
    refused = answers[-1]
    assert 1 <= int(refused["Retry-After"]) <= 86400
    assert b"requests in this Connect session: at most 2 per day" in refused.content  # a page, for the popup
    assert OAuthState.objects.filter(connect_token=token).count() == 2
    assert AuditEntry.objects.filter(action="oauth.started", human_id=alice.human.pk).count() == 2
    theirs, their_value = session(charlie)
    assert start(Client(), theirs, their_value).status_code == 302


# --- bounded reads ---------------------------------------------------------------------------


def test_it_reads_a_new_time_filter_without_a_pass_and_bounds_its_count(
    alice: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "COUNT_AHEAD", 5)
    store(make_connection(alice.human), [activity(n, T0 + timedelta(hours=n), 30, 100 * n) for n in range(30)])
    reader = access_client(alice.human)
    since = (T0 - timedelta(days=1)).strftime("%Y%m%dT%H%M%SZ")
    everything = reader.get("/v1/human/activities", {"limit": 30}).json()
    ListCache.objects.all().delete()

    first = reader.get("/v1/human/activities", {"updated_since": since, "limit": 10})
    assert first.json() == everything[:10]
    # Counted 6 rows past the page (one more than COUNT_AHEAD): a lower bound, said so.
    assert first["X-Total-Count"] == "16" and first["X-Total-Count-Exact"] == "false"
    assert 'rel="next"' in first["Link"] and 'rel="last"' not in first["Link"]
    assert not ListCache.objects.exists()  # nothing cached, no pass over the list
    last = reader.get("/v1/human/activities", {"updated_since": since, "limit": 10, "offset": 20})
    assert last.json() == everything[20:] and last["X-Total-Count"] == "30" and "X-Total-Count-Exact" not in last
    past = reader.get("/v1/human/activities", {"updated_since": since, "limit": 10, "offset": 40})
    assert past.json() == [] and past["X-Total-Count"] == "30"
    later = (timezone.now() + timedelta(minutes=1)).strftime("%Y%m%dT%H%M%SZ")
    none = reader.get("/v1/human/activities", {"updated_since": later})
    assert none.json() == [] and none["X-Total-Count"] == "0"


def test_it_limits_passes_for_deep_pages_of_new_time_filters(alice: Persona, charlie: Persona, settings: Any) -> None:
    settings.RATE_LIMIT_DATA_LIST_PASSES = 2
    for persona in (alice, charlie):
        store(make_connection(persona.human), [activity(n, T0 + timedelta(hours=n), 30, 10) for n in range(3)])
    reader = access_client(alice.human)

    def deep(minute: int, client: Client = reader) -> Any:
        since = (T0 - timedelta(days=2, minutes=minute)).strftime("%Y%m%dT%H%M%SZ")
        return client.get("/v1/human/activities", {"updated_since": since, "offset": 250})

    answers = [deep(n) for n in range(3)]
    assert statuses(answers) == [200, 200, 429]
    assert answers[0]["X-Total-Count"] == "3"  # deep pages are cached: exact
    assert_limited(answers[-1], says="time-filtered lists computed afresh for this user: at most 2 per day")
    assert deep(0).status_code == 200  # a filter already computed costs no pass
    assert reader.get("/v1/human/activities", {"offset": 250}).status_code == 200  # nor an unfiltered list
    assert deep(7, access_client(charlie.human)).status_code == 200


def test_it_counts_application_api_pages_no_further_than_it_must(
    client: Client, alice: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "COUNT_AHEAD", 3)
    for n in range(9):
        make_human(alice.app, f"alice-user-{n + 2}")  # ten in all

    def users(**query: Any) -> Any:
        return app_call(client, alice, "GET", "users", data=query)

    first = users(limit=2)
    assert len(first.json()) == 2 and first["X-Total-Count"] == "6" and first["X-Total-Count-Exact"] == "false"
    near_end = users(limit=2, offset=6)
    assert near_end["X-Total-Count"] == "10" and "X-Total-Count-Exact" not in near_end
    assert 'rel="last"' in near_end["Link"]
    assert users(limit=4, offset=8)["X-Total-Count"] == "10"
    assert users(limit=2, offset=30)["X-Total-Count"] == "10"


# --- settings ------------------------------------------------------------------------------------


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("RATE_LIMIT_REDIS_URL", "cache.internal:6379", "RATE_LIMIT_REDIS_URL must be empty or a redis://"),
        ("RATE_LIMIT_SYNC_PER_APP", "-1", "RATE_LIMIT_SYNC_PER_APP must be at least 0"),
        ("RATE_LIMIT_DATA_PER_HUMAN", "lots", "RATE_LIMIT_DATA_PER_HUMAN must be an integer"),
    ],
)
def test_it_names_a_bad_rate_limit_setting_at_startup(name: str, value: str, says: str) -> None:
    checked = run(["manage.py", "check"], **{name: value})
    assert checked.returncode != 0 and says in checked.stderr
    served = run(["-c", "import humanapi_project.wsgi"], **{name: value})
    assert served.returncode != 0 and says in served.stderr


def test_it_checks_every_limit_setting(settings: Any) -> None:
    assert ratelimit.check_rate_limit_settings() == []
    settings.RATE_LIMIT_CONNECT_FAILURES = -2
    settings.RATE_LIMIT_SLOW_WINDOW = 0
    settings.RATE_LIMIT_REDIS_URL = "redis-host:6379"
    found = [str(m.msg) for m in ratelimit.check_rate_limit_settings()]
    assert found == [
        "RATE_LIMIT_CONNECT_FAILURES must be a whole number of at least 0, got -2",
        "RATE_LIMIT_SLOW_WINDOW must be a whole number of at least 1, got 0",
        "RATE_LIMIT_REDIS_URL must be empty or a redis://, rediss:// or unix:// URL, got 'redis-host:6379'",
    ]
    settings.RATE_LIMIT_REDIS_URL = "http://:hunter2@cache:6379/0"  # a password never shows
    assert "hunter2" not in str(ratelimit.check_rate_limit_settings()[-1].msg)


# --- over real HTTP --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_answers_429_on_a_running_server(alice: Persona, charlie: Persona, tmp_path: Path) -> None:
    """gunicorn with two processes: the limits are shared by both, and per tenant."""
    make_connection(alice.human)
    _, alice_token = Token.mint(kind=TokenKind.ACCESS, human=alice.human, ttl=3600)
    _, charlie_token = Token.mint(kind=TokenKind.ACCESS, human=charlie.human, ttl=3600)
    limits = {
        "RATE_LIMIT_WINDOW": "86400",
        "RATE_LIMIT_SLOW_WINDOW": "86400",
        "RATE_LIMIT_DATA_PER_HUMAN": "4",
        "RATE_LIMIT_APP_API_PER_APP": "6",
        "RATE_LIMIT_SYNC_PER_HUMAN": "1",
    }
    stack = start_stack(tmp_path, limits, worker=False)
    try:

        def data(token: str) -> requests.Response:
            return requests.get(
                stack.url("/v1/human/profile"), headers={"Authorization": f"Bearer {token}"}, timeout=10
            )

        def app(persona: Persona, method: str, path: str) -> requests.Response:
            url = stack.url(f"/v1/apps/{persona.app.application.client_id}/{path}")
            return requests.request(method, url, headers={"Authorization": basic(persona.app.app_key)}, timeout=10)

        answers = [data(alice_token) for _ in range(6)]
        assert statuses(answers) == [200] * 4 + [429] * 2
        refused = answers[-1]
        assert set(refused.json()) == ENVELOPE and 1 <= int(refused.headers["Retry-After"]) <= 86400
        assert refused.headers["X-Request-Id"] == refused.json()["requestId"]
        assert data(charlie_token).status_code == 200

        syncs = [app(alice, "POST", f"users/{alice.human.pk}/sync") for _ in range(2)]
        assert statuses(syncs) == [202, 429]
        assert "Retry in" in syncs[-1].json()["message"] and syncs[-1].headers["Retry-After"]
        listed = [app(alice, "GET", "users") for _ in range(5)]  # 2 used by the syncs
        assert statuses(listed) == [200] * 4 + [429]
        assert app(charlie, "GET", "users").status_code == 200
    finally:
        stop_stack(stack)
