"""Fixed-window rate limits, shared by every web process.

A limit counts requests per subject (a client_id, an IP, a Human, a Connect session) in windows
of RATE_LIMIT_WINDOW seconds, or RATE_LIMIT_SLOW_WINDOW (an hour) for the slow ones: syncs asked
for, connections changed.
The counter lives in PostgreSQL (one `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` per check,
so concurrent processes never lose an increment; the table is unlogged, so a count costs no WAL
flush) or, when RATE_LIMIT_REDIS_URL is set, in Redis (`INCR` + `EXPIRE`). Fixed windows allow
up to twice the limit across a window boundary; that is accepted for a limit whose purpose is to
stop floods and guessing.

Every limit is a setting named in `LIMITS` (0 disables it); a request over one gets 429 with
`Retry-After` and the error envelope (`enforce` in DRF views, `limited_response` elsewhere).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import connection
from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions

from humanapi_project.errors import error_response

from .models import RateLimitBucket

# Expired buckets are deleted a few hundred at a time, when a new bucket is opened.
_CLEANUP_BATCH = 500


@dataclass(frozen=True)
class Limit:
    name: str
    per_window: int
    window: int = 0  # seconds; 0: RATE_LIMIT_WINDOW
    what: str = "requests"  # what is counted, for the message of a 429

    @property
    def seconds(self) -> int:
        return self.window or settings.RATE_LIMIT_WINDOW

    def bucket_key(self, subject: str, window_start: int) -> str:
        # Subjects come from the request; hashing bounds the key's length and content.
        digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
        return f"{self.name}:{digest}:{window_start}"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int  # seconds until the window ends (0 when allowed)
    message: str = ""  # why not, and when to retry (when refused)


@dataclass(frozen=True)
class _Window:
    limit: Limit
    key: str  # the bucket of this subject and window
    start: int
    end: int
    moment: float

    def verdict(self, allowed: bool) -> Verdict:
        if allowed:
            return Verdict(True, 0)
        wait = max(1, int(self.end - self.moment + 0.999))
        limit = self.limit
        span = {60: "minute", 3600: "hour", 86400: "day"}.get(limit.seconds, f"{limit.seconds} seconds")
        retry_at = datetime.fromtimestamp(self.moment + wait, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = (
            f"Too many {limit.what}: at most {limit.per_window} per {span}. Retry in {wait} seconds (at {retry_at})."
        )
        return Verdict(False, wait, message)


def _window(limit: Limit, subject: str, now: float | None) -> _Window:
    moment = time.time() if now is None else now
    start = int(moment // limit.seconds) * limit.seconds
    return _Window(limit, limit.bucket_key(subject, start), start, start + limit.seconds, moment)


def hit(limit: Limit, subject: str, now: float | None = None) -> Verdict:
    """Count one request of `subject` against `limit`; say whether it is within the limit."""
    return hit_each((limit, subject), now=now)


def hit_each(*pairs: tuple[Limit, str], now: float | None = None) -> Verdict:
    """Count one request against each (limit, subject) in turn, stopping at the first it is over:
    a request refused by one limit is not counted by the ones after it (a flooding Human does
    not use up its Application's budget). On PostgreSQL, one statement for them all."""
    windows = [_window(limit, subject, now) for limit, subject in pairs if limit.per_window > 0]
    if settings.RATE_LIMIT_REDIS_URL or connection.vendor != "postgresql":
        for w in windows:
            if _incr(w) > w.limit.per_window:
                return w.verdict(False)
        return Verdict(True, 0)
    return _verdict(windows, _db_incr_chain(windows)) if windows else Verdict(True, 0)


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


def _incr(w: _Window) -> int:
    if settings.RATE_LIMIT_REDIS_URL:
        return _redis_incr(w.key, w.limit.seconds)
    return _db_incr_chain([w])[0] or 1


@dataclass(frozen=True)
class Chain:
    """Rate-limit counts to be taken inside another statement on PostgreSQL (see `chained`):
    `ctes` are WITH items c0, c1, ... incrementing the buckets in order, each only if the one
    before is within its limit, the first only where `guard` (SQL) holds; `counts` selects
    their counts (NULL: not counted)."""

    windows: tuple[_Window, ...]
    ctes: str
    params: tuple[Any, ...]
    counts: str

    def verdict(self, counts: Sequence[Any]) -> Verdict:
        """The verdict from the counts the statement returned."""
        return _verdict(self.windows, _counted(self.windows, counts))


def chained(*pairs: tuple[Limit, str], guard: str = "true", now: float | None = None) -> Chain | None:
    """`hit_each`'s counting as WITH items to put in another statement, so that a request's
    limits cost no round trip of their own (the Data API counts them with its token look-up).
    None where the counts are not kept in PostgreSQL, or every limit is off: use `hit_each`."""
    if settings.RATE_LIMIT_REDIS_URL or connection.vendor != "postgresql":
        return None
    windows = tuple(_window(limit, subject, now) for limit, subject in pairs if limit.per_window > 0)
    if not windows:
        return None
    return _chain(windows, guard)


_TABLE = RateLimitBucket._meta.db_table
_UPSERT = f"ON CONFLICT (key) DO UPDATE SET count = {_TABLE}.count + 1 RETURNING count"


def _chain(windows: tuple[_Window, ...], guard: str) -> Chain:
    steps: list[str] = []
    params: list[Any] = []
    for n, w in enumerate(windows):
        condition = guard if n == 0 else f"(SELECT count FROM c{n - 1}) <= {windows[n - 1].limit.per_window:d}"
        steps.append(
            f"c{n} AS (INSERT INTO {_TABLE} (key, count, expires_at) SELECT %s, 1, %s WHERE {condition} {_UPSERT})"
        )
        params.extend([w.key, datetime.fromtimestamp(w.end, UTC)])
    counts = ", ".join(f"(SELECT count FROM c{n})" for n in range(len(windows)))
    return Chain(windows, ", ".join(steps), tuple(params), counts)


def _verdict(windows: Sequence[_Window], counts: Sequence[int | None]) -> Verdict:
    """Refused by the first window over its limit (or not counted, being after one that is)."""
    for w, count in zip(windows, counts, strict=True):
        if count is None or count > w.limit.per_window:
            return w.verdict(False)
    return Verdict(True, 0)


def _counted(windows: Sequence[_Window], row: Sequence[Any] | None) -> list[int | None]:
    found: list[int | None] = [None if value is None else int(value) for value in row or [None] * len(windows)]
    if 1 in found:  # a new window opened: time to drop some expired ones
        buckets_cleanup(batch=_CLEANUP_BATCH, now=datetime.fromtimestamp(windows[0].moment, UTC))
    return found


def _db_incr_chain(windows: Sequence[_Window]) -> list[int | None]:
    """Increment the buckets in order, each only if the one before is within its limit (None: not
    counted). One `INSERT ... ON CONFLICT` per bucket; on PostgreSQL chained in one statement."""
    with connection.cursor() as cursor:
        if len(windows) == 1:  # SQLite has no INSERT in a WITH
            w = windows[0]
            cursor.execute(
                f"INSERT INTO {_TABLE} (key, count, expires_at) VALUES (%s, 1, %s) {_UPSERT}",
                [w.key, datetime.fromtimestamp(w.end, UTC)],
            )
        else:
            chain = _chain(tuple(windows), "true")
            cursor.execute(f"WITH {chain.ctes} SELECT {chain.counts}", chain.params)
        row = cursor.fetchone()
    return _counted(windows, row)


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


# Every limit: its setting, what it counts (for the message of a 429), the setting of its window.
_FAST, _SLOW = "RATE_LIMIT_WINDOW", "RATE_LIMIT_SLOW_WINDOW"
LIMITS: dict[str, tuple[str, str, str]] = {
    "token-client": ("RATE_LIMIT_TOKEN_PER_CLIENT", "token requests for this application", _FAST),
    "token-ip": ("RATE_LIMIT_TOKEN_PER_IP", "token requests from this address", _FAST),
    "token-failures": ("RATE_LIMIT_TOKEN_FAILURES", "wrong client credentials from this address", _FAST),
    "connect-ip": ("RATE_LIMIT_CONNECT_PER_IP", "Connect requests from this address", _FAST),
    "connect-session": ("RATE_LIMIT_CONNECT_PER_SESSION", "requests in this Connect session", _FAST),
    "connect-failures": ("RATE_LIMIT_CONNECT_FAILURES", "failed sign-ins for this username", _FAST),
    "connect-changes": ("RATE_LIMIT_CONNECT_CHANGES", "connections made or removed for this user", _SLOW),
    "data-human": ("RATE_LIMIT_DATA_PER_HUMAN", "Data API requests for this user", _FAST),
    "data-app": ("RATE_LIMIT_DATA_PER_APP", "Data API requests for this application's users", _FAST),
    "data-passes": ("RATE_LIMIT_DATA_LIST_PASSES", "time-filtered lists computed afresh for this user", _FAST),
    "app-api": ("RATE_LIMIT_APP_API_PER_APP", "Application API requests for this application", _FAST),
    "sync-human": ("RATE_LIMIT_SYNC_PER_HUMAN", "sync requests for this user", _SLOW),
    "sync-app": ("RATE_LIMIT_SYNC_PER_APP", "sync requests for this application", _SLOW),
    "push-connection": ("RATE_LIMIT_PUSH_PER_CONNECTION", "provider notifications for this connection", _FAST),
}


def limit(name: str) -> Limit:
    setting, what, window = LIMITS[name]
    return Limit(name, getattr(settings, setting), getattr(settings, window), what)


def token_limits() -> tuple[Limit, Limit]:
    return limit("token-client"), limit("token-ip")


def token_failure_limit() -> Limit:
    return limit("token-failures")


# --- answering a request over a limit -----------------------------------------------------


class Limited(exceptions.Throttled):
    """A 429 from a DRF view: the envelope with the verdict's message, and `Retry-After`."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(detail=verdict.message or "Too many requests")
        # The error handler adds one second to the wait it is given (Retry-After).
        self.wait = max(0, verdict.retry_after - 1)


def enforce(verdict: Verdict) -> None:
    if not verdict.allowed:
        raise Limited(verdict)


def limited_response(verdict: Verdict, request: HttpRequest) -> JsonResponse:
    """The same 429 from a plain Django view."""
    response = error_response(429, verdict.message or "Too many requests", request)
    response["Retry-After"] = str(verdict.retry_after)
    return response


# --- settings -------------------------------------------------------------------------------

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@checks.register("ratelimit")
def check_rate_limit_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Each limit a whole number (0 disables it), the window at least a second, Redis a URL."""
    errors: list[checks.CheckMessage] = []
    for name, minimum in [*((setting, 0) for setting, _, _ in LIMITS.values()), (_FAST, 1), (_SLOW, 1)]:
        value = getattr(settings, name, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            errors.append(
                checks.Error(f"{name} must be a whole number of at least {minimum}, got {value!r}", id="connect.E001")
            )
    url = settings.RATE_LIMIT_REDIS_URL
    if not isinstance(url, str) or (url and not url.startswith(_REDIS_SCHEMES)):
        errors.append(
            checks.Error(
                f"RATE_LIMIT_REDIS_URL must be empty or a redis://, rediss:// or unix:// URL, got {_shown(url)}",
                id="connect.E002",
            )
        )
    return errors


def _shown(url: Any) -> str:
    """The URL without what may be a password."""
    text = str(url)
    return repr(text.split("@")[-1] if "@" in text else text)
