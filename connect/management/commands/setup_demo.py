import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from connect.models import Application
from connect.services import application_create


class Command(BaseCommand):
    help = "Create the demo Application (once) and keep its credentials in DEMO_CREDENTIALS_FILE."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--origin", default="http://127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(settings.DEMO_CREDENTIALS_FILE)
        if path.exists():
            known = json.loads(path.read_text())
            if Application.objects.filter(client_id=known.get("client_id")).exists():
                self.stdout.write(f"demo application exists ({path})")
                return
        try:
            created = application_create(name="Demo app", origins=[options["origin"]])
        except ValueError as exc:
            raise CommandError(f"--origin {exc}") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(created.as_json()))
        path.chmod(0o600)
        self.stdout.write(f"demo application created ({path})")
