import json
from typing import Any
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connect.models import SignatureMode, origin_normalize
from connect.services import application_create
from data_api.notifications import refused_notify_url


def origin(value: str) -> str:
    try:
        return origin_normalize(value)
    except ValueError as exc:
        raise CommandError(f"--origin {exc}") from None


class Command(BaseCommand):
    help = "Create an Application (a client app) and print its credentials once, as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--origin", action="append", default=[], help="allowed web origin for Connect (repeatable)")
        parser.add_argument("--notify-url", default="", help="where notifications are POSTed")
        parser.add_argument(
            "--signature-mode",
            choices=SignatureMode.values,
            default=SignatureMode.DEFAULT,
            help="how notifications are signed: default (t=...,v1=..., the webhook secret) or humanapi "
            "(as Human API signs them, with the client secret, which is then kept encrypted)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"].strip()
        if not name:
            raise CommandError("--name must not be empty")
        notify_url = options["notify_url"]
        if notify_url and urlsplit(notify_url).scheme not in ("http", "https"):
            raise CommandError("--notify-url must be an http(s) URL")
        refused = refused_notify_url(notify_url) if notify_url else ""
        if refused:
            raise CommandError(f"--notify-url is refused: {refused}")
        created = application_create(
            name=name,
            origins=[origin(o) for o in options["origin"]],
            notify_url=notify_url,
            signature_mode=options["signature_mode"],
        )
        self.stdout.write(json.dumps(created.as_json()))
