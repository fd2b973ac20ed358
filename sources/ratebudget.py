"""Shared rate budgets: what a provider lets one application call, spent by every connection
through that application whatever its tenant, across every worker process.

A source declares its documented limits (`SourcePlugin.rate_limits` per application,
`user_rate_limits` per provider user); SOURCE_<SLUG>_RATE_LIMITS and SOURCE_<SLUG>_USER_RATE_LIMITS
override them (`count/seconds[/rolling]`, comma-separated, or `off`). A budget is keyed by the
source and the client id the connection was authorized with (an Application may bring its own
provider credentials), plus a digest of the provider's user id for per-user limits.

The engine takes one request from the run's budgets before each provider call (`Gate.take`, by
`ProviderHttp`):
- a fixed window is aligned to UTC (the multiples of its length since the epoch: Strava's
  quarter hours and midnight) and left unused within CLOCK_MARGIN of its edges, so a clock a
  second away from the provider's never spends one window's requests in the next; a rolling
  window is counted in tenths, and the current tenth with the ten before it must stay under the
  limit, which bounds every span of that length wherever it starts;
- backfills (history and scheduled syncs) leave PROVIDER_RATE_RESERVE percent of each window to
  interactive work ("sync now", a notification's fetch), which may use it all for its first
  INTERACTIVE_CALLS calls; what the reserve still holds in the last tenth of a fixed window is
  opened to backfills;
- a spent budget makes a backfill stop before calling (`BudgetSpent`, with the time the budget
  frees: the engine stores what it has and reschedules); interactive work waits in place when
  that is short (PROVIDER_RETRY_MAX_WAIT).
After each answer, the provider's own counts (`SourcePlugin.rate_usage`: Strava's
X-ReadRateLimit-Usage) correct the budget upwards, and the limit it reports caps the declared one.
A 429 (or the provider's "too many requests") empties the budget until its Retry-After, else until
the window frees (a fixed window's end; a rolling window's next tenth); the run that received it
may call again once it has waited that long.

A budget is one row of `sources_ratebudget`, read and written under its row lock (budgets of one
call are locked in key order), or, with RATE_LIMIT_REDIS_URL, one Redis key written by a
WATCH/MULTI transaction: two processes never both take the last request. With PostgreSQL, a call
made inside a database transaction (a token refresh, under the connection's row lock) is neither
counted nor corrected: the budget's row would stay locked until the provider answered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection as db
from django.db import transaction
from django.utils import timezone

from .base import RATE_LIMIT_SETTINGS, RateLimit, SourcePlugin
from .models import Connection, RateBudget, SyncPriority

log = logging.getLogger(__name__)

SLOTS = 10  # a rolling window is counted in tenths
RELEASE = 0.1  # the last tenth of a fixed window opens the reserve to backfills
CLOCK_MARGIN = 1.0  # seconds of a fixed window's edges left unused (at most a twentieth of it)
INTERACTIVE_CALLS = 20  # calls of an interactive run that may use the reserve
REDIS_PREFIX = "hapi:budget:"
REDIS_TTL = 2 * 86400  # a budget untouched this long is forgotten (longer than a daily window)

T = TypeVar("T")


def parse_limits(raw: str) -> tuple[RateLimit, ...]:
    """`count/seconds[/rolling]`, comma-separated, or `off` (no limits). ValueError says why not."""
    text = raw.strip()
    if text.lower() == "off":
        return ()
    limits = []
    for part in text.split(","):
        bits = [bit.strip() for bit in part.split("/")]
        numbers = bits[:2]
        if (
            len(bits) not in (2, 3)
            or not all(b.isascii() and b.isdigit() and int(b) > 0 for b in numbers)
            or (len(bits) == 3 and bits[2] != "rolling")
        ):
            raise ValueError(f"{part.strip()[:40]!r} is not count/seconds or count/seconds/rolling (both above 0)")
        limits.append(RateLimit(int(bits[0]), int(bits[1]), len(bits) == 3))
    if len({limit.seconds for limit in limits}) != len(limits):
        raise ValueError("two limits have the same window")
    return tuple(limits)


def limits_of(plugin: SourcePlugin, key: str = "RATE_LIMITS") -> tuple[RateLimit, ...]:
    """The limits in force: SOURCE_<SLUG>_<key>, else the plugin's own (a malformed setting
    fails the system checks at startup; here it falls back to the plugin's)."""
    assert key in RATE_LIMIT_SETTINGS
    declared = plugin.rate_limits if key == "RATE_LIMITS" else plugin.user_rate_limits
    raw = plugin.setting(key)
    if raw.strip():
        try:
            return parse_limits(raw)
        except ValueError:
            pass
    return tuple(RateLimit(*limit) for limit in declared)


