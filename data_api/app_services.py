"""Writes of the Application API (CONTRACT §7): creating and deleting an Application's users,
and asking for a sync now. Each is audited with the app server as the actor."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db import connection as db
from django.http import HttpRequest

from connect.audit import audit, deleted_user_marker, redact_deleted_human
from connect.models import Actor, Application, Human, Token
from sources.models import Connection, ConnectionStatus
from sources.services import connection_request_sync

from .models import Record, Series
from .notifications import drop_human_notifications

# Rows per DELETE when erasing a user's records: small enough that each statement is short and
# holds its locks briefly, large enough that millions of rows take a few hundred statements.
DELETE_BATCH = 20_000


class NothingToSync(Exception):
    pass


def app_user_create(*, application: Application, external_id: str, request: HttpRequest | None) -> tuple[Human, bool]:
    """The user with this external id, created if new. Idempotent: a retried POST finds the
    user its first attempt created, rather than failing or making a second one."""
    try:
        with transaction.atomic():
            human, created = Human.objects.get_or_create(application=application, client_user_id=external_id)
    except IntegrityError:  # created concurrently by another request
        human, created = Human.objects.get(application=application, client_user_id=external_id), False
    if created:
        audit("user.created", actor=Actor.APP_SERVER, application=application, human_id=human.pk, request=request)
    return human, created


@dataclass
class Erased:
    records: int
    connections: int
    tokens: int


def app_user_delete(*, human: Human, request: HttpRequest | None, batch: int = DELETE_BATCH) -> Erased:
    """Erase a user: tokens, connections (with their provider credentials and sync history),
    every record, then the user. The audit trail keeps the user's events and internal id, with
    their external id and email replaced by a marker; undelivered notifications are dropped.

    First the connections stop (no new sync claims them) and every token dies, in one
    transaction; then records go in batches of set-based DELETEs, each its own short
    transaction, so erasing millions of rows neither loads them into Python nor holds one huge
    lock; last, with the connections locked so a still-running sync can't add a page, what
    remains is deleted with the user."""
    application, human_id = human.application, human.pk
    with transaction.atomic():
        Connection.objects.filter(human=human).update(
            status=ConnectionStatus.DISCONNECTED,
            credentials_sealed="",
            token_expires_at=None,
            next_sync_at=None,
            sync_requested=False,
        )
        tokens = Token.objects.filter(human=human).delete()[0]
    records = _delete_records(human_id, batch)
    with transaction.atomic():
        sources = list(Connection.objects.select_for_update().filter(human=human).values_list("source", flat=True))
        records += _delete_records(human_id, batch)
        records += _delete_series(human_id)
        drop_human_notifications(human_id)
        redact_deleted_human(human_id, {human.client_user_id, human.email})
        human.delete()
        audit(
            "user.deleted",
            actor=Actor.APP_SERVER,
            application=application,
            human_id=human_id,
            request=request,
            external_id=deleted_user_marker(human_id),
            records=records,
            sources=sources,
        )
    return Erased(records=records, connections=len(sources), tokens=tokens)


def _delete_records(human_id: str, batch: int) -> int:
    # The subquery walks the (human, type, start_time, id) index; no row reaches Python.
    sql = (
        f"DELETE FROM {Record._meta.db_table} WHERE id IN "
        f"(SELECT id FROM {Record._meta.db_table} WHERE human_id = %s LIMIT %s)"
    )
    total = 0
    while True:
        with db.cursor() as cursor:
            cursor.execute(sql, [human_id, batch])
            deleted = cursor.rowcount
        total += deleted
        if deleted < batch:
            return total


def _delete_series(human_id: str) -> int:
    """The user's compact time series (a row per day): the readings they held."""
    days = Series.objects.filter(human_id=human_id)
    readings = sum(days.values_list("count", flat=True))
    days.delete()
    return readings


def app_user_request_sync(*, human: Human, source: str | None, request: HttpRequest | None) -> list[Connection]:
    """Sync each active connection (or the one of `source`) now. A sync already running for a
    connection absorbs the request: the engine runs it once more when it finishes."""
    connections = list(
        Connection.objects.select_related("human__application").filter(human=human, status=ConnectionStatus.ACTIVE)
    )
    if source is not None:
        connections = [c for c in connections if c.source == source]
    if not connections:
        raise NothingToSync(source)
    for connection in connections:
        connection_request_sync(connection=connection, actor=Actor.APP_SERVER, request=request)
    return connections
