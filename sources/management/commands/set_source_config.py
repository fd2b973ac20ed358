"""Operator command: per-Application source configuration (e.g. Humanity's client id and secret),
stored encrypted. Keys set here are not asked of the user in Connect."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from connect.audit import audit
from connect.models import Actor, Application
from humanapi_project import crypto
from sources.registry import plugin_classes


def application_source_config_set(
    *, application: Application, slug: str, values: dict[str, str], unset: list[str]
) -> list[str]:
    """Merge `values` into the Application's encrypted config of `slug`; returns the key names."""
    with transaction.atomic():
        locked = Application.objects.select_for_update().get(pk=application.pk)
        config = dict(crypto.decrypt_json(locked.source_config_sealed) or {})
        section = {**config.get(slug, {}), **values}
        for key in unset:
            section.pop(key, None)
        config[slug] = section
        locked.source_config_sealed = crypto.encrypt_json(config)
        locked.save(update_fields=["source_config_sealed", "updated_at"])
        audit(
            "application.source_config",
            actor=Actor.OPERATOR,
            application=locked,
            source=slug,
            keys_set=sorted(values),
            keys_unset=sorted(unset),
        )
    return sorted(section)


def pair(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key.strip():
        raise CommandError(f"--set expects KEY=VALUE, got a value without '=' for {key.strip()[:40]!r}")
    return key.strip(), value


class Command(BaseCommand):
    help = "Set (or with --unset, remove) configuration keys of one source for one Application."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--client-id", required=True, help="the Application's client_id")
        parser.add_argument("--source", required=True, help="source slug, e.g. humanity")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument("--unset", action="append", default=[], metavar="KEY")

    def handle(self, *args: Any, **options: Any) -> None:
        application = Application.objects.filter(client_id=options["client_id"]).first()
        if application is None:
            raise CommandError(f"No Application with client_id {options['client_id']!r}")
        slug = options["source"]
        if slug not in plugin_classes():
            raise CommandError(f"No source {slug!r}; known: {', '.join(plugin_classes())}")
        values = dict(pair(raw) for raw in options["set"])
        keys = application_source_config_set(
            application=application, slug=slug, values=values, unset=list(options["unset"])
        )
        # Names only: the values may be secrets.
        self.stdout.write(f"{slug} configuration of {application.client_id}: {', '.join(keys) or '(empty)'}")
