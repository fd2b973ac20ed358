"""Every secret can be replaced without deleting the Application, and no key change loses a
stored credential: an Application's client secret, App Key and webhook secret (command and
admin action), SECRET_KEY with SECRET_KEY_FALLBACKS, FIELD_ENCRYPTION_KEYS, and rotate_keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.test import Client

from connect.models import Application, AuditEntry, Token, TokenKind
from data_api.models import Record
from data_api.notifications import deliver, notify_connection_event
from humanapi_project.crypto import DecryptionError
from sources.models import Connection
from tests.app_client import basic
from tests.conftest import Persona
from tests.emulators.humanity import HumanityEmulator
from tests.emulators.webhook_receiver import running_receiver
from tests.factories import make_application, make_connection, make_human
from tests.humanity_helpers import connect_page_state, good_form, humanity_settings, post_connect_form, seed
from tests.live import ROOT, database_url


def token_exchange(persona: Persona, client_secret: str) -> int:
    body = {
        "client_id": persona.app.application.client_id,
        "client_secret": client_secret,
        "type": "session",
        "client_user_id": persona.human.client_user_id,
        "client_user_email": persona.human.email,
    }
    return Client().post("/v1/connect/token", body, content_type="application/json").status_code


def app_api(persona: Persona, app_key: str) -> int:
    url = f"/v1/apps/{persona.app.application.client_id}/users"
    return Client().get(url, HTTP_AUTHORIZATION=basic(app_key)).status_code


def rotate(persona: Persona, what: str) -> dict[str, str]:
    out = StringIO()
    call_command("rotate_secret", persona.app.application.client_id, "--what", what, stdout=out)
    printed: dict[str, str] = json.loads(out.getvalue())
    return printed


def rotations(persona: Persona) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(application=persona.app.application, action="application.secret_rotated"))


# --- an Application's own secrets ------------------------------------------------------------


def test_a_new_client_secret_works_at_once_and_the_old_one_never_again(alice: Persona, charlie: Persona) -> None:
    assert token_exchange(alice, alice.app.client_secret) == 200
    printed = rotate(alice, "client-secret")

    assert set(printed) == {"client_id", "client_secret"} and printed["client_id"] == alice.app.application.client_id
    assert token_exchange(alice, alice.app.client_secret) == 401
    assert token_exchange(alice, printed["client_secret"]) == 200
    assert token_exchange(charlie, charlie.app.client_secret) == 200  # another tenant is untouched
    stored = Application.objects.get(pk=alice.app.application.pk)
    assert printed["client_secret"] not in stored.client_secret_hash and stored.check_client_secret(
        printed["client_secret"]
    )
    [entry] = rotations(alice)
    assert entry.actor == "operator" and entry.details == {"rotated": "client-secret"}
    assert printed["client_secret"] not in json.dumps(entry.details)


def test_a_new_app_key_opens_the_application_api_and_the_old_one_is_refused(alice: Persona) -> None:
    assert app_api(alice, alice.app.app_key) == 200
    printed = rotate(alice, "app-key")

    assert app_api(alice, alice.app.app_key) == 401
    assert app_api(alice, printed["app_key"]) == 200
    assert token_exchange(alice, alice.app.client_secret) == 200  # only the App Key changed
    assert [e.details for e in rotations(alice)] == [{"rotated": "app-key"}]


def test_a_new_webhook_secret_signs_every_delivery_from_then_on(alice: Persona) -> None:
    with running_receiver(alice.app.webhook_secret) as receiver:
        Application.objects.filter(pk=alice.app.application.pk).update(notify_url=receiver.url)
        connection = Connection.objects.select_related("human__application").get(pk=make_connection(alice.human).pk)
        before = notify_connection_event(connection, "source.connected")
        printed = rotate(alice, "webhook-secret")
        new_secret = printed["webhook_secret"]
        assert new_secret.startswith("whsec_") and new_secret != alice.app.webhook_secret
        # Sent after the rotation, even if raised before: a receiver still on the old secret refuses it.
        assert before is not None and deliver(before.pk) is False
        receiver.secret = new_secret
        after = notify_connection_event(connection, "source.disconnected")
        assert after is not None and deliver(after.pk) is True
    assert [d.signature_valid for d in receiver.deliveries] == [False, True]
    assert Application.objects.get(pk=alice.app.application.pk).webhook_secret == new_secret
    assert new_secret not in json.dumps([e.details for e in rotations(alice)])


def test_it_names_an_unknown_application_or_secret(alice: Persona) -> None:
    with pytest.raises(CommandError, match="No application with client_id"):
        call_command("rotate_secret", "no-such-client", "--what", "client-secret", stdout=StringIO())
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("rotate_secret", alice.app.application.client_id, "--what", "password", stdout=StringIO())
    assert token_exchange(alice, alice.app.client_secret) == 200 and not rotations(alice)


def test_the_admin_asks_first_then_shows_each_new_secret_once(
    operator: Client, alice: Persona, charlie: Persona
) -> None:
    selected = {"action": "rotate_client_secret", "_selected_action": [alice.app.application.pk]}
    asked = operator.post("/admin/connect/application/", selected)
    assert asked.status_code == 200 and b"stops working at once" in asked.content
    assert token_exchange(alice, alice.app.client_secret) == 200 and not rotations(alice)  # nothing yet

    done = operator.post("/admin/connect/application/", {**selected, "confirm": "yes"}, follow=True)
    assert done.status_code == 200 and "no-store" in done["Cache-Control"]
    html = done.content.decode()
    marker = f'<code class="rotated-secret" data-client-id="{alice.app.application.client_id}">'
    new_secret = html.split(marker, 1)[1].split("<", 1)[0]
    assert token_exchange(alice, new_secret) == 200 and token_exchange(alice, alice.app.client_secret) == 401
    assert token_exchange(charlie, charlie.app.client_secret) == 200
    [entry] = rotations(alice)
    assert entry.details == {"rotated": "client-secret", "operator": "ops"}
    assert not any(new_secret in str(c.value) for c in done.cookies.values())  # not parked in a message cookie
    # Shown once: the change page and the list show neither the secret nor its hash.
    for page in ("/admin/connect/application/", f"/admin/connect/application/{alice.app.application.pk}/change/"):
        body = operator.get(page).content.decode()
        assert (
            new_secret not in body
            and Application.objects.get(pk=alice.app.application.pk).client_secret_hash not in body
        )


def test_reloading_the_page_of_a_new_secret_shows_it_no_more_and_replaces_nothing(
    operator: Client, alice: Persona
) -> None:
    """POST/redirect/GET: the action answers with a redirect; the page it leads to shows the new
    value once and forgets it, so a reload neither shows it again nor rotates again."""
    selected = {"action": "rotate_client_secret", "_selected_action": [alice.app.application.pk], "confirm": "yes"}
    done = operator.post("/admin/connect/application/", selected)
    assert done.status_code == 302 and "no-store" in done["Cache-Control"]
    assert alice.app.client_secret.encode() not in done.content and not rotations(alice)[1:]
    stored = Application.objects.get(pk=alice.app.application.pk).client_secret_hash
    kept = json.dumps(dict(operator.session.items()))  # the operator's session, as the database holds it

    shown = operator.get(done["Location"])
    marker = f'<code class="rotated-secret" data-client-id="{alice.app.application.client_id}">'
    assert shown.status_code == 200 and "no-store" in shown["Cache-Control"] and marker in shown.content.decode()
    new_secret = shown.content.decode().split(marker, 1)[1].split("<", 1)[0]
    assert new_secret and token_exchange(alice, new_secret) == 200
    assert new_secret not in kept  # it waited in the session encrypted

    for _ in range(2):  # reloads
        again = operator.get(done["Location"])
        assert again.status_code == 200 and "no-store" in again["Cache-Control"]
        assert b"shown once already" in again.content and new_secret.encode() not in again.content
    assert Application.objects.get(pk=alice.app.application.pk).client_secret_hash == stored
    assert len(rotations(alice)) == 1 and token_exchange(alice, new_secret) == 200
    assert operator.get("/admin/connect/application/shown/made-up/").status_code == 200  # nothing to show
    assert Client().get(done["Location"]).status_code == 302  # to the admin's login page


@pytest.mark.parametrize(
    ("action", "key"), [("rotate_app_key", "app_key"), ("rotate_webhook_secret", "webhook_secret")]
)
def test_the_admin_replaces_the_app_key_and_the_webhook_secret(
    operator: Client, alice: Persona, action: str, key: str
) -> None:
    done = operator.post(
        "/admin/connect/application/",
        {"action": action, "_selected_action": [alice.app.application.pk], "confirm": "yes"},
        follow=True,
    )
    assert f"new {key}".encode() in done.content
    value = done.content.decode().split('class="rotated-secret"', 1)[1].split(">", 1)[1].split("<", 1)[0]
    if key == "app_key":
        assert app_api(alice, value) == 200 and app_api(alice, alice.app.app_key) == 401
    else:
        assert Application.objects.get(pk=alice.app.application.pk).webhook_secret == value
    assert [e.details["rotated"] for e in rotations(alice)] == [key.replace("_", "-")]


# --- key changes never lose a credential -----------------------------------------------------

K1, K2 = "first-secret-key-of-this-server-" + "a" * 20, "second-secret-key-of-this-server-" + "b" * 20
OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


@pytest.fixture
def humanity(settings: Any) -> Iterator[HumanityEmulator]:
    emulator = HumanityEmulator().start()
    settings.SOURCE_SETTINGS = {**settings.SOURCE_SETTINGS, **humanity_settings(emulator)}
    seed(emulator)
    yield emulator
    emulator.stop()


def manage(emulator: HumanityEmulator, *args: str, **keys: str) -> str:
    """A manage.py command run as an operator runs it: a fresh process, keys from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCE_", "SECRET_KEY", "FIELD_ENCRYPTION"))}
    env.update(DATABASE_URL=database_url(), ALLOW_HTTP_PROVIDERS="1", **humanity_settings(emulator), **keys)
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def synced(emulator: HumanityEmulator, connection: Connection, **keys: str) -> str:
    """The outcome word of a sync run in a fresh process with these keys."""
    return manage(emulator, "sync_connection", connection.pk, **keys).split(" ", 1)[0]


