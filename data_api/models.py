from django.db import models
from django.db.models import F, Q


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


class Series(models.Model):
    """The readings of one high-frequency type (heart rate, ...) from one connection on one
    local day, in one row: `payload` holds them compressed (data_api.series encodes it).

    A reading costs a few bytes instead of a row with its indexes, a day of them is written and
    read as one row, and the header columns let a list be positioned without opening a payload:
    `count`, the first and last reading's instant (epoch ms), and `stamps`, how many readings
    carry each (createdAt, updatedAt) pair, so filters on those times are counted exactly. A
    reading's id is `id << SLOT_BITS | slot`; its slot is given once and never reused.
    """

    human = models.ForeignKey("connect.Human", on_delete=models.CASCADE, related_name="+", db_index=False)
    connection = models.ForeignKey("sources.Connection", on_delete=models.CASCADE, related_name="+", db_index=False)
    source = models.CharField(max_length=64)
    type = models.CharField(max_length=32)
    local_day = models.DateField()
    count = models.IntegerField(default=0)
    first_ms = models.BigIntegerField()
    last_ms = models.BigIntegerField()
    # Oldest createdAt and newest updatedAt of its readings (epoch ms), for the batch feeds.
    created_ms = models.BigIntegerField()
    updated_ms = models.BigIntegerField()
    stamps = models.JSONField(default=list)  # [[created_ms, updated_ms, count], ...]
    next_slot = models.IntegerField(default=0)
    payload = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "type", "local_day"], name="series_natural_key"),
        ]
        indexes = [
            models.Index(fields=["human", "type", "local_day"], name="series_day_idx"),
            models.Index(fields=["type", "updated_ms"], name="series_updated_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.local_day} of {self.connection_id}"


class TypeVersion(models.Model):
    """How many times one Human's records of one type have changed (PostgreSQL only).

    Bumped by a statement-level trigger on data_api_record (migration 0002), so it moves with
    every write however it is made. Cached list totals and offset anchors are valid for one
    version; a changed version means they are recomputed once, on the next read.
    """

    human = models.ForeignKey("connect.Human", on_delete=models.CASCADE, related_name="+", db_index=False)
    type = models.CharField(max_length=32)
    version = models.BigIntegerField(default=1)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["human", "type"], name="typeversion_unique")]

    def __str__(self) -> str:
        return f"{self.type} v{self.version} of {self.human_id}"


class DayStat(models.Model):
    """The daily rollup of one Human's records of one type from one source on one local day
    (PostgreSQL only). Kept per source, so a day's summary can be one source's, never a sum
    across sources.

    The trigger marks a day stale by bumping `generation`; a read recomputes only stale days
    (`done_generation` < `generation`) from the (human, type, local_day) index, so a daily
    summary costs the same whatever the size of the history.
    """

    human = models.ForeignKey("connect.Human", on_delete=models.CASCADE, related_name="+", db_index=False)
    type = models.CharField(max_length=32)
    local_day = models.DateField()
    source = models.CharField(max_length=64, default="")
    generation = models.BigIntegerField(default=1)
    done_generation = models.BigIntegerField(default=0)
    count = models.IntegerField(default=0)
    stats = models.JSONField(default=dict)
    created_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["human", "type", "local_day", "source"], name="daystat_unique_source")
        ]
        indexes = [
            # Finds the few stale days of a (human, type) without reading the fresh ones.
            models.Index(
                fields=["human", "type"], name="daystat_stale_idx", condition=Q(generation__gt=F("done_generation"))
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.local_day} of {self.human_id} from {self.source}"


class ListCache(models.Model):
    """The total of one filtered list, valid for one TypeVersion (PostgreSQL only); its anchors
    turn a deep offset into a keyset seek plus a short skip."""

    human = models.ForeignKey("connect.Human", on_delete=models.CASCADE, related_name="+", db_index=False)
    type = models.CharField(max_length=32)
    filter_key = models.CharField(max_length=64)
    version = models.BigIntegerField(default=0)
    total = models.BigIntegerField(default=0)
    computed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["human", "type", "filter_key"], name="listcache_unique")]

    def __str__(self) -> str:
        return f"{self.type} list of {self.human_id} ({self.total})"


class ListAnchor(models.Model):
    """The (start_time, id) of row `ordinal * ANCHOR_EVERY` of a cached list, newest first."""

    cache = models.ForeignKey(ListCache, on_delete=models.CASCADE, related_name="+", db_index=False)
    ordinal = models.IntegerField()
    start_time = models.DateTimeField()
    record_id = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cache", "ordinal"], name="listanchor_unique")]

    def __str__(self) -> str:
        return f"anchor {self.ordinal} of {self.cache_id}"


class Notification(models.Model):
    """One webhook event for an Application, and its delivery state.

    `payload` is the event without `clientUserId`: the Human's external id is read when each
    attempt is sent, so this table never holds it, and the events of a deleted Human are dropped
    rather than sent. `sequence` (also in the payload) numbers a Human's events 1, 2, 3, ... in
    the order they were raised (EventCounter); 0 on rows that name no Human."""

    event_id = models.CharField(max_length=32, unique=True)
    application = models.ForeignKey("connect.Application", on_delete=models.CASCADE, related_name="notifications")
    # A plain id, like the audit log's: the row may outlive its Human (scrubbed, never sent).
    human_id = models.CharField(max_length=32, blank=True, default="", db_index=True)
    sequence = models.PositiveBigIntegerField(default=0)
    event_type = models.CharField(max_length=64)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    gave_up_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["human_id", "sequence"], condition=Q(sequence__gt=0), name="notification_human_sequence"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class EventCounter(models.Model):
    """The last `sequence` given to a Human's events. Taken with one upsert in the transaction
    that stores the event, which holds the row's lock until it commits: concurrent writers for
    one Human queue on it, and a rolled-back event gives its number back, so the numbers have no
    gaps. A plain id, like Notification's (a late event of a deleted Human still gets one)."""

    human_id = models.CharField(max_length=32, primary_key=True)
    last = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.human_id}: {self.last}"


class AttemptOutcome(models.TextChoices):
    DELIVERED = "delivered"  # answered 2xx, in time
    STATUS = "status"  # answered in time, but not 2xx
    TIMEOUT = "timeout"  # no whole answer before the deadline
    UNREACHABLE = "unreachable"  # no connection (refused, reset, unresolvable, TLS failure)
    NOT_SENT = "not_sent"  # nothing could be sent (no notify URL, a private address, the secret)
    ERROR = "error"  # a failure of this server while sending
    UNFINISHED = "unfinished"  # under way, or its worker stopped before it ended


class DeliveryAttempt(models.Model):
    """One attempt, written when it is claimed (unfinished) and completed when it ends, so
    even an attempt whose worker died is on record."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="delivery_attempts")
    number = models.PositiveIntegerField(default=0)  # 1 for the first attempt of its notification
    at = models.DateTimeField(auto_now_add=True)
    outcome = models.CharField(max_length=16, choices=AttemptOutcome.choices, default=AttemptOutcome.UNFINISHED)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"attempt {self.pk} of {self.notification_id}"
