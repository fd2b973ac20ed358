from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from tests.emulators.humanity import HumanityEmulator
from tests.factories import Persona, make_application, make_human
from tests.humanity_helpers import humanity_settings
from tests.live import live_stack  # noqa: F401 - a fixture


@pytest.fixture
def alice(db: None) -> Persona:
    """Alice's application and one of its users."""
    app = make_application("Alice's app")
    return Persona(app, make_human(app, "alice-user-1", "alice-user-1@example.com"))


@pytest.fixture
def operator(db: None) -> Client:
    from django.contrib.auth.models import User

    User.objects.create_superuser("ops", "ops@example.com", "ops-password")
    browser = Client()
    browser.force_login(User.objects.get(username="ops"))
    return browser


@pytest.fixture
def charlie(db: None) -> Persona:
    """Another tenant: must never see or change Alice's data."""
    app = make_application("Charlie's app", origins=("http://127.0.0.1:9998",))
    return Persona(app, make_human(app, "charlie-user-1", "charlie-user-1@example.com"))


@pytest.fixture
def humanity(settings: Any) -> Iterator[HumanityEmulator]:
    """A running Humanity emulator, configured as the source's settings."""
    emulator = HumanityEmulator().start()
    settings.SOURCE_SETTINGS = {**settings.SOURCE_SETTINGS, **humanity_settings(emulator)}
    yield emulator
    emulator.stop()


def pytest_report_header() -> list[str]:
    return [f"DATABASE_URL={os.environ.get('DATABASE_URL', '(sqlite default)')}"]
