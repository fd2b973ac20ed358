"""Operator command: replace one of an Application's secrets without deleting the Application.

The new value is printed once, as JSON (`{"client_id": ..., "client_secret": ...}`); only its
hash is kept (the webhook secret encrypted). The old value stops working at once.
"""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connect.models import Application
from connect.services import ROTATABLE, application_rotate_secret


class Command(BaseCommand):
    help = "Replace an Application's client secret, App Key or webhook secret; print the new value once, as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client_id")
        parser.add_argument("--what", required=True, choices=list(ROTATABLE), help="which secret to replace")

    def handle(self, *args: Any, **options: Any) -> None:
        application = Application.objects.filter(client_id=options["client_id"]).first()
        if application is None:
            raise CommandError(f"No application with client_id {options['client_id']!r}")
        what = options["what"]
        value = application_rotate_secret(application, what)
        self.stdout.write(json.dumps({"client_id": application.client_id, ROTATABLE[what]: value}))
