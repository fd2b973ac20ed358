"""Writes of the sources app that Connect and the Application API call."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Least
from django.http import HttpRequest
from django.utils import timezone

from connect.audit import audit
from connect.models import Actor, Human
from data_api.notifications import notify_connection_event

from .base import AuthKind, Credentials
from .http import ProviderHttp
from .models import Connection, ConnectionStatus, SyncPriority
from .registry import enabled_plugins

log = logging.getLogger(__name__)


class UnknownSource(Exception):
    pass


def offered_plugin(slug: str, auth_kinds: tuple[AuthKind, ...] | None = None):  # type: ignore[no-untyped-def]
    for plugin in enabled_plugins():
        if plugin.slug == slug and (auth_kinds is None or plugin.auth_kind in auth_kinds):
            return plugin
    raise UnknownSource(slug)


def connection_authorize_form(
    *, human: Human, slug: str, form: Mapping[str, str], request: HttpRequest | None
) -> Connection:
    """Connect a credentials or password-grant source. The form (and its password) is passed to
    the plugin once and dropped; only what the plugin returns is stored, encrypted."""
    plugin = offered_plugin(slug, (AuthKind.CREDENTIALS, AuthKind.OAUTH2_PASSWORD))
    credentials = plugin.authorize_with_form(form, human.application.source_config(slug), ProviderHttp())
    return connection_store(human=human, slug=slug, credentials=credentials, request=request)


def enqueue_sync(connection_id: str, priority: str = SyncPriority.BACKFILL) -> None:
    """Hand a sync to the workers. Runs after commit, so the request has already succeeded: a
    broker that can't be reached is logged, not raised; beat picks the connection up when its
    `next_sync_at` comes (SYNC_REQUEUE_AFTER ahead). The connection waits from
    now until a run starts (the queue's lag, in /metrics)."""
    from .tasks import sync_connection

    Connection.objects.filter(pk=connection_id, sync_queued_at__isnull=True).update(sync_queued_at=timezone.now())
    try:
        sync_connection.delay(connection_id, priority)
    except Exception:
        log.warning("could not enqueue a sync of connection %s; beat will", connection_id, exc_info=True)


def audit_connection(
    action: str, connection: Connection, actor: str, request: HttpRequest | None, **details: Any
) -> None:
    audit(
        action,
        actor=actor,
        application=connection.human.application,
        human_id=connection.human_id,
        request=request,
        source=connection.source,
        connection_id=connection.pk,
        **details,
    )


def _start(connection_id: str, slug: str) -> None:
    """A connection just made: its history sync, and (per-user push sources) its subscription."""
    from .push import subscribe_on_connect  # push needs this module (as tasks does, for enqueue_sync)

    enqueue_sync(connection_id)
    subscribe_on_connect(connection_id, slug)


def connection_store(*, human: Human, slug: str, credentials: Credentials, request: HttpRequest | None) -> Connection:
    now = timezone.now()
    with transaction.atomic():
        connection, created = Connection.objects.select_for_update().get_or_create(human=human, source=slug)
        if not created and connection.external_user_id != credentials.external_user_id:
            # Another provider account: start its history afresh.
            connection.cursor, connection.history_synced_at, connection.oldest_date = {}, None, None
        if created or connection.status == ConnectionStatus.DISCONNECTED:
            connection.connected_at = now
        connection.status = ConnectionStatus.ACTIVE
        # A sync still running for the old authorization stops at its next page (its claim is gone).
        connection.sync_claim, connection.sync_claimed_at = "", None
        connection.external_user_id = credentials.external_user_id
        connection.set_credentials(credentials.data, credentials.expires_at)
        # The history sync is enqueued below; should that message be lost, beat sends it again.
        connection.next_sync_at = now + timedelta(seconds=settings.SYNC_REQUEUE_AFTER)
        connection.sync_queued_at = now  # a wait left from an earlier authorization is over
        connection.save()
        audit_connection("connection.connected", connection, Actor.END_USER, request, reconnect=not created)
        transaction.on_commit(lambda: _start(connection.pk, slug))
        transaction.on_commit(lambda: notify_connection_event(connection, "source.connected"))
    return connection


def connection_disconnect(*, connection: Connection, actor: str, request: HttpRequest | None, **details: Any) -> None:
    """Stop syncing and forget the provider credentials. Records already stored stay. `details`
    go to the audit entry (e.g. why the system disconnected it)."""
    with transaction.atomic():
        Connection.objects.filter(pk=connection.pk).update(
            status=ConnectionStatus.DISCONNECTED,
            credentials_sealed="",
            token_expires_at=None,
            next_sync_at=None,
            sync_requested=False,
            sync_queued_at=None,
            sync_claim="",  # a running sync stops at its next page
            sync_claimed_at=None,
        )
        audit_connection("connection.disconnected", connection, actor, request, **details)
        transaction.on_commit(lambda: notify_connection_event(connection, "source.disconnected"))
    connection.status = ConnectionStatus.DISCONNECTED


def connection_request_sync(*, connection: Connection, actor: str, request: HttpRequest | None) -> None:
    """ "Sync now": enqueued after commit, and due for beat soon after, should the message be lost.
    Someone waits for it: it may use the reserved share of the provider's rate budget."""
    audit_connection("connection.resync", connection, actor, request)
    due = timezone.now() + timedelta(seconds=settings.SYNC_REQUEUE_AFTER)
    Connection.objects.filter(pk=connection.pk, status=ConnectionStatus.ACTIVE).update(
        next_sync_at=Least(Coalesce(F("next_sync_at"), Value(due)), Value(due))
    )
    transaction.on_commit(lambda: enqueue_sync(connection.pk, SyncPriority.INTERACTIVE))
