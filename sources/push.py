"""Push notifications from providers (webhooks in).

A provider calls `PUBLIC_BASE_URL/hooks/<slug>` when one of its users' data changes. The
request is authenticated and read by the source's plugin (`push_read`), answered at once, and
each change it announces is handed to a worker, which fetches what changed (`fetch_changed`)
through the sync engine: the connection's claim, the idempotent upsert, a `push` SyncRun, the
app's webhooks. Nothing in a notification is trusted beyond the pointer it is: the object is
always fetched afresh, a deletion is believed when the provider no longer has the object (or no
longer lists it in a span the notification said changed), and a withdrawn access when the
provider refuses the connection's credentials.

The subscriptions themselves are made, checked, repaired and renewed by `push_maintain`, at
worker start and by beat: one per application (Strava, Oura), or one per connection made with
the user's token (Withings, `push_per_user`), whose callback URL carries a secret of this server
derived from SECRET_KEY, since the provider signs nothing. While they are healthy, polling is
only a reconciliation (PUSH_RECONCILE_INTERVAL, see `sources.models.push_healthy`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from connect.models import Actor
from connect.ratelimit import hit, limit
from data_api.models import Record as StoredRecord

from .base import (
    DEAUTHORIZE,
    SUBSCRIBE,
    Change,
    PermanentError,
    PushRefused,
    PushTopic,
    PushUnsupported,
    RateLimited,
    RefreshRefused,
    SourceError,
    SourcePlugin,
    Subscribed,
    TokenRejected,
    TransientError,
    Window,
)
from .http import ProviderHttp
from .models import Connection, ConnectionStatus, PushEvent, PushStatus, PushSubscription, SyncRun
from .registry import enabled_plugins, enabled_slugs, get_plugin
from .services import connection_disconnect
from .sync import (
    CANCELLED,
    RunTotals,
    SyncCancelled,
    _claimed,
    _context,
    _store_page,
    connection_sync,
    fresh_credentials,
)
from .types import SERIES
from .upsert import delete_missing, stored_id

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024  # bytes; a notification is a few hundred
RENEW_BEFORE = timedelta(days=14)  # a subscription expiring sooner is renewed
PENDING_TIMEOUT = timedelta(minutes=5)  # a creation left pending this long (a killed worker) is taken over
UNSUPPORTED_RETRY = timedelta(days=1)  # a topic the provider refused is asked for again this often
SEEN_FOR = timedelta(days=1)  # delivery keys are kept this long
SUBSCRIBED_KEY = "~push"  # the engine's part of a per-user source's cursor: the callback it subscribed
# A change whose notification names a span in which data was created, changed or deleted without
# saying which (Withings' categories). Like a `delete`, it vouches for every window re-read for it:
# one that comes back empty is certain, not one of the doubtful empty answers polling waits on.
SPAN = "span"
CERTAIN_WINDOWS = frozenset({"delete", SPAN})


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def push_plugin(slug: str) -> SourcePlugin | None:
    """The source's plugin if it takes notifications and is configured here."""
    plugin = get_plugin(slug) if slug in enabled_slugs() else None
    if plugin is None or not plugin.push_configured() or not plugin.is_available():
        return None
    return plugin


# --- the hook: verification and notifications ------------------------------------------------


