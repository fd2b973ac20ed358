import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from humanapi_project import crypto


def new_connection_id() -> str:
    return secrets.token_hex(12)


class ConnectionStatus(models.TextChoices):
    ACTIVE = "active"
    REAUTH_REQUIRED = "reauth_required"
    DISCONNECTED = "disconnected"


class Connection(models.Model):
    """One Human's link to one source. Provider credentials are encrypted at rest."""

    id = models.CharField(primary_key=True, max_length=32, default=new_connection_id, editable=False)
    human = models.ForeignKey("connect.Human", on_delete=models.CASCADE, related_name="connections")
    source = models.CharField(max_length=64)
    status = models.CharField(max_length=32, choices=ConnectionStatus.choices, default=ConnectionStatus.ACTIVE)
    external_user_id = models.CharField(max_length=255, blank=True, default="")
    credentials_sealed = models.TextField(blank=True, default="")
    token_expires_at = models.DateTimeField(null=True, blank=True)
    # The plugin's own position in the provider's data, per data type.
    cursor = models.JSONField(default=dict, blank=True)
    connected_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    history_synced_at = models.DateTimeField(null=True, blank=True)
    oldest_date = models.DateField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    next_sync_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Claimed by the one sync that runs; a request while it runs sets sync_requested instead.
    sync_claimed_at = models.DateTimeField(null=True, blank=True)
    sync_claim = models.CharField(max_length=32, blank=True, default="")
    sync_requested = models.BooleanField(default=False)
    # When the oldest sync still waiting to start was asked for (enqueued, or due for beat);
    # cleared when a run takes the claim. /metrics reports the queue's lag from it.
    sync_queued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["human", "source"], name="connection_unique_source")]
        # A provider's notification names its user: the connections it concerns are found by it.
        indexes = [models.Index(fields=["source", "external_user_id"], name="connection_source_user_idx")]

    def __str__(self) -> str:
        return f"{self.source} of {self.human_id}"

    @property
    def credentials(self) -> dict[str, Any]:
        return dict(crypto.decrypt_json(self.credentials_sealed) or {})

    def set_credentials(self, value: dict[str, Any], expires_at: datetime | None) -> None:
        self.credentials_sealed = crypto.encrypt_json(value) if value else ""
        self.token_expires_at = expires_at

    def needs_refresh(self, now: datetime | None = None, margin: int = 300) -> bool:
        if self.token_expires_at is None:
            return False
        return self.token_expires_at <= (now or timezone.now()) + timedelta(seconds=margin)

    @property
    def is_active(self) -> bool:
        return self.status == ConnectionStatus.ACTIVE


class SyncKind(models.TextChoices):
    HISTORY = "history"
    INCREMENTAL = "incremental"
    PUSH = "push"  # what a provider's notification named, fetched alone


class SyncOutcome(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # finished, but some items or types could not be read
    FAILED = "failed"
    RETRYING = "retrying"
    REAUTH_REQUIRED = "reauth_required"
    CANCELLED = "cancelled"  # the connection was disconnected or reconnected while it ran


class SyncPriority(models.TextChoices):
    """Who waits for a sync: a person ("sync now", a provider's notification) or nobody (history,
    the schedule). Interactive work may use the reserved share of the provider's rate budget."""

    INTERACTIVE = "interactive"
    BACKFILL = "backfill"


class SyncRun(models.Model):
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="sync_runs")
    kind = models.CharField(max_length=16, choices=SyncKind.choices)
    priority = models.CharField(max_length=16, choices=SyncPriority.choices, default=SyncPriority.BACKFILL)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=SyncOutcome.choices, default=SyncOutcome.RUNNING)
    # {"activities": {"created": n, "updated": n, "deleted": n}, ...}
    counts = models.JSONField(default=dict, blank=True)
    pages = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    # {"shifts": ["start_date.timestamp is missing", ...]}: the first reasons, per type
    unreadable = models.JSONField(default=dict, blank=True)
    # {"timeclocks": "Humanity answered 403 ..."}: types whose collection failed in this run
    failures = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["connection", "-started_at"], name="syncrun_conn_started_idx"),
            # /metrics reads only the runs that finished since its last fold (humanapi_project.metrics).
            models.Index(fields=["finished_at"], name="syncrun_finished_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} sync of {self.connection_id}: {self.outcome}"


class PushStatus(models.TextChoices):
    ABSENT = "absent"  # not made yet
    PENDING = "pending"  # being made: the provider's verification request is expected
    ACTIVE = "active"
    FAILED = "failed"  # the provider refused it or it vanished; made again by the next check
    UNSUPPORTED = "unsupported"  # the provider offers no such subscription


class PushSubscription(models.Model):
    """One subscription this server keeps at a provider for the whole application (not per
    user): Strava's one, each of Oura's per data type and event. The verify token the provider
    echoes back is stored only as its SHA-256."""

    source = models.CharField(max_length=64)
    topic = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(max_length=16, choices=PushStatus.choices, default=PushStatus.ABSENT)
    provider_id = models.CharField(max_length=128, blank=True, default="")
    callback_url = models.CharField(max_length=500, blank=True, default="")
    verify_token_hash = models.CharField(max_length=64, blank=True, default="")
    verified_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # Set by every change of status: a pending one older than PUSH_PENDING_TIMEOUT is taken over.
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "topic"], name="push_subscription_unique_topic")]

    def __str__(self) -> str:
        return f"{self.source} {self.topic or 'subscription'}: {self.status}"

    def is_live(self, now: datetime) -> bool:
        return self.status == PushStatus.ACTIVE and (self.expires_at is None or self.expires_at > now)


class PushEvent(models.Model):
    """A notification taken (its delivery key), so a replay or a provider's retry of it changes
    nothing. Kept a day (pruned by beat), well past the replay window."""

    source = models.CharField(max_length=64)
    key = models.CharField(max_length=64)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "key"], name="push_event_unique_key")]

    def __str__(self) -> str:
        return f"{self.source} notification {self.key[:12]}"


def push_healthy(
    source: str, topics: Iterable[tuple[str, tuple[str, ...]]], data_types: Iterable[str], now: datetime
) -> bool:
    """Whether `source`'s notifications can be relied on, so polling is only a reconciliation:
    every subscription it keeps is active, verified and unexpired (those the provider doesn't
    offer aside), together they announce every type of the source, and one is fresh or a
    notification came within PUSH_RECONCILE_INTERVAL."""
    wanted = list(topics)
    if not wanted:
        return False
    rows = {row.topic: row for row in PushSubscription.objects.filter(source=source)}
    recent = now - timedelta(seconds=settings.PUSH_RECONCILE_INTERVAL)
    covered: set[str] = set()
    fresh = False
    for key, types in wanted:
        row = rows.get(key)
        if row is not None and row.status == PushStatus.UNSUPPORTED:
            continue
        if row is None or not row.is_live(now) or row.verified_at is None:
            return False
        covered.update(types)
        fresh = fresh or row.verified_at > recent or (row.last_event_at is not None and row.last_event_at > recent)
    return fresh and set(data_types) <= covered


class RateBudget(models.Model):
    """One provider application's shared rate budget (or one provider user's, for per-user
    limits): `key` is the source, the client id and, per user, a digest of the provider's user
    id; `state` the requests counted per window, the limits the provider reported and until
    when a 429 emptied it (`sources.ratebudget`)."""

    key = models.CharField(max_length=255, primary_key=True)
    state = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.key
