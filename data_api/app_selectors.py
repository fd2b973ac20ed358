"""Reads of the Application API (CONTRACT §7): an Application's users, its batch record feeds,
its users' connections and sync history, and its audit log. Every query starts from the
Application, so one tenant's credentials can only ever reach its own rows."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from django.http import QueryDict
from rest_framework.exceptions import ValidationError

from connect.models import Application, AuditEntry, Human
from sources.models import Connection, SyncRun
from sources.types import SERIES, SUMMARIZED

from .models import Record
from .readings import app_reading_page
from .records import (
    Filters,
    Page,
    Window,
    apply_filters,
    bounded_total,
    counter,
    iso_ms,
    parse_instant,
    record_json,
)
from .selectors import connection_json
from .summaries import SUMMARY_KINDS, app_summary_page

# Daily summaries served in batch: the Data API's summaries whose measures are all sums, so
# they can be computed for every user of an Application in one grouped query.
SUMMARY_SUMS = tuple(kind for kind in SUMMARY_KINDS if all(m.agg == "sum" for m in SUMMARIZED[kind]))

RECENT_RUNS = 10


def paginate(queryset: QuerySet[Any], params: QueryDict, render: Callable[[Any], dict[str, Any]]) -> Page:
    """One page of an already ordered queryset, with the Data API's limit/offset rules. The total
    is counted no further than COUNT_AHEAD rows past the page (bounded_total): a feed of millions
    of rows, or an audit log, costs no full count per page."""
    window = Window.parse(params)
    items = [render(row) for row in queryset[window.offset : window.offset + window.limit]]
    total, exact = bounded_total(window, len(items), counter(queryset))
    return Page(items, total, window.limit, window.offset, exact)


def _since(params: QueryDict, name: str) -> Any:
    raw = params.get(name)
    return parse_instant(name, raw) if raw else None


# --- users ---------------------------------------------------------------------------------


def human_json(human: Human, application: Application) -> dict[str, Any]:
    return {
        "humanId": human.pk,
        "externalId": human.client_user_id,
        "appId": application.client_id,
        "createdAt": iso_ms(human.created_at),
        "updatedAt": iso_ms(human.updated_at),
    }


def app_humans(application: Application, params: QueryDict) -> QuerySet[Human]:
    humans = Human.objects.filter(application=application)
    external_id = params.get("externalId")
    if external_id is not None:
        humans = humans.filter(client_user_id=external_id)
    return humans.order_by("created_at", "id")


def app_human(application: Application, human_id: str) -> Human | None:
    if len(human_id) > 32:
        return None
    return Human.objects.filter(application=application, pk=human_id).first()


# --- batch records -------------------------------------------------------------------------


def batch_page(application: Application, record_type: str, params: QueryDict) -> Page:
    """One page of the batch feed of a record type (see batch_records)."""
    if record_type in SERIES:
        filters, window = Filters.parse(params), Window.parse(params)
        return app_reading_page(application=application, kind=record_type, filters=filters, window=window)
    return paginate(batch_records(application, record_type, params), params, batch_record_json)


def batch_records(application: Application, record_type: str, params: QueryDict) -> QuerySet[Record]:
    """Every record of one type of every user of the Application, oldest change first, so a
    client pulls incrementally with `updated_since` = the last `updatedAt` it saw."""
    records = Record.objects.filter(human__application=application, type=record_type)
    return apply_filters(records, params).order_by("updated_at", "id")


def batch_record_json(record: Record) -> dict[str, Any]:
    return record_json(record)


def batch_summaries(application: Application, kind: str, params: QueryDict) -> Page:
    """Daily summaries of every user, as the Data API's `/summaries` shows them (one source per
    user and day), oldest change first. A summary's `updatedAt` is its newest record's, so
    `updated_since` returns every day whose totals changed, in full."""
    filters, window = Filters.parse(params), Window.parse(params)
    return app_summary_page(application=application, kind=kind, filters=filters, window=window)


# --- connections ---------------------------------------------------------------------------


def run_json(run: SyncRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "kind": run.kind,
        "outcome": run.outcome,
        "startedAt": iso_ms(run.started_at),
        "finishedAt": iso_ms(run.finished_at),
        "pages": run.pages,
        "counts": run.counts,
        "error": run.error,
        "unreadable": run.unreadable,
        "failures": run.failures,
    }


def connection_detail(connection: Connection, runs: list[SyncRun]) -> dict[str, Any]:
    """The Data API's view of a connection, plus its state and its recent sync runs."""
    return {
        **connection_json(connection, runs[0] if runs else None),
        "status": connection.status,
        "nextSyncAt": iso_ms(connection.next_sync_at) if connection.is_active else None,
        "syncRuns": [run_json(run) for run in runs],
    }


def human_connections(human: Human) -> list[dict[str, Any]]:
    """Each of the Human's connections with its latest sync runs, newest first."""
    connections = list(Connection.objects.filter(human=human).order_by("connected_at", "id"))
    return [connection_detail(c, _recent_runs(c)) for c in connections]


def _recent_runs(connection: Connection) -> list[SyncRun]:
    return list(SyncRun.objects.filter(connection=connection).order_by("-started_at", "-id")[:RECENT_RUNS])


# --- audit ---------------------------------------------------------------------------------


def app_audit(application: Application, params: QueryDict) -> QuerySet[AuditEntry]:
    entries = AuditEntry.objects.filter(application=application)
    human_id = params.get("humanId")
    if human_id is not None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", human_id):
            raise ValidationError({"humanId": f"not a user id: {human_id!r}"})
        entries = entries.filter(human_id=human_id)
    action = params.get("action")
    if action is not None:
        if not re.fullmatch(r"[a-z0-9_.]{1,64}", action):
            raise ValidationError({"action": f"not an action name: {action!r}"})
        entries = entries.filter(action=action)
    for name, lookup in (("since", "at__gt"), ("before", "at__lt")):
        moment = _since(params, name)
        if moment is not None:
            entries = entries.filter(**{lookup: moment})
    return entries.order_by("-at", "-id")


# Details the operator's audit trail keeps but a tenant is not shown (who the operators are).
OPERATOR_ONLY_DETAILS = frozenset({"operator"})


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    details = {k: v for k, v in entry.details.items() if k not in OPERATOR_ONLY_DETAILS}
    return {
        "id": entry.pk,
        "at": iso_ms(entry.at),
        "action": entry.action,
        "actor": entry.actor,
        "humanId": entry.human_id or None,
        "ip": entry.ip,
        "details": details,
    }
