"""Typed helpers that build the usual objects through the product's own services."""

from __future__ import annotations

from dataclasses import dataclass

from connect.models import Human
from connect.services import CreatedApplication, application_create, human_for_session
from sources.base import Credentials
from sources.models import Connection
from sources.services import connection_store


def make_application(
    name: str = "Alice's app", origins: tuple[str, ...] = ("http://127.0.0.1:9999",), notify_url: str = ""
) -> CreatedApplication:
    return application_create(name=name, origins=list(origins), notify_url=notify_url)


def make_human(app: CreatedApplication, client_user_id: str = "user-1", email: str = "user-1@example.com") -> Human:
    return human_for_session(app.application, client_user_id, email)


def make_connection(human: Human, slug: str = "demo", data: dict[str, str] | None = None) -> Connection:
    """A connection stored as Connect would store it (its history sync is enqueued on commit)."""
    credentials = Credentials(data=data or {"user": "demouser"}, external_user_id="demouser")
    return connection_store(human=human, slug=slug, credentials=credentials, request=None)


@dataclass
class Persona:
    app: CreatedApplication
    human: Human
