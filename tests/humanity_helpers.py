"""Shared set-up for the Humanity tests: the emulator, the settings that point at it, and a
connection made the way a user makes one (the Connect page's form)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

from django.test import Client
from django.utils import timezone

from connect.models import Human, Token, TokenKind
from tests.emulators.humanity import CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME, HumanityEmulator

_STATE = re.compile(r'<script id="connect-state" type="application/json">(.*?)</script>', re.S)


def humanity_settings(emulator: HumanityEmulator, history_days: int = 60) -> dict[str, str]:
    return {
        "SOURCE_HUMANITY_ALLOWED_INSTANCES": f"www.humanity.com,*.humanity.com,http://127.0.0.1:{emulator.server.port}",
        "SOURCE_HUMANITY_HISTORY_DAYS": str(history_days),
    }


def connect_page_state(client: Client, token: str) -> dict[str, Any]:
    page = client.get(f"/connect/?token={token}")
    match = _STATE.search(page.content.decode())
    assert match, "the Connect page carries its state"
    state: dict[str, Any] = json.loads(match[1])
    return state


def post_connect_form(client: Client, human: Human, **form: str) -> tuple[Any, dict[str, Any]]:
    """Open Connect with a fresh session token and submit the Humanity form."""
    _, value = Token.mint(kind=TokenKind.SESSION, human=human, ttl=600)
    state = connect_page_state(client, value)
    body = {"token": value, "csrf": state["csrf"], **form}
    return client.post("/connect/sources/humanity/connect", body), state


def good_form(emulator: HumanityEmulator) -> dict[str, str]:
    return {
        "instance_url": emulator.url,
        "username": USERNAME,
        "password": PASSWORD,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


def minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def seed(emulator: HumanityEmulator, now: datetime | None = None) -> dict[str, datetime]:
    """A small schedule: one old shift (history only), three in the rolling window, two
    timeclocks (one still clocked in)."""
    base = minute(now or timezone.now()).replace(hour=14)
    at = {
        "old": base - timedelta(days=45),
        "past": base - timedelta(days=3),
        "soon": base + timedelta(days=5),
        "later": base + timedelta(days=50),
    }
    emulator.add_shift("s-old", at["old"], title="Inventory", position="12")
    emulator.add_shift("s-past", at["past"], title="Opening")
    emulator.add_shift("s-soon", at["soon"], title="Closing", published=False)
    emulator.add_shift("s-later", at["later"], title="Brunch", position="12")
    emulator.add_timeclock("t-past", at["past"] + timedelta(minutes=5), 7.5, shift="s-past")
    emulator.add_timeclock("t-now", minute(timezone.now()) - timedelta(hours=1), None)
    return at


def offset_text(minutes: int) -> str:
    """A tzOffset as the Data API writes it: "-05:00"."""
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