def hook_verify(plugin: SourcePlugin, query: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """A provider checking the callback before it makes a subscription: answered with its
    challenge only if it offers the verify token of one of ours (per-user sources: the
    callback's own secret). (status, JSON to answer)"""
    if plugin.push_per_user:
        if not callback_secret_ok(plugin.slug, query):
            log.warning("push: %s verification request without our callback secret; refused", plugin.slug)
            return 403, {"message": "unknown callback"}
        PushSubscription.objects.filter(source=plugin.slug).update(verified_at=timezone.now())
        return 200, {}
    asked = plugin.push_challenge(query)
    if asked is None:
        return 400, {"message": "not a verification request"}
    token, answer = asked
    offered = token_hash(token)
    for row in PushSubscription.objects.filter(source=plugin.slug).exclude(verify_token_hash=""):
        if hmac.compare_digest(row.verify_token_hash, offered):
            PushSubscription.objects.filter(pk=row.pk).update(verified_at=timezone.now())
            return 200, answer
    log.warning("push: %s verification request with a verify token that is not ours; refused", plugin.slug)
    return 403, {"message": "unknown verify token"}


def hook_receive(
    plugin: SourcePlugin, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]
) -> tuple[int, dict[str, Any]]:
    """A notification: authenticated, deduplicated, and each change handed to a worker. What is
    refused or unknown changes nothing. (status, JSON to answer)"""
    now = timezone.now()
    if plugin.push_per_user and not callback_secret_ok(plugin.slug, query):
        log.warning("push: %s notification without our callback secret; refused", plugin.slug)
        return 401, {"message": "the callback URL's token is missing or wrong"}
    try:
        batch = plugin.push_read(headers=headers, body=body, now=now, max_age=settings.PUSH_REPLAY_WINDOW)
    except PushRefused as exc:
        log.warning("push: %s notification refused (%s): %s", plugin.slug, exc.status, exc)
        return exc.status, {"message": str(exc)}
    ours = PushSubscription.objects.filter(source=plugin.slug, status=PushStatus.ACTIVE)
    if batch.verification:
        ours.update(verified_at=now)
        return 201, {}
    if batch.subscription:
        ours = ours.filter(provider_id=batch.subscription)
        if not ours.exists():
            # Strava signs nothing for sure: its subscription id is what ties an event to us.
            log.warning("push: %s notification for a subscription that is not ours; ignored", plugin.slug)
            return 200, {"received": 0}
    try:
        with transaction.atomic():
            PushEvent.objects.create(source=plugin.slug, key=batch.key, received_at=now)
    except IntegrityError:
        log.info("push: %s notification already taken (a retry or a replay); ignored", plugin.slug)
        return 200, {"received": 0, "duplicate": True}
    ours.update(last_event_at=now)
    handed = 0
    for notice in batch.notices:
        connections = Connection.objects.filter(
            source=plugin.slug, external_user_id=notice.owner, status=ConnectionStatus.ACTIVE
        ).values_list("pk", flat=True)
        if not connections:
            log.info("push: %s notification for a user with no active connection here; ignored", plugin.slug)
        for connection_id in connections:
            if not hit(limit("push-connection"), connection_id).allowed:
                # One sync instead of a fetch per change: the budget is spent for every user.
                log.info(
                    "push: %s connection %s over its notification limit; synced instead", plugin.slug, connection_id
                )
                Connection.objects.filter(pk=connection_id, status=ConnectionStatus.ACTIVE).update(next_sync_at=now)
                continue
            enqueue_push(connection_id, notice.change)
            handed += 1
    return 200, {"received": handed}


def subscribe_on_connect(connection_id: str, slug: str) -> None:
    """A connection of a per-user source (Withings) is subscribed as soon as it is made, not at
    beat's next check of the subscriptions (PUSH_CHECK_INTERVAL): until then it would only be
    polled. The subscription runs on the interactive queue, under the connection's claim."""
    if not _push_set_up():
        return
    plugin = push_plugin(slug)
    if plugin is None or not plugin.push_per_user or plugin.push_by_operator or _unreachable(callback_url(slug)):
        return
    enqueue_push(connection_id, Change("", "", SUBSCRIBE))


def _push_set_up() -> bool:
    """Notifications are taken here: on, with a public address providers can call back."""
    return settings.PUSH_ENABLED and bool(settings.PUBLIC_BASE_URL)


def _unreachable(url: str) -> bool:
    """A plain-http callback, which providers never call (allowed only for emulators)."""
    return url.startswith("http://") and not settings.ALLOW_HTTP_PROVIDERS


def enqueue_push(connection_id: str, change: Change) -> None:
    """Hand a change to the workers. A broker that can't be reached makes the connection due
    for beat's next full sync instead: the change is not lost."""
    from .tasks import push_sync

    try:
        push_sync.delay(connection_id, change.as_json())
    except Exception:
        log.warning("could not enqueue a push sync of connection %s; beat will sync it", connection_id, exc_info=True)
        Connection.objects.filter(pk=connection_id, status=ConnectionStatus.ACTIVE).update(next_sync_at=timezone.now())


# --- the worker: one change through the engine ------------------------------------------------


def connection_push(*, connection_id: str, change: Change, http: ProviderHttp | None = None) -> SyncRun | None:
    """Fetch and store what `change` names, as a `push` run under the connection's claim. None if
    another sync holds the claim: it runs once more when it finishes (`sync_requested`), and the
    caller retries the change after it."""
    return connection_sync(connection_id=connection_id, http=http, targeted=partial(_apply, change=change))


