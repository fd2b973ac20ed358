"""The sync engine: everything common to every source.

One sync at a time per connection (a claim taken by a conditional UPDATE; a request while one
runs is coalesced into one more run). No transaction is open while the provider is called;
each page is normalized, then written with its cursor in one short transaction, so a crash at
any point loses nothing and a re-run writes nothing twice.
"""

from __future__ import annotations

import gc
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from operator import attrgetter
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db import connection as db
from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Coalesce, Least
from django.utils import timezone
from psycopg.types.json import Jsonb

from data_api.notifications import notify_connection_event, notify_data_updated
from humanapi_project import sql

from .base import (
    BudgetSpent,
    Collection,
    PermanentError,
    RateLimited,
    Readings,
    Record,
    RefreshRefused,
    SourcePlugin,
    SyncContext,
    TokenRejected,
    TransientError,
    Window,
)
from .http import ProviderHttp
from .models import Connection, ConnectionStatus, SyncKind, SyncOutcome, SyncPriority, SyncRun, push_healthy
from .ratebudget import budget_gate
from .registry import get_plugin, source_settings
from .types import RECORD_TYPES
from .upsert import TypeCounts, count_in_window, delete_missing, refresh_statistics, stored_id, upsert_page

log = logging.getLogger(__name__)


class SyncCancelled(Exception):
    """The run no longer holds its connection's claim: the user disconnected or reconnected
    (perhaps another provider account) while it ran. Nothing more of it may be written."""


class TokenEndpointUnavailable(TransientError):
    """The provider's token endpoint failed while a rejected token was refreshed: no collection
    can go on, so the whole run waits and retries (the connection stays active)."""