# --- one budget's state, and the decisions on it -----------------------------------------------


@dataclass
class State:
    """A budget as stored: requests per window length and slot, the limits the provider last
    reported (per window length), and until when a 429 emptied it (epoch seconds)."""

    counts: dict[int, dict[int, int]] = field(default_factory=dict)
    reported: dict[int, int] = field(default_factory=dict)
    blocked_until: float = 0.0
    changed: bool = False

    @classmethod
    def load(cls, raw: Any) -> State:
        state = cls()
        if not isinstance(raw, dict):
            return state
        try:
            state.blocked_until = float(raw.get("blocked_until") or 0)
            for seconds, slots in (raw.get("counts") or {}).items():
                state.counts[int(seconds)] = {int(slot): int(n) for slot, n in slots.items()}
            state.reported = {int(seconds): int(n) for seconds, n in (raw.get("reported") or {}).items()}
        except (TypeError, ValueError, AttributeError):
            log.warning("a rate budget's stored state was unreadable; it starts afresh")
            return cls()
        return state

    def dump(self) -> dict[str, Any]:
        return {
            "counts": {str(s): {str(i): n for i, n in slots.items()} for s, slots in self.counts.items()},
            "reported": {str(s): n for s, n in self.reported.items()},
            "blocked_until": self.blocked_until,
        }


@dataclass(frozen=True)
class Budget:
    key: str
    limits: tuple[RateLimit, ...]


def _slot_length(limit: RateLimit) -> float:
    return limit.seconds / SLOTS if limit.rolling else float(limit.seconds)


def _slot(limit: RateLimit, now: float) -> int:
    return math.floor(now / _slot_length(limit))


def _first_counted(limit: RateLimit, now: float) -> int:
    return _slot(limit, now) - (SLOTS if limit.rolling else 0)


def _margin(limit: RateLimit) -> float:
    return min(CLOCK_MARGIN, limit.seconds / 20)


def _used(state: State, limit: RateLimit, now: float) -> int:
    first = _first_counted(limit, now)
    return sum(n for slot, n in state.counts.get(limit.seconds, {}).items() if slot >= first)


def _effective(state: State, limit: RateLimit) -> int:
    reported = state.reported.get(limit.seconds)
    return min(limit.requests, reported) if reported else limit.requests


def _limit_wait(state: State, limit: RateLimit, now: float, interactive: bool, reserve: float) -> float:
    """0 if one more request fits `limit` now; else the seconds until one may."""
    effective = _effective(state, limit)
    used = _used(state, limit, now)
    backfill_cap = effective - int(effective * reserve)
    if limit.rolling:
        cap = effective if interactive else backfill_cap
        if used < cap:
            return 0.0
        first = _first_counted(limit, now)
        slots = sorted((s, n) for s, n in state.counts.get(limit.seconds, {}).items() if s >= first)
        for slot, n in slots:  # the oldest tenths leave the count first
            used -= n
            if used < cap:
                return max(0.001, (slot + SLOTS + 1) * _slot_length(limit) - now)
        return float(limit.seconds)
    start = _slot(limit, now) * limit.seconds
    margin = _margin(limit)
    live_from, live_to = start + margin, start + limit.seconds - margin
    next_window = start + limit.seconds + margin
    if now < live_from:
        return live_from - now
    if now >= live_to:
        return next_window - now
    release_at = live_to - RELEASE * limit.seconds
    cap = effective if interactive or now >= release_at else backfill_cap
    if used < cap:
        return 0.0
    if not interactive and now < release_at and used < effective:
        return release_at - now
    return next_window - now


def _wait(
    states: Sequence[State], budgets: Sequence[Budget], now: float, interactive: bool, reserve: float, waited: float
) -> float:
    wait = 0.0
    for state, budget in zip(states, budgets, strict=True):
        if state.blocked_until > now and state.blocked_until > waited:
            wait = max(wait, state.blocked_until - now)
        for limit in budget.limits:
            wait = max(wait, _limit_wait(state, limit, now, interactive, reserve))
    return wait


def _take(
    states: Sequence[State], budgets: Sequence[Budget], now: float, interactive: bool, reserve: float, waited: float
) -> float:
    """Count one request in every budget if each has room (returns 0); else count nothing and
    return the seconds until all of them have."""
    wait = _wait(states, budgets, now, interactive, reserve, waited)
    if wait > 0:
        return wait
    for state, budget in zip(states, budgets, strict=True):
        _prune(state, budget, now)
        for limit in budget.limits:
            slots = state.counts.setdefault(limit.seconds, {})
            slots[_slot(limit, now)] = slots.get(_slot(limit, now), 0) + 1
        state.changed = True
    return 0.0