def _apply(
    connection: Connection, plugin: SourcePlugin, http: ProviderHttp, totals: RunTotals, *, change: Change
) -> None:
    if change.operation == DEAUTHORIZE:
        _deauthorize(connection, plugin, http)
        return
    if change.operation == SUBSCRIBE:
        _subscribe_user(connection, plugin, http)
        return
    credentials = fresh_credentials(connection, plugin, http)
    for attempt in (1, 2):
        ctx = _context(connection, plugin, http, False, credentials)
        try:
            for page in plugin.fetch_changed(ctx, change):
                kinds = (page.window.type, *page.window.also) if page.window is not None else ()
                held = {kind: totals.of(kind).held for kind in kinds}
                connection.cursor = _store_page(connection, plugin, ctx, page, totals)
                ctx.cursor = dict(connection.cursor)
                _delete_gone(connection, page.gone, totals)
                if change.operation in CERTAIN_WINDOWS and page.window is not None:
                    newly = [kind for kind in kinds if totals.of(kind).held > held[kind]]
                    _delete_confirmed(connection, page.window, newly, totals)
            totals.fetched.update(totals.counts)
            return
        except TokenRejected:
            if attempt == 2:
                raise
            rejected = str(credentials.get("access_token", ""))
            credentials = fresh_credentials(connection, plugin, http, rejected_token=rejected)


def _delete_gone(connection: Connection, gone: list[tuple[str, str]], totals: RunTotals) -> None:
    """Delete the records a notification's object made, now that the provider no longer has it;
    written only while the run holds the claim. A record is the object's by its external id, or,
    where none has that id, by the `id` its sourceData keeps: records filed under something else
    than the provider's object id (Oura's daily totals, under their day) are found so. A record
    of that day since made of another object (one that replaced it) keeps another id: it stays."""
    if not gone:
        return
    with transaction.atomic():
        if not _claimed(connection).update(sync_claimed_at=timezone.now()):
            raise SyncCancelled(CANCELLED)
        for kind, external_id in gone:
            if kind in SERIES:  # no provider announces single readings of a series
                continue
            mine = StoredRecord.objects.filter(connection_id=connection.pk, type=kind)
            deleted, _ = mine.filter(external_id=stored_id(external_id)).delete()
            if not deleted:
                deleted, _ = mine.filter(source_data__id=external_id).delete()
            if deleted:
                totals.add(kind, deleted=deleted)


def _delete_confirmed(connection: Connection, window: Window, kinds: list[str], totals: RunTotals) -> None:
    """A window the provider announced a deletion in (or a change of any kind, `SPAN`) came back
    empty: certain, not one of the doubtful empty answers the engine holds until they repeat.
    What it held is deleted."""
    if not kinds:
        return
    with transaction.atomic():
        if not _claimed(connection).update(sync_claimed_at=timezone.now()):
            raise SyncCancelled(CANCELLED)
        for kind in kinds:
            deleted = delete_missing(
                connection_id=connection.pk, kind=kind, start=window.start, end=window.end, seen=set()
            )
            totals.of(kind).held -= deleted
            totals.add(kind, deleted=deleted)


def _deauthorize(connection: Connection, plugin: SourcePlugin, http: ProviderHttp) -> None:
    """A notification says the user withdrew access: believed only if the provider now refuses
    the connection's credentials. Then the connection is disconnected (its data stays)."""
    try:
        credentials = fresh_credentials(connection, plugin, http)
        still = plugin.authorized(_context(connection, plugin, http, False, credentials))
    except RefreshRefused:
        still = False
    if still:
        log.warning(
            "push: %s says connection %s withdrew access, but the token works; kept", plugin.slug, connection.pk
        )
        return
    reason = f"the user withdrew access at {plugin.name}"
    connection_disconnect(connection=connection, actor=Actor.SYSTEM, request=None, reason=reason)
    raise SyncCancelled(f"disconnected: {reason}")