def connected(emulator: HumanityEmulator) -> tuple[Persona, Connection, str]:
    """An Application and a Humanity connection made through Connect under the current keys."""
    app = make_application("Keyed app")
    persona = Persona(app, make_human(app, "keyed-user"))
    response, _ = post_connect_form(Client(), persona.human, **good_form(emulator))
    assert response.status_code == 200, response.content
    connection = Connection.objects.get(pk=response.json()["connection"]["id"])
    return persona, connection, connection.credentials["refresh_token"]


@pytest.mark.django_db(transaction=True)
def test_a_new_secret_key_keeps_every_credential_while_the_old_one_is_a_fallback(
    settings: Any, humanity: HumanityEmulator
) -> None:
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS, settings.FIELD_ENCRYPTION_KEYS = K1, [], []
    persona, connection, refresh_token = connected(humanity)
    webhook_secret = persona.app.webhook_secret
    _, session = Token.mint(kind=TokenKind.SESSION, human=persona.human, ttl=600)
    csrf = connect_page_state(Client(), session)["csrf"]  # a Connect page open while the key changes

    settings.SECRET_KEY = K2  # without the old key, nothing stored can be read: the test can fail
    with pytest.raises(DecryptionError):
        _ = Connection.objects.get(pk=connection.pk).credentials

    settings.SECRET_KEY_FALLBACKS = [K1]
    assert synced(humanity, connection, SECRET_KEY=K2, SECRET_KEY_FALLBACKS=K1) == "succeeded"
    assert Record.objects.filter(connection=connection, type="shifts").exists()
    assert Application.objects.get(pk=persona.app.application.pk).webhook_secret == webhook_secret
    still_open = Client().post("/connect/connections", {"token": session, "csrf": csrf})
    assert still_open.status_code == 200, still_open.content

    out = manage(humanity, "rotate_keys", SECRET_KEY=K2, SECRET_KEY_FALLBACKS=K1)
    assert "Connection: 1" in out and "Application: 1" in out

    settings.SECRET_KEY_FALLBACKS = []  # the old key is dropped: everything still reads and syncs
    assert synced(humanity, connection, SECRET_KEY=K2) == "succeeded"
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.credentials["refresh_token"] and stored.credentials["instance_url"] == humanity.url
    assert Application.objects.get(pk=persona.app.application.pk).webhook_secret == webhook_secret
    assert refresh_token not in stored.credentials_sealed and webhook_secret not in out


