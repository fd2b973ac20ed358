"""Fixed-window rate limits, shared by every web process.

A limit counts requests per subject (a client_id, an IP) in windows of RATE_LIMIT_WINDOW
seconds. The counter lives in PostgreSQL (one `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`
per check, so concurrent processes never lose an increment) or, when RATE_LIMIT_REDIS_URL is
set, in Redis (`INCR` + `EXPIRE`). Fixed windows allow up to twice the limit across a window
boundary; that is accepted for a limit whose purpose is to stop floods and guessing.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection

from .models import RateLimitBucket

# Expired buckets are deleted a few hundred at a time, when a new bucket is opened.
_CLEANUP_BATCH = 500


@dataclass(frozen=True)
class Limit:
    name: str
    per_window: int

    def bucket_key(self, subject: str, window_start: int) -> str:
        # Subjects come from the request; hashing bounds the key's length and content.
        digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
        return f"{self.name}:{digest}:{window_start}"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int  # seconds until the window ends (0 when allowed)


@dataclass(frozen=True)
class _Window:
    key: str  # the bucket of this subject and window
    start: int
    end: int
    moment: float

    def verdict(self, allowed: bool) -> Verdict:
        return Verdict(True, 0) if allowed else Verdict(False, max(1, int(self.end - self.moment + 0.999)))


def _window(limit: Limit, subject: str, now: float | None) -> _Window:
    moment = time.time() if now is None else now
    start = int(moment // settings.RATE_LIMIT_WINDOW) * settings.RATE_LIMIT_WINDOW
    return _Window(limit.bucket_key(subject, start), start, start + settings.RATE_LIMIT_WINDOW, moment)


def hit(limit: Limit, subject: str, now: float | None = None) -> Verdict:
    """Count one request of `subject` against `limit`; say whether it is within the limit."""
    if limit.per_window <= 0:
        return Verdict(True, 0)
    w = _window(limit, subject, now)
    if settings.RATE_LIMIT_REDIS_URL:
        count = _redis_incr(w.key, settings.RATE_LIMIT_WINDOW)
    else:
        count = _db_incr(w.key, w.end, w.moment)
    return w.verdict(count <= limit.per_window)


def peek(limit: Limit, subject: str, now: float | None = None) -> Verdict:
    """Whether `subject` is over `limit` in the current window, without counting a request."""
    if limit.per_window <= 0:
        return Verdict(True, 0)
    w = _window(limit, subject, now)
    if settings.RATE_LIMIT_REDIS_URL:
        count = int(_redis(settings.RATE_LIMIT_REDIS_URL).get(f"hapi:rl:{w.key}") or 0)
    else:
        found = RateLimitBucket.objects.filter(key=w.key).values_list("count", flat=True).first()
        count = int(found or 0)
    return w.verdict(count < limit.per_window)


def _db_incr(key: str, window_end: int, moment: float) -> int:
    expires_at = datetime.fromtimestamp(window_end, UTC)
    table = RateLimitBucket._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (key, count, expires_at) VALUES (%s, 1, %s) "
            f"ON CONFLICT (key) DO UPDATE SET count = {table}.count + 1 RETURNING count",
            [key, expires_at],
        )
        row = cursor.fetchone()
    count = int(row[0]) if row else 1
    if count == 1:
        buckets_cleanup(batch=_CLEANUP_BATCH, now=datetime.fromtimestamp(moment, UTC))
    return count


def buckets_cleanup(*, batch: int = 5000, now: datetime | None = None) -> int:
    """Delete up to `batch` expired buckets; returns how many went."""
    cutoff = now or datetime.now(UTC)
    ids = list(RateLimitBucket.objects.filter(expires_at__lt=cutoff).values_list("key", flat=True)[:batch])
    if not ids:
        return 0
    return RateLimitBucket.objects.filter(key__in=ids, expires_at__lt=cutoff).delete()[0]


@cache
def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _redis_incr(key: str, window: int) -> int:
    client = _redis(settings.RATE_LIMIT_REDIS_URL)
    pipe = client.pipeline()
    pipe.incr(f"hapi:rl:{key}")
    # The window's own key expires with it: nothing to clean up.
    pipe.expire(f"hapi:rl:{key}", window + 1)
    count, _ = pipe.execute()
    return int(count)


def token_limits() -> tuple[Limit, Limit]:
    return (
        Limit("token-client", settings.RATE_LIMIT_TOKEN_PER_CLIENT),
        Limit("token-ip", settings.RATE_LIMIT_TOKEN_PER_IP),
    )


def token_failure_limit() -> Limit:
    return Limit("token-failures", settings.RATE_LIMIT_TOKEN_FAILURES)
