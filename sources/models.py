import secrets
from datetime import datetime, timedelta
from typing import Any

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

    class Meta:
        constraints = [models.UniqueConstraint(fields=["human", "source"], name="connection_unique_source")]

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


class SyncOutcome(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # finished, but some items or types could not be read
    FAILED = "failed"
    RETRYING = "retrying"
    REAUTH_REQUIRED = "reauth_required"
    CANCELLED = "cancelled"  # the connection was disconnected or reconnected while it ran


class SyncRun(models.Model):
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="sync_runs")
    kind = models.CharField(max_length=16, choices=SyncKind.choices)
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
        indexes = [models.Index(fields=["connection", "-started_at"], name="syncrun_conn_started_idx")]

    def __str__(self) -> str:
        return f"{self.kind} sync of {self.connection_id}: {self.outcome}"