def _prune(state: State, budget: Budget, now: float) -> None:
    windows = {limit.seconds: limit for limit in budget.limits}
    for seconds in list(state.counts):
        if seconds not in windows:
            del state.counts[seconds]
            continue
        first = _first_counted(windows[seconds], now)
        state.counts[seconds] = {s: n for s, n in state.counts[seconds].items() if s >= first}
    state.changed = True


def _correct(state: State, budget: Budget, usage: list[tuple[int, int | None]], sent: float, now: float) -> None:
    """The provider's counts, shortest window first, matched to the budget's windows by length."""
    for limit, (used, reported) in zip(sorted(budget.limits, key=lambda lim: lim.seconds), usage, strict=False):
        if reported and reported > 0 and state.reported.get(limit.seconds) != reported:
            state.reported[limit.seconds] = reported
            state.changed = True
        if _slot(limit, sent) != _slot(limit, now):
            continue  # answered in the next window: its count may be of either
        mine = _used(state, limit, now)
        if used > mine:
            slots = state.counts.setdefault(limit.seconds, {})
            slots[_slot(limit, now)] = slots.get(_slot(limit, now), 0) + used - mine
            state.changed = True


def _reset(budget: Budget, now: float) -> float:
    """When a refused budget with no Retry-After frees: the end of its shortest fixed window
    (a longer one the provider's counts show spent holds it further); with rolling windows only,
    the next tenth of the shortest (the oldest requests leave it), else a minute."""
    fixed = [limit for limit in budget.limits if not limit.rolling]
    if fixed:
        shortest = min(fixed, key=lambda limit: limit.seconds)
        return (_slot(shortest, now) + 1) * shortest.seconds + _margin(shortest)
    return now + min((_slot_length(limit) for limit in budget.limits), default=60.0)


# --- where budgets are kept ---------------------------------------------------------------------


def _update(keys: Sequence[str], change: Callable[[list[State]], T]) -> T:
    """Read the budgets, let `change` decide (it mutates the states), write what changed: atomic
    across processes."""
    if settings.RATE_LIMIT_REDIS_URL:
        return _redis_update(keys, change)
    with transaction.atomic():
        rows = _locked(keys)
        missing = [key for key in keys if key not in rows]
        if missing:
            RateBudget.objects.bulk_create([RateBudget(key=key) for key in missing], ignore_conflicts=True)
            rows = _locked(keys)
            _forget_stale(keys)
        states = [State.load(rows[key]) for key in keys]
        result = change(states)
        now = timezone.now()
        for key, state in zip(keys, states, strict=True):
            if state.changed:
                RateBudget.objects.filter(key=key).update(state=state.dump(), updated_at=now)
    return result


def _forget_stale(keep: Sequence[str]) -> None:
    """Delete a few budgets untouched for REDIS_TTL (a disconnected user's, a changed client
    id's): a new budget is made rarely, so the table never holds many dead ones."""
    cutoff = timezone.now() - timedelta(seconds=REDIS_TTL)
    unused = RateBudget.objects.select_for_update(skip_locked=True).filter(updated_at__lt=cutoff).exclude(key__in=keep)
    stale = list(unused.values_list("key", flat=True)[:100])  # locked by us (one in use is skipped, never waited for)
    if stale:
        RateBudget.objects.filter(key__in=stale).delete()


def _locked(keys: Sequence[str]) -> dict[str, Any]:
    found = RateBudget.objects.select_for_update().filter(key__in=keys).order_by("key").values_list("key", "state")
    return dict(found)


def _read(keys: Sequence[str]) -> list[State]:
    if settings.RATE_LIMIT_REDIS_URL:
        raws = _redis(settings.RATE_LIMIT_REDIS_URL).mget([REDIS_PREFIX + key for key in keys])
        return [State.load(json.loads(raw) if raw else None) for raw in raws]
    found = dict(RateBudget.objects.filter(key__in=keys).values_list("key", "state"))
    return [State.load(found.get(key)) for key in keys]


@cache
def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _redis_update(keys: Sequence[str], change: Callable[[list[State]], T]) -> T:
    names = [REDIS_PREFIX + key for key in keys]

    def attempt(pipe: Any) -> T:
        raws = pipe.mget(names)  # watched: a write by another process in between retries this
        states = [State.load(json.loads(raw) if raw else None) for raw in raws]
        result = change(states)
        pipe.multi()
        for name, state in zip(names, states, strict=True):
            if state.changed:
                ttl = max(REDIS_TTL, int(state.blocked_until - time.time()) + 60)
                pipe.set(name, json.dumps(state.dump()), ex=ttl)
        return result

    return _redis(settings.RATE_LIMIT_REDIS_URL).transaction(attempt, *names, value_from_callable=True)


