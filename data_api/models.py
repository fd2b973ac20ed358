from django.db import models


class Record(models.Model):
    """One normalized record of any type (a reading, an activity, a sleep, a shift, ...).

    The engine writes it, keyed by (connection, type, external_id); the Data API reads it by
    (human, type, time). `start_time` is the reading's timestamp or the period's start;
    `local_day` is the day in the user's local time (start_time + tz_offset), for daily routes
    and summaries. Type-specific fields live in `data`, with Human API's names.
    """

    human = models.ForeignKey("connect.Human", on_delete=models.CASCADE, related_name="+", db_index=False)
    connection = models.ForeignKey("sources.Connection", on_delete=models.CASCADE, related_name="+", db_index=False)
    source = models.CharField(max_length=64)
    type = models.CharField(max_length=32)
    external_id = models.CharField(max_length=255)
    start_time = models.DateTimeField()
    end_time = models.DateTimeField(null=True, blank=True)
    tz_offset = models.SmallIntegerField(default=0, help_text="minutes east of UTC")
    local_day = models.DateField()
    value = models.FloatField(null=True, blank=True)
    data = models.JSONField(default=dict)
    source_data = models.JSONField(default=dict)
    content_hash = models.CharField(max_length=32)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "type", "external_id"], name="record_natural_key"),
        ]
        indexes = [
            # Lists: newest first with a stable tie-break, per human and type.
            models.Index(fields=["human", "type", "-start_time", "-id"], name="record_list_idx"),
            # Daily routes and summaries.
            models.Index(fields=["human", "type", "local_day"], name="record_day_idx"),
            # updated_since / batch queries of the Application API.
            models.Index(fields=["type", "updated_at"], name="record_updated_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.external_id}"


class Notification(models.Model):
    """One webhook event for an Application, and its delivery state."""

    event_id = models.CharField(max_length=32, unique=True)
    application = models.ForeignKey("connect.Application", on_delete=models.CASCADE, related_name="notifications")
    event_type = models.CharField(max_length=64)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    gave_up_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class DeliveryAttempt(models.Model):
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="delivery_attempts")
    at = models.DateTimeField(auto_now_add=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"attempt {self.pk} of {self.notification_id}"