class RetryLater(Exception):
    """The provider asked us to wait (or failed transiently); the fetched pages are stored.
    `waiting`: the provider's shared rate budget is spent for now, which is no failure."""

    def __init__(self, message: str, retry_after: float | None, *, waiting: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.waiting = waiting


@dataclass
class RunTotals:
    """What one run read and wrote, per record type, and what it could not read."""

    counts: dict[str, TypeCounts] = field(default_factory=dict)
    pages: int = 0
    # type -> the first reasons items of that type could not be read
    reasons: dict[str, list[str]] = field(default_factory=dict)
    # type -> why its collection failed in this run
    failures: dict[str, str] = field(default_factory=dict)
    analyzed_at: int = 0  # `written` when this run last had the tables analyzed
    fetched: set[str] = field(default_factory=set)  # types of the collections read to the end

    def of(self, kind: str) -> TypeCounts:
        return self.counts.setdefault(kind, TypeCounts())

    def add(self, kind: str, created: int = 0, updated: int = 0, deleted: int = 0) -> None:
        entry = self.of(kind)
        entry.created += created
        entry.updated += updated
        entry.deleted += deleted

    def unreadable(self, kind: str, reason: str, count: int) -> None:
        entry = self.of(kind)
        entry.read += count
        entry.unreadable += count
        reasons = self.reasons.setdefault(kind, [])
        if len(reasons) < MAX_REASONS and reason not in reasons:
            reasons.append(reason)

    def failed(self, kinds: tuple[str, ...], reason: str) -> None:
        for kind in kinds:
            self.failures.setdefault(kind, reason)

    def wholly_unreadable(self) -> list[str]:
        """Types of which items were read but none could be: a failure of that type."""
        return sorted(k for k, c in self.counts.items() if c.unreadable and c.unreadable == c.read)

    def as_json(self) -> dict[str, dict[str, int]]:
        return {k: c.as_json() for k, c in sorted(self.counts.items())}

    @property
    def written(self) -> int:
        return sum(c.created + c.updated + c.deleted for c in self.counts.values())

    @property
    def changed(self) -> bool:
        return any(c.created or c.updated or c.deleted for c in self.counts.values())

    @property
    def unreadable_by_type(self) -> dict[str, int]:
        return {k: c.unreadable for k, c in sorted(self.counts.items()) if c.unreadable}

    def details(self) -> str:
        """One sentence an operator (or the app's support) reads: what could not be read."""
        parts = []
        for kind, n in self.unreadable_by_type.items():
            parts.append(f"{n} {kind} item(s) could not be read ({'; '.join(self.reasons.get(kind, []))})")
        for kind, reason in sorted(self.failures.items()):
            parts.append(f"{kind} failed: {reason}")
        return ". ".join(parts)


MAX_REASONS = 5


# --- claiming ------------------------------------------------------------------------------


def claim_sync(connection_id: str) -> str | None:
    """Take the connection's sync claim, or note that one more run is wanted and return None."""
    now = timezone.now()
    # A running sync renews its claim with every page it stores, so a claim this old belongs
    # to a process that died (a killed worker, a lost machine).
    stale = now - timedelta(seconds=settings.SYNC_CLAIM_TIMEOUT)
    claim = secrets.token_hex(8)
    taken = (
        Connection.objects.filter(pk=connection_id, status=ConnectionStatus.ACTIVE)
        .filter(Q(sync_claimed_at__isnull=True) | Q(sync_claimed_at__lt=stale))
        .update(sync_claimed_at=now, sync_claim=claim, sync_requested=False, sync_queued_at=None)
    )
    if taken:
        # Whoever held the claim before is gone (claims are exclusive): a run it left
        # "running" was cut off by a crash or a killed worker.
        SyncRun.objects.filter(connection_id=connection_id, outcome=SyncOutcome.RUNNING).update(
            outcome=SyncOutcome.FAILED, error="interrupted: the process running it stopped", finished_at=now
        )
        return claim
    Connection.objects.filter(pk=connection_id, status=ConnectionStatus.ACTIVE).update(sync_requested=True)
    return None


def release_sync(connection_id: str, claim: str) -> bool:
    """Give the claim back. True if another run was requested meanwhile (the caller keeps the
    claim and runs again)."""
    again = Connection.objects.filter(pk=connection_id, sync_claim=claim, sync_requested=True).update(
        sync_requested=False, sync_queued_at=None
    )
    if again:
        return True
    drop_claim(connection_id, claim)
    return False


def drop_claim(connection_id: str, claim: str) -> None:
    """Give the claim back whatever was requested (a failed or rescheduled run: the request is
    served by the retry or the schedule, and a kept claim would block every sync until stale)."""
    Connection.objects.filter(pk=connection_id, sync_claim=claim).update(sync_claimed_at=None, sync_claim="")


# --- credentials ---------------------------------------------------------------------------


def fresh_credentials(
    connection: Connection, plugin: SourcePlugin, http: ProviderHttp, *, rejected_token: str | None = None
) -> dict[str, Any]:
    """Credentials fit to use: refreshed when near expiry, or when the provider rejected
    `rejected_token`. Refreshes of one connection are serialized by a row lock; whoever waits
    finds the new token and uses it rather than refreshing again (a rotated refresh token can
    be spent only once). The lock is taken only while the run still holds the connection's
    claim and it is active, and a refusal is marked under it: a user who disconnected first
    stops the run (SyncCancelled), one who disconnects meanwhile waits for the lock and wins;
    either way no credentials are written back and the connection stays disconnected."""
    if rejected_token is None and not connection.needs_refresh():
        return connection.credentials
    refused: RefreshRefused | None = None
    with transaction.atomic():
        locked = _claimed(connection).select_for_update().first()
        if locked is None:
            raise SyncCancelled(CANCELLED)
        current = locked.credentials
        if (rejected_token is None and not locked.needs_refresh()) or (
            rejected_token is not None and current.get("access_token") != rejected_token
        ):
            result = current
        else:
            try:
                # Network I/O under the row lock, on purpose: it is what serializes refreshes.
                renewed = plugin.refresh(current, http)
            except RefreshRefused as exc:
                refused = exc
                result = {}
                mark_reauth_required(connection, str(exc))
            else:
                locked.set_credentials(renewed.data, renewed.expires_at)
                locked.save(update_fields=["credentials_sealed", "token_expires_at", "updated_at"])
                result = renewed.data
        connection.credentials_sealed = locked.credentials_sealed
        connection.token_expires_at = locked.token_expires_at
    if refused is not None:
        raise refused
    return result


def mark_reauth_required(connection: Connection, reason: str) -> bool:
    """An active connection whose refresh was refused needs the user again. One that is no
    longer active (disconnected) is left as it is. True if it changed."""
    from .services import audit_connection

    if not Connection.objects.filter(pk=connection.pk, status=ConnectionStatus.ACTIVE).update(
        status=ConnectionStatus.REAUTH_REQUIRED
    ):
        return False
    connection.status = ConnectionStatus.REAUTH_REQUIRED
    audit_connection("connection.reauth_required", connection, "system", None, reason=reason)
    notify_connection_event(connection, "source.reauth_required")
    return True


# --- the run -------------------------------------------------------------------------------


# A run of one change a provider announced (sources.push), in place of fetching every collection.
Targeted = Callable[[Connection, SourcePlugin, ProviderHttp, "RunTotals"], None]


def connection_sync(
    *,
    connection_id: str,
    http: ProviderHttp | None = None,
    targeted: Targeted | None = None,
    priority: str = SyncPriority.BACKFILL,
) -> SyncRun | None:
    """Sync one connection now. Returns the last run, or None if another sync holds the claim
    (that sync will run once more when it finishes). Raises RetryLater when the provider asks
    to wait, or its rate budget is spent for `priority` (sources.ratebudget); pages stored so far
    stay stored and the next run resumes from the cursor.
    `targeted`: a push run first (SyncKind.PUSH, interactive); a sync asked for meanwhile runs after it."""
    claim = claim_sync(connection_id)
    if claim is None:
        return None
    run: SyncRun | None = None
    try:
        while True:
            connection = Connection.objects.select_related("human__application").get(pk=connection_id)
            if not connection.is_active:
                break
            run, targeted = _run(connection, http or ProviderHttp(), targeted, priority), None
            finished = run.outcome in (SyncOutcome.SUCCEEDED, SyncOutcome.PARTIAL)
            if not finished or not release_sync(connection_id, claim):
                break
    finally:
        drop_claim(connection_id, claim)
    return run


def _run(
    connection: Connection, http: ProviderHttp, targeted: Targeted | None = None, priority: str = SyncPriority.BACKFILL
) -> SyncRun:
    plugin = get_plugin(connection.source)
    history = connection.history_synced_at is None
    kind = SyncKind.PUSH if targeted else SyncKind.HISTORY if history else SyncKind.INCREMENTAL
    priority = SyncPriority.INTERACTIVE if targeted else priority  # someone waits for a notified change
    http.priority = priority
    http.gate = budget_gate(connection, plugin, priority) if plugin is not None else None
    if http.gate is not None:
        # A spent budget is waited for before a run is even recorded: connections waiting for
        # their application's next window cost a look at its budget, nothing more.
        wait = http.gate.wait()
        if wait > 0 and (priority == SyncPriority.BACKFILL or wait > settings.PROVIDER_RETRY_MAX_WAIT):
            raise RetryLater(f"{plugin.name if plugin else ''}'s rate budget is spent for now", wait, waiting=True)
    run = SyncRun.objects.create(connection=connection, kind=kind, priority=priority)
    totals = RunTotals()
    outcome, error, retry_after, waiting = SyncOutcome.SUCCEEDED, "", None, False
    try:
        if plugin is None:
            raise PermanentError(f"source {connection.source!r} is not installed")
        if targeted is not None:
            targeted(connection, plugin, http, totals)
        else:
            _fetch_and_store(connection, plugin, http, history, totals, run)
        outcome, error = _judge(totals)
    except SyncCancelled as exc:
        outcome, error = SyncOutcome.CANCELLED, str(exc)
    except RefreshRefused as exc:
        outcome, error = SyncOutcome.REAUTH_REQUIRED, f"refresh refused: {exc}"
    except (RateLimited, TransientError) as exc:
        outcome, error = SyncOutcome.RETRYING, str(exc)
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        waiting = isinstance(exc, BudgetSpent)
    except (PermanentError, TokenRejected) as exc:
        outcome, error = SyncOutcome.FAILED, str(exc)
    except (OperationalError, InterfaceError) as exc:
        # The database went away mid-run (a restart, a failover, a killed backend): the page it
        # was writing rolled back with its cursor, so the run is tried again from the cursor on
        # a new connection.
        log.warning("sync of connection %s lost its database connection: %s", connection.pk, type(exc).__name__)
        db.close()
        outcome, error = SyncOutcome.RETRYING, f"database connection lost ({type(exc).__name__})"
    except Exception as exc:
        log.exception("sync of connection %s failed", connection.pk)
        outcome, error = SyncOutcome.FAILED, f"internal error: {type(exc).__name__}"
    now = timezone.now()
    run.outcome, run.error, run.finished_at = outcome, error, now
    run.counts, run.pages = totals.as_json(), totals.pages
    run.unreadable, run.failures = totals.reasons, totals.failures
    run.save(update_fields=["outcome", "error", "finished_at", "counts", "pages", "unreadable", "failures"])
    if totals.unreadable_by_type or totals.failures:
        log.warning("sync of connection %s (%s) was partial: %s", connection.pk, connection.source, totals.details())
    if outcome in (SyncOutcome.SUCCEEDED, SyncOutcome.PARTIAL) and targeted is None:  # a push run keeps the schedule
        interval = _interval(connection.source, plugin.sync_interval if plugin else None)
        if plugin is not None and push_healthy(plugin.slug, plugin.push_topics, plugin.data_types, now):
            interval = max(interval, settings.PUSH_RECONCILE_INTERVAL)  # polling only reconciles
        if totals.failures:  # the failed types are tried again sooner than the schedule
            interval = min(interval, settings.SYNC_FAILED_TYPE_RETRY)
        updates: dict[str, Any] = {"last_synced_at": now, "next_sync_at": now + timedelta(seconds=interval)}
        if history:
            updates["history_synced_at"] = now
        if not _claimed(connection).update(**updates):
            outcome, run.outcome, run.error = SyncOutcome.CANCELLED, SyncOutcome.CANCELLED, CANCELLED
            run.save(update_fields=["outcome", "error"])
    if totals.changed:
        refresh_statistics(totals.written - totals.analyzed_at)
        notify_data_updated(connection, run)
    if outcome == SyncOutcome.FAILED:
        notify_connection_event(connection, "sync.failed", error=error)
    if outcome == SyncOutcome.RETRYING:
        raise RetryLater(error, retry_after, waiting=waiting)
    return run


def _judge(totals: RunTotals) -> tuple[SyncOutcome, str]:
    """A finished run's outcome: succeeded; partial when items or types could not be read (a
    type none of whose items could be read has failed); failed when no type could be read (every
    collection failed, or read only unreadable items)."""
    for kind in totals.wholly_unreadable():
        totals.failed((kind,), "no item could be read")
    if not totals.failures and not totals.unreadable_by_type:
        return SyncOutcome.SUCCEEDED, ""
    if not totals.fetched - set(totals.failures):
        return SyncOutcome.FAILED, totals.details()
    return SyncOutcome.PARTIAL, totals.details()


CANCELLED = "stopped: the connection was disconnected or reconnected while the sync ran"


def _claimed(connection: Connection) -> QuerySet[Connection]:
    """The connection, if this run still holds its claim and it is still active."""
    return Connection.objects.filter(pk=connection.pk, sync_claim=connection.sync_claim, status=ConnectionStatus.ACTIVE)


def _interval(slug: str, plugin_default: int | None) -> int:
    """Seconds between two polls of a source: the operator's SOURCE_<SLUG>_SYNC_INTERVAL, else
    the plugin's own (a provider that asks to be polled less often), else SYNC_INTERVAL."""
    raw = source_settings(slug).get("SYNC_INTERVAL", "")
    if raw.isascii() and raw.isdigit() and int(raw) >= 60:
        return int(raw)
    return plugin_default or settings.SYNC_INTERVAL


def _fetch_and_store(
    connection: Connection, plugin: SourcePlugin, http: ProviderHttp, history: bool, totals: RunTotals, run: SyncRun
) -> None:
    """Each collection in turn. One that fails for good (or stays unreachable through the
    in-place retries) is recorded for its types and the others go on; its cursor did not move,
    so the next run tries it again. A rate limit stops the whole run: it is the app's budget."""
    holder = _Credentials(fresh_credentials(connection, plugin, http))
    for collection in plugin.collections(_context(connection, plugin, http, history, holder.value)):
        try:
            _fetch_collection(connection, plugin, http, history, totals, run, collection, holder)
            totals.fetched.update(collection.types)
        except TokenEndpointUnavailable:
            raise
        except (PermanentError, TransientError) as exc:
            if isinstance(exc, TransientError) and not isinstance(exc, PermanentError):
                reason = f"unreachable after retries: {exc}"
            else:
                reason = str(exc)
            log.warning("sync of connection %s: %s failed: %s", connection.pk, collection.name, reason)
            totals.failed(collection.types, reason[:300])


@dataclass
class _Credentials:
    value: dict[str, Any]
    # `totals.pages` when a rejected token was last refreshed in this run: a token refused again
    # before any page was stored with it is not refreshed again (no part accepts it).
    refreshed_at_page: int | None = None


def _context(
    connection: Connection, plugin: SourcePlugin, http: ProviderHttp, history: bool, credentials: dict[str, Any]
) -> SyncContext:
    return SyncContext(
        connection_id=connection.pk,
        external_user_id=connection.external_user_id,
        credentials=credentials,
        cursor=dict(connection.cursor),
        history=history,
        now=timezone.now(),
        http=http,
        settings=plugin.settings,
        priority=http.priority,
    )


def _fetch_collection(
    connection: Connection,
    plugin: SourcePlugin,
    http: ProviderHttp,
    history: bool,
    totals: RunTotals,
    run: SyncRun,
    collection: Collection,
    holder: _Credentials,
) -> None:
    # A rejected token is refreshed once; again only after pages were stored with the new one
    # (a long history outlives several token lifetimes), never twice in a row in one run.
    while True:
        ctx = _context(connection, plugin, http, history, holder.value)
        try:
            for page in plugin.fetch_collection(ctx, collection):
                connection.cursor = _store_page(connection, plugin, ctx, page, totals)
                ctx.cursor = dict(connection.cursor)
                if totals.pages % 20 == 0:
                    SyncRun.objects.filter(pk=run.pk).update(pages=totals.pages, counts=totals.as_json())
                if totals.pages % 100 == 0 and refresh_statistics(totals.written - totals.analyzed_at):
                    totals.analyzed_at = totals.written  # a long history is read while it is written
            return
        except TokenRejected as exc:
            if holder.refreshed_at_page == totals.pages:
                # Refused again right after a refresh: this part is not allowed with this token
                # (some providers answer a missing scope so), so it fails alone.
                raise PermanentError(f"refused a freshly refreshed token: {exc}") from exc
            holder.refreshed_at_page = totals.pages
            try:
                holder.value = fresh_credentials(
                    connection, plugin, http, rejected_token=str(holder.value.get("access_token", ""))
                )
            except TransientError as exc:
                raise TokenEndpointUnavailable(str(exc)) from exc


_TYPE = attrgetter("type")


@contextmanager
def _collected_after() -> Iterator[None]:
    """Python's cyclic garbage collector held off while a page is normalized and written, and
    run as usual after it. A page of minute readings makes tens of thousands of short-lived
    objects, none of them in cycles; collecting as they were made cost a fifth of the time
    of a history sync. What a page holds is bounded by the page; reference counting still
    frees everything at once."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _store_page(
    connection: Connection, plugin: SourcePlugin, ctx: SyncContext, page: Any, totals: RunTotals
) -> dict[str, Any]:
    """Write one page with its cursor in one transaction; returns the connection's new cursor."""
    with _collected_after():
        return _write_page(connection, plugin, ctx, page, totals)


def _write_page(
    connection: Connection, plugin: SourcePlugin, ctx: SyncContext, page: Any, totals: RunTotals
) -> dict[str, Any]:
    records = plugin.normalize(page, ctx)  # outside the transaction: pure computation
    kinds = Counter(map(_TYPE, records))
    for run in [item for item in records if type(item) is Readings]:
        kinds[run.type] += len(run) - 1
    unknown = [kind for kind in kinds if kind not in RECORD_TYPES]
    if unknown:  # a plugin bug: never stored where no route would serve it, and said so
        records = [r for r in records if r.type in RECORD_TYPES]
        for kind in unknown:
            page.skipped(f"{kind!r} is not a record type of sources/types.py", type=kind, count=kinds.pop(kind))
    for item in page.unreadable:
        totals.unreadable(item.type, item.reason, item.count)
        log.info("connection %s: %s %s item(s) unreadable: %s", connection.pk, item.count, item.type, item.reason)
    for kind, read in kinds.items():
        totals.of(kind).read += read
    now = timezone.now()
    cursor = {**connection.cursor, **(page.cursor or {})}
    with transaction.atomic():
        if db.vendor == "postgresql" and not settings.SYNC_DURABLE_PAGES:
            with db.cursor() as sql:
                sql.execute("SET LOCAL synchronous_commit = off")  # see SYNC_DURABLE_PAGES
        written = upsert_page(
            records, human_id=connection.human_id, connection_id=connection.pk, source=connection.source, now=now
        )
        for kind, c in written.counts.items():
            totals.add(kind, created=c.created, updated=c.updated)
        if page.window is not None:
            empties = _delete_missing(connection, page.window, records, totals, cursor.get(EMPTY_KEY) or {})
            cursor[EMPTY_KEY] = empties
        # The cursor moves in the same transaction as the page it describes, with the earliest
        # day stored and the claim's heartbeat (see claim_sync); written only while this run
        # still holds the claim, otherwise the page is rolled back.
        moved = cursor != connection.cursor
        heartbeat = now if connection.sync_claim else None
        if (moved or written.oldest or heartbeat) and not _move(
            connection, cursor if moved else None, written.oldest, heartbeat
        ):
            raise SyncCancelled(CANCELLED)
    totals.pages += 1
    return cursor


_MOVE = (
    f"UPDATE {Connection._meta.db_table} SET cursor = COALESCE(%s::jsonb, cursor),"
    " oldest_date = LEAST(oldest_date, %s::date), sync_claimed_at = COALESCE(%s, sync_claimed_at)"
    " WHERE id = %s AND sync_claim = %s AND status = %s"
)


def _move(
    connection: Connection, cursor: dict[str, Any] | None, oldest: date | None, heartbeat: datetime | None
) -> bool:
    """Move a claimed connection's cursor (where given), its earliest stored day back to
    `oldest` (where earlier) and its claim's heartbeat; False if the claim is gone. On
    PostgreSQL one hand-written statement (LEAST ignores NULLs): the ORM's compiled its
    expressions anew for every page."""
    if db.vendor != "postgresql":
        moved: dict[str, Any] = {}
        if cursor is not None:
            moved["cursor"] = cursor
        if oldest is not None:
            moved["oldest_date"] = Least(Coalesce(F("oldest_date"), Value(oldest)), Value(oldest))
        if heartbeat is not None:
            moved["sync_claimed_at"] = heartbeat
        return bool(_claimed(connection).update(**moved))
    with sql.cursor() as pg:
        pg.execute(
            _MOVE,
            (
                None if cursor is None else Jsonb(cursor),
                oldest,
                heartbeat,
                connection.pk,
                connection.sync_claim,
                ConnectionStatus.ACTIVE.value,
            ),
        )
        return pg.rowcount > 0


# The engine's own part of a connection's cursor: per type, the windows the provider last
# answered with nothing at all, as [[start, end], ...] in ISO 8601.
EMPTY_KEY = "~empty"
MAX_EMPTY_WINDOWS = 64


def _delete_missing(
    connection: Connection,
    window: Window,
    records: Sequence[Record | Readings],
    totals: RunTotals,
    empties: dict[str, Any],
) -> dict[str, Any]:
    """Delete what the provider no longer returns in `window`. An answer with nothing at all
    for a type is doubtful (a provider hiccup, a lapsed scope): what it would delete is held
    until the provider answers nothing for the same span again, in a later page or run."""
    empties = dict(empties)
    span = (window.start, window.end)
    for kind in (window.type, *window.also):
        seen = _ids(records, kind)
        before = [_span(item) for item in empties.get(kind, [])]
        overlapping = [old for old in before if old[0] < span[1] and span[0] < old[1]]
        rest = [old for old in before if old not in overlapping]
        if seen:
            deleted = delete_missing(
                connection_id=connection.pk, kind=kind, start=window.start, end=window.end, seen=seen
            )
            after = rest
        else:
            deleted = 0
            for old in overlapping:  # the second empty answer for this span: it is so
                start, end = max(span[0], old[0]), min(span[1], old[1])
                deleted += delete_missing(connection_id=connection.pk, kind=kind, start=start, end=end, seen=set())
            held = count_in_window(connection_id=connection.pk, kind=kind, start=window.start, end=window.end)
            totals.of(kind).held += held
            after = [*rest, span] if held else rest
        if deleted:
            totals.add(kind, deleted=deleted)
        if after:
            empties[kind] = [[a.isoformat(), b.isoformat()] for a, b in after[-MAX_EMPTY_WINDOWS:]]
        else:
            empties.pop(kind, None)
    return empties


def _ids(items: Sequence[Record | Readings], kind: str) -> set[str]:
    """The provider ids of a page's items of one type, as stored."""
    found: set[str] = set()
    for item in items:
        if item.type == kind:
            if isinstance(item, Readings):
                found.update(map(stored_id, item.external_ids))
            else:
                found.add(stored_id(item.external_id))
    return found


def _span(item: Any) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(item[0]), datetime.fromisoformat(item[1])
