"""Calling the Application API as a client app's server does: HTTP Basic, App Key, no password."""

from __future__ import annotations

import base64
from typing import Any

from django.test import Client

from tests.factories import Persona


def basic(app_key: str) -> str:
    return "Basic " + base64.b64encode(f"{app_key}:".encode()).decode()


def app_call(client: Client, persona: Persona, method: str, path: str, *, key: str | None = None, **kwargs: Any) -> Any:
    """`path` is relative to /v1/apps/{client_id}/ of the persona's application."""
    url = f"/v1/apps/{persona.app.application.client_id}/{path}"
    auth = basic(persona.app.app_key if key is None else key)
    return getattr(client, method.lower())(url, HTTP_AUTHORIZATION=auth, **kwargs)
