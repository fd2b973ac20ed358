"""Operator command: check the providers' push subscriptions now (as beat does every
PUSH_CHECK_INTERVAL) and show their state, one JSON object a line."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from sources.models import PushSubscription
from sources.push import push_maintain


class Command(BaseCommand):
    help = "Make, repair and renew the providers' push subscriptions now, then list them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--list", action="store_true", help="only list them, calling no provider")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["list"]:
            for slug, state in push_maintain().items():
                self.stderr.write(f"{slug}: {state}")
        for row in PushSubscription.objects.order_by("source", "topic"):
            fields = ("source", "topic", "status", "provider_id", "callback_url", "error")
            shown: dict[str, Any] = {name: getattr(row, name) for name in fields}
            for name in ("verified_at", "expires_at", "last_event_at"):
                value = getattr(row, name)
                shown[name] = value.isoformat() if value else None
            self.stdout.write(json.dumps(shown))