def _subscribe_user(connection: Connection, plugin: SourcePlugin, http: ProviderHttp) -> None:
    """(per-user sources) Subscribe the callback with the user's token; the callback subscribed
    is noted (as a digest) in the connection's cursor, so it is made again only when it moves."""
    url = callback_url(plugin.slug, per_user=True)
    credentials = fresh_credentials(connection, plugin, http)
    try:
        plugin.push_subscribe_user(_context(connection, plugin, http, False, credentials), url)
    except (PermanentError, TransientError, RateLimited) as exc:
        # Not the app's concern (it is still polled): the operator reads it on the source's row,
        # and the next check tries again.
        log.warning("push: %s refused to subscribe connection %s: %s", plugin.name, connection.pk, exc)
        error = f"connection {connection.pk}: {exc}"[:300]
        PushSubscription.objects.filter(source=plugin.slug, topic="").update(error=error)
        return
    with transaction.atomic():
        cursor = {**Connection.objects.get(pk=connection.pk).cursor, SUBSCRIBED_KEY: token_hash(url)[:16]}
        if not _claimed(connection).update(cursor=cursor, sync_claimed_at=timezone.now()):
            raise SyncCancelled(CANCELLED)
    connection.cursor = cursor


# --- the subscriptions --------------------------------------------------------------------------


def callback_secret(slug: str, key: str | None = None) -> str:
    """The secret a per-user source's callback URL carries: derived from SECRET_KEY, never stored."""
    return salted_hmac("sources.push.callback", slug, secret=key or settings.SECRET_KEY, algorithm="sha256").hexdigest()


def callback_secret_ok(slug: str, query: Mapping[str, str]) -> bool:
    """The `token` of a request to the callback is the secret (of SECRET_KEY, or of one of
    SECRET_KEY_FALLBACKS while subscriptions made before a key rotation are remade)."""
    offered = str(query.get("token", "")).encode("utf-8", "replace")
    keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return any(hmac.compare_digest(callback_secret(slug, key).encode(), offered) for key in keys)


def callback_url(slug: str, *, per_user: bool = False) -> str:
    url = f"{settings.PUBLIC_BASE_URL}/hooks/{slug}"
    return f"{url}?token={callback_secret(slug)}" if per_user else url


def push_maintain(http: ProviderHttp | None = None) -> dict[str, str]:
    """Make sure every configured source that takes notifications has its subscriptions at the
    provider, pointing here: made when missing, remade when they vanished or moved, renewed
    before they expire. Returns each source's state, for the log."""
    if not _push_set_up():
        return {}
    done: dict[str, str] = {}
    for plugin in enabled_plugins():
        if not plugin.push_configured():
            continue
        url = callback_url(plugin.slug)
        if _unreachable(url):
            done[plugin.slug] = "skipped: PUBLIC_BASE_URL is plain http (providers call https only)"
            continue
        try:
            if plugin.push_per_user or plugin.push_by_operator:
                done[plugin.slug] = _maintain_per_user(plugin, url)
                continue
            _maintain(plugin, url, http or ProviderHttp())
            done[plugin.slug] = "checked"
        except SourceError as exc:
            log.warning("push: could not check the %s subscriptions: %s", plugin.slug, exc)
            done[plugin.slug] = f"failed: {exc}"
    return done


def _maintain(plugin: SourcePlugin, url: str, http: ProviderHttp) -> None:
    listed = {s.provider_id: s for s in plugin.push_list(http)}
    taken = set(
        PushSubscription.objects.filter(source=plugin.slug)
        .exclude(provider_id="")
        .values_list("provider_id", flat=True)
    )
    now = timezone.now()
    for topic in plugin.push_topics:
        row, _ = PushSubscription.objects.get_or_create(source=plugin.slug, topic=topic.key)
        if row.status == PushStatus.UNSUPPORTED and now - row.updated_at < UNSUPPORTED_RETRY:
            continue
        mine = listed.get(row.provider_id) if row.provider_id else None
        if row.status == PushStatus.ACTIVE and mine is not None and row.callback_url == url:
            _renew_if_due(plugin, row, http)
            continue
        found = next(
            (
                s
                for s in listed.values()
                if s.callback_url == url
                and s.topic in ("", topic.key)
                and s.provider_id not in taken - {row.provider_id}
            ),
            None,
        )
        if found is not None:  # the provider has one for this topic here (made before state was lost)
            _adopt(row, found, url)
            taken.add(found.provider_id)
            _renew_if_due(plugin, row, http)
            continue
        if mine is not None:  # ours, at an address that is no longer this server's
            plugin.push_unsubscribe(row.provider_id, http)
        made = _create(plugin, row, topic, url, http)
        if made is not None:
            taken.add(made)


