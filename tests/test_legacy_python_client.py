"""Human API's own legacy Python client (`humanapi` 0.1.10, Python 2.7), pointed at this server,
reads what a person expects: the sleep summary of the day of the latest activity is last
night's sleep, the one that ended that morning."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from connect.models import Token, TokenKind
from sources.sync import connection_sync
from tests.conftest import Persona
from tests.factories import make_connection

CLIENT_DIR = Path(__file__).resolve().parent.parent / ".legacy-client"
PYTHON2 = os.environ.get("LEGACY_PYTHON2", "")

SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import humanapi.api as api
api.ROOT = sys.argv[2] + "/v1/human"  # the client's only setting: where Human API lives
client = api.HumanAPI(accessToken=sys.argv[3])
day = sys.argv[4]
print(json.dumps({"summary": client.sleep.summary(day), "daily": client.sleep.daily(day)}))
"""


@pytest.mark.skipif(
    not PYTHON2 or not (CLIENT_DIR / "humanapi").is_dir(),
    reason="needs Python 2.7 and the legacy client, which scripts/test installs into .legacy-client",
)
@pytest.mark.django_db(transaction=True)
def test_it_answers_the_legacy_clients_sleep_summary_for_the_latest_activity_day(
    alice: Persona, live_server: Any, settings: Any
) -> None:
    settings.DEMO_HISTORY_DAYS = 3
    connection = make_connection(alice.human)
    connection_sync(connection_id=connection.pk)
    _, token = Token.mint(kind=TokenKind.ACCESS, human=alice.human, ttl=3600)
    latest = Client().get("/v1/human/activities", {"limit": 1, "access_token": token}).json()[0]
    day = local(latest["startTime"], latest["tzOffset"]).date().isoformat()

    answer = subprocess.run(
        [PYTHON2, "-c", SCRIPT, str(CLIENT_DIR), live_server.url, token, day],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr[-2000:]
    found = json.loads(answer.stdout.strip().splitlines()[-1])
    summary, [night] = found["summary"], found["daily"]
    assert summary["date"] == day and summary["source"] == "demo"
    assert summary["timeInBed"] == night["timeInBed"] and night["day"] == day
    # Last night: it began the evening before and ended on the morning of that day.
    began, ended = local(night["startTime"], night["tzOffset"]), local(night["endTime"], night["tzOffset"])
    assert ended.date().isoformat() == day and began.date() == ended.date() - timedelta(days=1)


def local(instant: str, tz_offset: str) -> datetime:
    sign = -1 if tz_offset.startswith("-") else 1
    hours, minutes = (int(part) for part in tz_offset.lstrip("+-").split(":"))
    return datetime.fromisoformat(instant.replace("Z", "+00:00")) + sign * timedelta(hours=hours, minutes=minutes)
