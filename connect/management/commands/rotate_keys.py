"""Re-encrypt every stored secret with the current (first) key of FIELD_ENCRYPTION_KEYS.

Rotation: put a new key first in FIELD_ENCRYPTION_KEYS and keep the old ones after it, deploy,
run this command, then drop the old keys. Without FIELD_ENCRYPTION_KEYS the key is derived from
SECRET_KEY: set the new SECRET_KEY with the old one in SECRET_KEY_FALLBACKS, run this command,
then drop the fallback. Rows are rewritten in batches, each in a short transaction; a row that
changed meanwhile is skipped and reported (run the command again).
"""

from typing import Any

from cryptography.fernet import InvalidToken
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models, transaction

from connect.audit import audit
from connect.models import Actor, Application, OAuthState
from humanapi_project import crypto
from sources.models import Connection

SEALED_FIELDS: list[tuple[type[models.Model], tuple[str, ...]]] = [
    (Application, ("webhook_secret_sealed", "client_secret_sealed", "source_config_sealed")),
    (Connection, ("credentials_sealed",)),
    (OAuthState, ("sealed",)),
]


class Command(BaseCommand):
    help = "Re-encrypt every stored secret with the first key of FIELD_ENCRYPTION_KEYS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args: Any, **options: Any) -> None:
        batch = max(1, options["batch_size"])
        totals: dict[str, int] = {}
        skipped = 0
        for model, fields in SEALED_FIELDS:
            rewritten, missed = rotate_model(model, fields, batch)
            totals[model.__name__] = rewritten
            skipped += missed
        audit("encryption.keys_rotated", actor=Actor.OPERATOR, rewritten=totals, skipped=skipped)
        summary = ", ".join(f"{name}: {n}" for name, n in totals.items())
        self.stdout.write(f"re-encrypted {summary}; skipped {skipped} row(s) that changed meanwhile")


def rotate_model(model: type[models.Model], fields: tuple[str, ...], batch: int) -> tuple[int, int]:
    rewritten = skipped = 0
    last_pk: Any = None
    while True:
        rows = model._default_manager.order_by("pk")
        if last_pk is not None:
            rows = rows.filter(pk__gt=last_pk)
        chunk = list(rows.values_list("pk", *fields)[:batch])
        if not chunk:
            return rewritten, skipped
        last_pk = chunk[-1][0]
        with transaction.atomic():
            for pk, *values in chunk:
                current = dict(zip(fields, values, strict=True))
                try:
                    fresh = {name: crypto.rotate(value) for name, value in current.items() if value}
                except InvalidToken:
                    raise CommandError(
                        f"{model.__name__} {pk} can't be decrypted with any configured key; "
                        "put back the key it was written with"
                    ) from None
                if not fresh:
                    continue
                # Only if nothing rewrote the row since it was read (e.g. a token refresh).
                updated = model._default_manager.filter(pk=pk, **current).update(**fresh)
                rewritten += updated
                skipped += 1 - updated
