from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from connect.models import Application, AuditEntry
from humanapi_project.crypto import DecryptionError
from sources.models import Connection
from tests.conftest import Persona
from tests.factories import make_connection

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


@pytest.fixture
def old_key(settings: Any) -> Any:
    settings.FIELD_ENCRYPTION_KEYS = [OLD]
    return settings


def test_it_re_encrypts_every_secret_with_the_new_key(old_key: Any, alice: Persona) -> None:
    connection = make_connection(alice.human, data={"user": "demouser", "access_token": "provider-token"})
    webhook_secret = alice.app.webhook_secret

    old_key.FIELD_ENCRYPTION_KEYS = [NEW, OLD]
    out = StringIO()
    call_command("rotate_keys", stdout=out)
    assert "Connection: 1" in out.getvalue() and "Application: 1" in out.getvalue()

    old_key.FIELD_ENCRYPTION_KEYS = [NEW]  # the old key is gone: everything still reads
    assert Connection.objects.get(pk=connection.pk).credentials["access_token"] == "provider-token"
    assert Application.objects.get(pk=alice.app.application.pk).webhook_secret == webhook_secret
    entry = AuditEntry.objects.get(action="encryption.keys_rotated")
    assert "provider-token" not in str(entry.details) and webhook_secret not in str(entry.details)


def test_it_refuses_to_guess_when_a_secret_was_written_with_an_unknown_key(old_key: Any, alice: Persona) -> None:
    make_connection(alice.human)
    old_key.FIELD_ENCRYPTION_KEYS = [NEW]
    with pytest.raises(CommandError, match="can't be decrypted"):
        call_command("rotate_keys", stdout=StringIO())
    with pytest.raises(DecryptionError):
        _ = Connection.objects.get(human=alice.human).credentials
