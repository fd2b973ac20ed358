"""Operator command: choose how an Application's notifications are signed.

`default`: `X-HumanAPI-Signature: t=...,v1=...`, HMAC-SHA256 keyed with the webhook secret.
`humanapi`: as Human API signs its own notifications, HMAC-SHA1 keyed with the client secret.
Only a hash of the client secret is kept, so switching to `humanapi` replaces it (confirm with
--replace-client-secret): the new one is printed once, as JSON, and kept encrypted while the
mode lasts. Switching back drops the encrypted copy.
"""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connect.models import Application, SignatureMode
from connect.services import application_set_signature_mode


class Command(BaseCommand):
    help = "Choose how an Application's notifications are signed (default or humanapi); prints the result as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client_id")
        parser.add_argument("mode", choices=SignatureMode.values)
        parser.add_argument(
            "--replace-client-secret",
            action="store_true",
            help="needed to switch to humanapi: the client secret is replaced (the old one stops working at once)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        application = Application.objects.filter(client_id=options["client_id"]).first()
        if application is None:
            raise CommandError(f"No application with client_id {options['client_id']!r}")
        try:
            value = application_set_signature_mode(
                application, options["mode"], replace_client_secret=options["replace_client_secret"]
            )
        except ValueError as exc:
            raise CommandError(f"{exc}. Run again with --replace-client-secret; the new one is printed once.") from None
        shown = {"client_id": application.client_id, "signature_mode": application.signature_mode}
        if value:
            shown["client_secret"] = value
        self.stdout.write(json.dumps(shown))
