"""Operator command: sync one connection now, in this process (or enqueue it for a worker)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sources.models import Connection
from sources.sync import RetryLater, connection_sync


class Command(BaseCommand):
    help = "Sync one connection now and print the outcome, or --enqueue it for the Celery workers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("connection_id")
        parser.add_argument("--enqueue", action="store_true", help="send it to the workers instead")

    def handle(self, *args: Any, **options: Any) -> None:
        connection_id = options["connection_id"]
        if not Connection.objects.filter(pk=connection_id).exists():
            raise CommandError(f"No connection {connection_id!r}")
        if options["enqueue"]:
            from sources.tasks import sync_connection

            sync_connection.delay(connection_id)
            self.stdout.write("enqueued")
            return
        try:
            run = connection_sync(connection_id=connection_id)
        except RetryLater as exc:
            self.stdout.write(f"retrying later: {exc}")
            return
        self.stdout.write("another sync is running" if run is None else f"{run.outcome} {run.counts}")