@pytest.mark.django_db(transaction=True)
def test_field_encryption_keys_can_be_set_and_rotated_without_losing_a_credential(
    settings: Any, humanity: HumanityEmulator
) -> None:
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS, settings.FIELD_ENCRYPTION_KEYS = K1, [], []
    persona, connection, _ = connected(humanity)  # written with the key derived from K1

    # Setting FIELD_ENCRYPTION_KEYS for the first time: what the derived key wrote still reads.
    assert synced(humanity, connection, SECRET_KEY=K1, FIELD_ENCRYPTION_KEYS=OLD) == "succeeded"
    manage(humanity, "rotate_keys", SECRET_KEY=K1, FIELD_ENCRYPTION_KEYS=OLD)
    # Now everything is under OLD: SECRET_KEY itself may change with no fallback.
    assert synced(humanity, connection, SECRET_KEY=K2, FIELD_ENCRYPTION_KEYS=OLD) == "succeeded"

    # A new key first, the old one after it: both decrypt until rotate_keys has run.
    assert synced(humanity, connection, SECRET_KEY=K2, FIELD_ENCRYPTION_KEYS=f"{NEW},{OLD}") == "succeeded"
    manage(humanity, "rotate_keys", SECRET_KEY=K2, FIELD_ENCRYPTION_KEYS=f"{NEW},{OLD}")
    assert synced(humanity, connection, SECRET_KEY=K2, FIELD_ENCRYPTION_KEYS=NEW) == "succeeded"

    settings.SECRET_KEY, settings.FIELD_ENCRYPTION_KEYS = K2, [OLD]  # only the dropped key: unreadable
    with pytest.raises(DecryptionError):
        _ = Connection.objects.get(pk=connection.pk).credentials
    settings.FIELD_ENCRYPTION_KEYS = [NEW]
    assert Connection.objects.get(pk=connection.pk).credentials["instance_url"] == humanity.url
    assert Application.objects.get(pk=persona.app.application.pk).webhook_secret == persona.app.webhook_secret


def test_a_malformed_encryption_key_stops_the_server_at_startup_without_showing_it() -> None:
    env = {**os.environ, "FIELD_ENCRYPTION_KEYS": f"{NEW},not-a-fernet-key-but-a-secret"}
    checked = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS entry 2 is not a Fernet key" in checked.stderr
    assert "not-a-fernet-key-but-a-secret" not in checked.stderr and NEW not in checked.stderr