# --- a run's gate ----------------------------------------------------------------------------


class Gate:
    """One run's way through its source's budgets: `take` before each call, `observe` each
    answer, `refused` on a 429."""

    def __init__(
        self,
        name: str,
        budgets: Sequence[Budget],
        *,
        priority: str,
        blocks: Budget | None,
        reports: Budget | None,
        usage: Callable[[Any], list[tuple[int, int | None]]],
    ) -> None:
        self.name = name
        self.budgets = list(budgets)
        self.keys = [budget.key for budget in self.budgets]
        self.blocks = blocks  # the budget a 429 empties
        self.reports = reports  # the budget the provider's counts are about
        self.usage = usage
        self.interactive_left = INTERACTIVE_CALLS if priority == SyncPriority.INTERACTIVE else 0
        self.reserve = settings.PROVIDER_RATE_RESERVE / 100
        self.taken_at: float | None = None
        self.blocked_until = 0.0  # set by the last 429 this run received
        self.waited = 0.0  # a block this run has waited out in place

    @property
    def interactive(self) -> bool:
        return self.interactive_left > 0

    def _skipped(self) -> bool:
        return not settings.RATE_LIMIT_REDIS_URL and db.in_atomic_block

    def wait(self) -> float:
        """Seconds until a call may be made (0: now), without counting one."""
        states = _read(self.keys)
        return _wait(states, self.budgets, time.time(), self.interactive, self.reserve, self.waited)

    def take(self) -> float:
        """Count a call about to be made and return 0, or count nothing and return the seconds
        until the budget has room."""
        if self._skipped():
            self.taken_at = None
            return 0.0
        now = time.time()
        interactive = self.interactive
        wait = _update(
            self.keys, lambda states: _take(states, self.budgets, now, interactive, self.reserve, self.waited)
        )
        if wait <= 0:
            self.taken_at = now
            self.interactive_left = max(0, self.interactive_left - 1)
        return wait

    def observe(self, response: Any) -> None:
        """Correct the budget with what the provider says of the application's use."""
        reports, sent = self.reports, self.taken_at
        if reports is None or sent is None or self._skipped():
            return
        usage = self.usage(response)
        if not usage:
            return
        now = time.time()
        index = self.keys.index(reports.key)

        def correct(states: list[State]) -> None:
            _correct(states[index], reports, usage, sent, now)

        _update(self.keys, correct)

    def refused(self, retry_after: float | None) -> float | None:
        """The provider refused a call for its rate limit: empty the budget until `retry_after`
        seconds from now, else until the window frees. Returns the seconds it stays empty."""
        budget = self.blocks
        if budget is None or self._skipped():
            return retry_after
        now = time.time()
        until = now + retry_after if retry_after is not None else _reset(budget, now)
        index = self.keys.index(budget.key)

        def block(states: list[State]) -> None:
            state = states[index]
            if until > state.blocked_until:
                state.blocked_until = until
                state.changed = True

        _update(self.keys, block)
        self.blocked_until = until
        log.info("%s answered a rate limit: its budget is empty for %.0fs", self.name, until - now)
        return retry_after if retry_after is not None else until - now

    def waited_out(self) -> None:
        """The run waited in place as long as the last refusal said: it may call again."""
        self.waited = max(self.waited, self.blocked_until)


def budget_gate(connection: Connection, plugin: SourcePlugin, priority: str) -> Gate | None:
    """The gate of one run of `connection`, or None when its source has no limits."""
    app_limits, user_limits = limits_of(plugin, "RATE_LIMITS"), limits_of(plugin, "USER_RATE_LIMITS")
    if not app_limits and not user_limits:
        return None
    client = plugin.budget_client_id(connection.credentials, connection.human.application.source_config(plugin.slug))
    app = Budget(f"{plugin.slug}:{client[:100]}", app_limits)
    user_digest = hashlib.sha256(f"{plugin.slug}:{connection.external_user_id}".encode()).hexdigest()[:16]
    user = Budget(f"{app.key}:user:{user_digest}", user_limits)
    budgets = [b for b in (app, user) if b.limits]
    blocks = user if plugin.rate_limit_scope == "user" and user.limits else app if app.limits else budgets[0]
    return Gate(
        plugin.name,
        budgets,
        priority=priority,
        blocks=blocks,
        reports=app if app.limits else None,
        usage=plugin.rate_usage,
    )
