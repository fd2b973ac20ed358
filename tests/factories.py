"""Typed helpers that build the usual objects through the product's own services."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import requests

from connect.models import Human
from connect.services import CreatedApplication, application_create, human_for_session
from sources.base import Credentials
from sources.http import ProviderHttp
from sources.models import Connection
from sources.oauth import OAuth2CodeSource, pkce_pair
from sources.registry import get_plugin
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


def connect_through_oauth(human: Human, slug: str, redirect_uri: str) -> Connection:
    """The Connect flow's server side against a provider's emulator: the user's consent (the
    emulator redirects at once), the code exchanged with PKCE, the connection stored (its history
    sync is enqueued on commit)."""
    plugin = get_plugin(slug)
    assert isinstance(plugin, OAuth2CodeSource)
    verifier, challenge = pkce_pair()
    url = plugin.authorization_url(redirect_uri=redirect_uri, state="s", code_challenge=challenge)
    code = parse_qs(urlsplit(requests.get(url, allow_redirects=False, timeout=5).headers["Location"]).query)["code"][0]
    credentials = plugin.exchange_code(
        code=code, redirect_uri=redirect_uri, code_verifier=verifier, http=ProviderHttp()
    )
    return connection_store(human=human, slug=slug, credentials=credentials, request=None)
