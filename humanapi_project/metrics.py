"""Prometheus metrics, read from the database when they are scraped.

Every web process and every worker writes what happened to the same tables (sync runs, webhook
delivery attempts, connections, notifications), so whichever gunicorn process answers a scrape
reports the same numbers, with no per-process registry to merge. The 429s served are the one
count no table held: each is added to a shared tally (Redis when RATE_LIMIT_REDIS_URL is set,
where the rate limits themselves count, else PostgreSQL).

Aggregating every run ever recorded at each scrape would grow with the history (5 to 8 s at a
million runs), so beat folds what can no longer change into `Tally` rows every minute (`fold`):
runs that finished, and attempts made, more than FOLD_LAG ago. A scrape reads the tallies with
their watermarks in one statement, then only the rows after the watermarks (tens of ms).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Max,
    Min,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from data_api.models import AttemptOutcome, DeliveryAttempt, Notification
from sources.models import Connection, ConnectionStatus, SyncRun
from sources.types import RECORD_TYPES

from .models import Tally

# A finished run may still turn from succeeded to cancelled, and an attempt is written when it is
# claimed and completed when it ends: rows younger than this are read live, never folded.
FOLD_LAG = timedelta(minutes=5)
# Upper bounds of the sync duration histogram, in seconds.
BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
CHANGES = ("created", "updated", "deleted")

RUNS_MARK = "mark.sync_runs"  # microseconds since the epoch: runs finished before it are folded
ATTEMPTS_MARK = "mark.delivery_attempts"  # attempts with an id up to it are folded
RATE_LIMITED = "http.rate_limited"
REDIS_RATE_LIMITED = "hapi:metrics:rate_limited"


# --- writing -------------------------------------------------------------------------------


def _add(totals: Mapping[str, int]) -> None:
    """Add to tallies, creating them as needed; one statement, safe against concurrent adds."""
    rows = [(key, value) for key, value in sorted(totals.items()) if value]
    if not rows:
        return
    table = Tally._meta.db_table
    values = ", ".join(["(%s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (key, value) VALUES {values} "
            f"ON CONFLICT (key) DO UPDATE SET value = {table}.value + EXCLUDED.value",
            [item for row in rows for item in row],
        )


@cache
def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def count_rate_limited() -> None:
    """One more 429 served."""
    if settings.RATE_LIMIT_REDIS_URL:
        _redis(settings.RATE_LIMIT_REDIS_URL).incr(REDIS_RATE_LIMITED)
    else:
        _add({RATE_LIMITED: 1})


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _instant(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _run_totals(runs: QuerySet[SyncRun]) -> Counter[str]:
    """Per source: runs by outcome, their summed duration, how many took at most each bucket's
    bound, and the records they wrote; one grouped query."""
    took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    sums: dict[str, Any] = {"n": Count("pk"), "took_sum": Sum("took")}
    for i, bound in enumerate(BUCKETS):
        sums[f"le{i}"] = Count("pk", filter=Q(took__lte=timedelta(seconds=bound)))
    written = [(kind, change) for kind in RECORD_TYPES for change in CHANGES]
    for i, (kind, change) in enumerate(written):
        sums[f"w{i}"] = Sum(Coalesce(Cast(KT(f"counts__{kind}__{change}"), BigIntegerField()), Value(0)))
    grouped = runs.annotate(took=took).values("connection__source", "outcome").annotate(**sums).order_by()
    totals: Counter[str] = Counter()
    for values in grouped:
        row: dict[str, Any] = dict(values)
        source = row["connection__source"]
        totals[f"sync.runs|{source}|{row['outcome']}"] += row["n"]
        totals[f"sync.duration_ms|{source}"] += round((row["took_sum"] or timedelta()).total_seconds() * 1000)
        for i, bound in enumerate(BUCKETS):
            totals[f"sync.duration_le|{source}|{bound}"] += row[f"le{i}"]
        for i, (_, change) in enumerate(written):
            totals[f"sync.records|{source}|{change}"] += row[f"w{i}"] or 0
    return totals


def _attempt_totals(attempts: QuerySet[DeliveryAttempt]) -> Counter[str]:
    grouped = attempts.values("outcome").annotate(n=Count("pk")).order_by()
    return Counter({f"webhook.attempts|{row['outcome']}": row["n"] for row in grouped})


def fold(now: datetime | None = None) -> None:
    """Add the runs and attempts that can no longer change to the tallies and move the marks
    past them, in one transaction (beat, every minute; a second caller meanwhile does nothing)."""
    cutoff = (now or timezone.now()) - FOLD_LAG
    Tally.objects.bulk_create([Tally(key=RUNS_MARK), Tally(key=ATTEMPTS_MARK)], ignore_conflicts=True)
    with transaction.atomic():
        locked = Tally.objects.select_for_update(skip_locked=True).filter(key__in=(RUNS_MARK, ATTEMPTS_MARK))
        marks = dict(locked.values_list("key", "value"))
        if len(marks) < 2:
            return
        totals: Counter[str] = Counter()
        runs_mark = max(marks[RUNS_MARK], _micros(cutoff))
        since, until = _instant(marks[RUNS_MARK]), _instant(runs_mark)
        totals.update(_run_totals(SyncRun.objects.filter(finished_at__gte=since, finished_at__lt=until)))
        # Attempts by id: everything below the first one made after the cutoff.
        after = DeliveryAttempt.objects.filter(pk__gt=marks[ATTEMPTS_MARK])
        first_recent = after.filter(at__gte=cutoff).aggregate(first=Min("pk"))["first"]
        settled = after if first_recent is None else after.filter(pk__lt=first_recent)
        top = settled.aggregate(top=Max("pk"))["top"]
        totals.update(_attempt_totals(settled))
        _add(totals)
        attempts_mark = first_recent - 1 if first_recent is not None else (top or marks[ATTEMPTS_MARK])
        Tally.objects.filter(key=RUNS_MARK).update(value=runs_mark)
        Tally.objects.filter(key=ATTEMPTS_MARK).update(value=attempts_mark)


# --- reading -------------------------------------------------------------------------------


def _totals(now: datetime) -> Counter[str]:
    """The counters: the tallies (and their marks, read in the same statement), plus the rows
    after the marks."""
    tallies = dict(Tally.objects.values_list("key", "value"))
    totals: Counter[str] = Counter({k: v for k, v in tallies.items() if not k.startswith("mark.")})
    runs = SyncRun.objects.filter(finished_at__gte=_instant(tallies.get(RUNS_MARK, 0)))
    totals.update(_run_totals(runs))
    attempts = DeliveryAttempt.objects.filter(pk__gt=tallies.get(ATTEMPTS_MARK, 0))
    # An attempt still under way is on record as unfinished until it ends: counted once it has.
    in_flight = Q(outcome=AttemptOutcome.UNFINISHED, at__gte=now - FOLD_LAG)
    totals.update(_attempt_totals(attempts.exclude(in_flight)))
    if settings.RATE_LIMIT_REDIS_URL:
        totals[RATE_LIMITED] += int(_redis(settings.RATE_LIMIT_REDIS_URL).get(REDIS_RATE_LIMITED) or 0)
    return totals


def _queue(now: datetime) -> tuple[int, float]:
    """Active connections whose sync waits to start, and how long the oldest has waited: since it
    was enqueued, or since it fell due when beat has not enqueued it yet."""
    active = Connection.objects.filter(status=ConnectionStatus.ACTIVE)
    queued = active.filter(sync_queued_at__isnull=False).aggregate(n=Count("pk"), oldest=Min("sync_queued_at"))
    stale = now - timedelta(seconds=settings.SYNC_CLAIM_TIMEOUT)
    free = Q(sync_claimed_at__isnull=True) | Q(sync_claimed_at__lt=stale)
    due = active.filter(free, sync_queued_at__isnull=True, next_sync_at__lte=now)
    overdue = due.aggregate(n=Count("pk"), oldest=Min("next_sync_at"))
    oldest = min((t for t in (queued["oldest"], overdue["oldest"]) if t is not None), default=now)
    return queued["n"] + overdue["n"], max(0.0, (now - oldest).total_seconds())


def _split(totals: Counter[str], prefix: str) -> Iterable[tuple[list[str], int]]:
    for key, value in sorted(totals.items()):
        name, *labels = key.split("|")
        if name == prefix:
            yield labels, value


def collect_metrics(now: datetime | None = None) -> list[Metric]:
    now = now or timezone.now()
    totals = _totals(now)

    runs = CounterMetricFamily(
        "humanapi_sync_runs", "Sync runs that ended, by source and outcome.", labels=["source", "outcome"]
    )
    for labels, value in _split(totals, "sync.runs"):
        runs.add_metric(labels, value)

    running = GaugeMetricFamily("humanapi_sync_runs_running", "Sync runs recorded as running.", labels=["source"])
    by_source = SyncRun.objects.filter(finished_at__isnull=True).values("connection__source").annotate(n=Count("pk"))
    for row in by_source.order_by("connection__source"):
        running.add_metric([row["connection__source"]], row["n"])

    durations = HistogramMetricFamily(
        "humanapi_sync_duration_seconds", "How long sync runs took, start to end.", labels=["source"]
    )
    sums = {labels[0]: value for labels, value in _split(totals, "sync.duration_ms")}
    counts: Counter[str] = Counter()
    for (source, _), value in _split(totals, "sync.runs"):
        counts[source] += value
    at_most: dict[tuple[str, str], int] = {(source, le): v for (source, le), v in _split(totals, "sync.duration_le")}
    for source in sorted(counts):
        buckets = [(str(bound), at_most.get((source, str(bound)), 0)) for bound in BUCKETS]
        durations.add_metric([source], [*buckets, ("+Inf", counts[source])], sum_value=sums.get(source, 0) / 1000)

    records = CounterMetricFamily(
        "humanapi_sync_records_written",
        "Records that sync runs created, updated or deleted.",
        labels=["source", "change"],
    )
    for source in sorted(counts):
        for change in CHANGES:
            records.add_metric([source, change], totals[f"sync.records|{source}|{change}"])

    waiting, lag = _queue(now)
    queue_waiting = GaugeMetricFamily(
        "humanapi_sync_queue_waiting", "Active connections whose sync was asked for or is due, and has not started."
    )
    queue_waiting.add_metric([], waiting)
    queue_lag = GaugeMetricFamily(
        "humanapi_sync_queue_lag_seconds", "How long the oldest sync waiting to start has waited (0: none waits)."
    )
    queue_lag.add_metric([], lag)

    pending = Notification.objects.filter(
        next_attempt_at__isnull=False, delivered_at__isnull=True, gave_up_at__isnull=True
    ).aggregate(n=Count("pk"), oldest=Min("created_at"))
    backlog = GaugeMetricFamily(
        "humanapi_webhook_backlog", "Webhook notifications neither delivered nor given up (pending)."
    )
    backlog.add_metric([], pending["n"])
    oldest = GaugeMetricFamily(
        "humanapi_webhook_oldest_pending_seconds", "Age of the oldest pending webhook notification (0: none)."
    )
    oldest.add_metric([], (now - pending["oldest"]).total_seconds() if pending["oldest"] else 0.0)

    attempts = CounterMetricFamily(
        "humanapi_webhook_attempts",
        "Webhook delivery attempts, by outcome (every outcome but delivered is a failure).",
        labels=["outcome"],
    )
    for labels, value in _split(totals, "webhook.attempts"):
        attempts.add_metric(labels, value)

    limited = CounterMetricFamily("humanapi_http_rate_limited", "Responses served with status 429 (rate limited).")
    limited.add_metric([], totals[RATE_LIMITED])

    return [runs, running, durations, records, queue_waiting, queue_lag, backlog, oldest, attempts, limited]


class DatabaseCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        return collect_metrics()