def _maintain_per_user(plugin: SourcePlugin, url: str) -> str:
    """The source's row (its state: verified when the provider checks the callback, the time
    of the last notification), and (per-user sources) a subscription run for each active
    connection whose cursor doesn't note the current callback (new ones, and all of them when
    the callback moved). A subscription the operator makes is only answered."""
    now = timezone.now()
    row, _ = PushSubscription.objects.get_or_create(source=plugin.slug, topic="")
    if row.status != PushStatus.ACTIVE or row.callback_url != url:
        PushSubscription.objects.filter(pk=row.pk).update(
            status=PushStatus.ACTIVE, callback_url=url, verified_at=None, error="", updated_at=now
        )
    if plugin.push_by_operator:
        return f"answered at {url} (the subscriber is made at {plugin.name} by the operator)"
    current = token_hash(callback_url(plugin.slug, per_user=True))[:16]
    due = 0
    for connection in Connection.objects.filter(source=plugin.slug, status=ConnectionStatus.ACTIVE).only("cursor"):
        if connection.cursor.get(SUBSCRIBED_KEY) != current:
            enqueue_push(connection.pk, Change("", "", SUBSCRIBE))
            due += 1
    return f"checked; {due} connection(s) to subscribe"


def _adopt(row: PushSubscription, found: Subscribed, url: str) -> None:
    now = timezone.now()
    PushSubscription.objects.filter(pk=row.pk).update(
        status=PushStatus.ACTIVE,
        provider_id=found.provider_id,
        callback_url=url,
        expires_at=found.expires_at,
        verified_at=row.verified_at or now,  # the provider verified it when it was made
        error="",
        updated_at=now,
    )
    row.refresh_from_db()


def _create(plugin: SourcePlugin, row: PushSubscription, topic: PushTopic, url: str, http: ProviderHttp) -> str | None:
    """Make one subscription. The row is claimed first (a conditional update), so two processes
    never make the same one; the verify token is stored (hashed) before the provider calls back."""
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    claimed = (
        PushSubscription.objects.filter(pk=row.pk)
        .filter(~Q(status=PushStatus.PENDING) | Q(updated_at__lt=now - PENDING_TIMEOUT))
        .update(
            status=PushStatus.PENDING,
            verify_token_hash=token_hash(token),
            callback_url=url,
            provider_id="",
            verified_at=None,
            error="",
            updated_at=now,
        )
    )
    if not claimed:
        return None
    made: Subscribed | None = None
    try:
        made = plugin.push_subscribe(topic, callback_url=url, verify_token=token, http=http)
        outcome: dict[str, Any] = {"status": PushStatus.ACTIVE, "provider_id": made.provider_id}
        outcome["expires_at"] = made.expires_at
        log.info("push: %s subscription %s made", plugin.slug, topic.key or "(app)")
    except PushUnsupported as exc:
        outcome = {"status": PushStatus.UNSUPPORTED, "error": str(exc)[:300]}
    except SourceError as exc:
        log.warning("push: %s refused the %s subscription: %s", plugin.name, topic.key or "app", exc)
        outcome = {"status": PushStatus.FAILED, "error": str(exc)[:300]}
    PushSubscription.objects.filter(pk=row.pk, status=PushStatus.PENDING).update(**outcome, updated_at=timezone.now())
    return made.provider_id if made is not None and outcome["status"] == PushStatus.ACTIVE else None


def _renew_if_due(plugin: SourcePlugin, row: PushSubscription, http: ProviderHttp) -> None:
    now = timezone.now()
    if row.expires_at is None or row.expires_at - now > RENEW_BEFORE:
        return
    try:
        expires = plugin.push_renew(row.provider_id, http)
    except SourceError as exc:  # gone at the provider: made again by the next check
        log.warning("push: %s subscription %s could not be renewed: %s", plugin.slug, row.topic, exc)
        PushSubscription.objects.filter(pk=row.pk).update(
            status=PushStatus.FAILED, error=str(exc)[:300], updated_at=now
        )
        return
    PushSubscription.objects.filter(pk=row.pk).update(expires_at=expires, updated_at=now)


def prune_push_events() -> int:
    deleted, _ = PushEvent.objects.filter(received_at__lt=timezone.now() - SEEN_FOR).delete()
    return deleted
