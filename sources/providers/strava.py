"""Strava (API v3): the athlete's activities, with the calories Strava reports for them.

One collection, `activities`. The list `/athlete/activities` (SummaryActivity) is read first: the
history sync pages through the history window (resumable by page); later syncs re-read a
trailing window as one page, so edits are updated and what vanished is deleted (Strava announces
neither outside webhooks; the engine deletes on an empty answer only when it repeats).

Calories exist only in an activity's detail (`/activities/{id}`, DetailedActivity), one call
per activity against the application's shared rate limit. The plugin asks for a detail once per
activity, newest first, at most `DETAILS_PER_RUN` per run and only while the application has
used less than half of its read budget (15 minutes and day), so the lists of every connection
always have room. Activities not yet looked up wait in the cursor (`calories.pending`) for later
runs; what was learnt is kept (`calories.known`) for the activities the trailing window re-reads,
so a re-read never drops calories already stored. See docs/providers/strava.md.

Push: one subscription for the whole application (`/push_subscriptions`). An event names an
activity (created, updated or deleted) or an athlete who withdrew access; the activity is always
fetched by id (a 404 deletes it), then listed at its start so it is stored exactly as polling
would store it; a withdrawal is believed when Strava refuses the token. Events are verified with
`X-Strava-Signature` when Strava sends one (not in its public documentation).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from ..base import (
    DEAUTHORIZE,
    Change,
    Collection,
    Credentials,
    Notice,
    PermanentError,
    PushBatch,
    PushRefused,
    PushTopic,
    RateLimit,
    RateLimited,
    RawPage,
    Record,
    RefreshRefused,
    Subscribed,
    SyncContext,
    TokenRejected,
    TransientError,
    Window,
    token_expiry,
)
from ..http import ProviderHttp, decode_json, raise_for_status, raise_for_token_status
from ..oauth import OAuth2CodeSource

log = logging.getLogger(__name__)

PER_PAGE = 200  # Strava's maximum `per_page`
REPULL = timedelta(days=7)  # later syncs re-read the last week (edits and deletions)
MAX_PAGES = 1000
RATE_RESERVE = 2  # requests left unused in a rate-limit window, for the app's other calls
DETAIL_SHARE = 0.5  # details only while the app has used less than this share of its limits
DETAILS_PER_RUN = 30  # default of SOURCE_STRAVA_DETAILS_PER_RUN (0: never ask for calories)
MAX_PENDING = 2000  # activities waiting for their calories, newest kept
KEEP_KNOWN = REPULL + timedelta(days=2)  # calories remembered for what the window re-reads
MAX_OFFSET = 14 * 60  # minutes; no time zone is further from UTC
HIDDEN_START = "T00:00:01"  # Strava's obscured start time (changelog, July 3, 2024)

# Detail-only parts of a DetailedActivity that are not kept in sourceData: long, personal, or
# about other people (segment efforts, laps, splits, photos, kudosers, the description).
DETAIL_ONLY = frozenset(
    {
        "best_efforts",
        "description",
        "embed_token",
        "gear",
        "highlighted_kudosers",
        "laps",
        "photos",
        "private_note",
        "segment_efforts",
        "similar_activities",
        "splits_metric",
        "splits_standard",
        "stats_visibility",
    }
)

SPORT_TYPES = {
    "Run": "running",
    "TrailRun": "running",
    "VirtualRun": "running",
    "Walk": "walking",
    "Hike": "hiking",
    "Ride": "cycling",
    "MountainBikeRide": "cycling",
    "GravelRide": "cycling",
    "EBikeRide": "cycling",
    "EMountainBikeRide": "cycling",
    "VirtualRide": "cycling",
    "Swim": "swimming",
    "Rowing": "rowing",
    "WeightTraining": "weight_training",
}


class BadItem(ValueError):
    """An activity that doesn't have the documented shape."""


class StravaSource(OAuth2CodeSource):
    slug = "strava"
    name = "Strava"
    data_types = ("activities",)
    history_days = 365
    default_authorize_url = "https://www.strava.com/oauth/authorize"
    default_token_url = "https://www.strava.com/oauth/token"  # noqa: S105 - a URL, not a secret
    default_api_url = "https://www.strava.com/api/v3"
    # activity:read_all includes "Only Me" activities, which activity:read silently leaves out.
    scopes = ("read", "activity:read_all")
    scope_separator = ","
    extra_authorize_params = {"approval_prompt": "auto"}
    supports_pkce = False  # not documented by Strava
    client_auth = "body"

    integer_settings: ClassVar[dict[str, int]] = {"DETAILS_PER_RUN": 0}
    push_topics = (PushTopic("", ("activities",)),)
    # Per application, windows at :00/:15/:30/:45 and midnight UTC (RATES). Every call here is a
    # read, so the "non-upload" limits (100 and 1,000) bind before the overall ones (200, 2,000).
    rate_limits = (RateLimit(100, 900), RateLimit(1000, 86400))

    def rate_usage(self, response: requests.Response) -> list[tuple[int, int | None]]:
        """X-ReadRateLimit-Usage/-Limit ("15-minute,daily"), else X-RateLimit-*, on every answer."""
        for family in ("X-ReadRateLimit", "X-RateLimit"):
            usage = _pair(response.headers.get(f"{family}-Usage"))
            if usage:
                limit = _pair(response.headers.get(f"{family}-Limit"))
                return [(usage[0], limit[0] if limit else None), (usage[1], limit[1] if limit else None)]
        return []

    # --- authorization -------------------------------------------------------------------
    def token_request(self, fields: dict[str, str], http: ProviderHttp) -> dict[str, Any]:
        """POST the token endpoint. Strava refuses with its own `Fault` body (no OAuth `error`)
        and may rotate the refresh token on any refresh, the old one dying at once."""
        body = {**fields, "client_id": self.client_id, "client_secret": self.client_secret}
        body.pop("redirect_uri", None)  # not part of Strava's token request
        response = http.request("POST", self.token_url, data=body, check=False, inspect=_token_status)
        if response.status_code >= 400:
            raise RefreshRefused(f"Strava refused the grant ({_fault(response)})")
        token = response.json()
        if not isinstance(token, dict):
            raise TransientError("Strava token endpoint returned an unexpected body")
        return token

    def credentials_from_token(
        self, token: dict[str, Any], http: ProviderHttp, previous: dict[str, Any] | None = None
    ) -> Credentials:
        credentials = super().credentials_from_token(token, http, previous)
        # Strava's absolute expiry is exact; expires_in is relative to when it answered.
        exact = token_expiry({"expires_at": token.get("expires_at")}, datetime.now(UTC))
        if exact is not None:
            credentials.expires_at = exact
        return credentials

    def identify(self, token: dict[str, Any], http: ProviderHttp) -> str:
        athlete = token.get("athlete")
        if not isinstance(athlete, dict) or athlete.get("id") is None:
            athlete = http.get_json(f"{self.api_url}/athlete", headers=self.auth_headers(token))
        athlete_id = athlete.get("id") if isinstance(athlete, dict) else None
        if isinstance(athlete_id, bool) or not isinstance(athlete_id, int | str) or athlete_id == "":
            raise TransientError("Strava did not say which athlete authorized")
        return str(athlete_id)

    # --- settings ------------------------------------------------------------------------
    def per_page(self) -> int:
        return min(self.int_setting("PER_PAGE", PER_PAGE), PER_PAGE)

    def details_per_run(self) -> int:
        return self.int_setting("DETAILS_PER_RUN", DETAILS_PER_RUN)

    # --- fetch ---------------------------------------------------------------------------
    def collections(self, ctx: SyncContext) -> Sequence[Collection]:
        return (Collection("activities", ("activities",)),)

    def fetch_collection(self, ctx: SyncContext, collection: Collection) -> Iterator[RawPage]:
        run = _Run(ctx, RateBudget(), CalorieBook.load(ctx.cursor.get("calories")), self.details_per_run())
        state = ctx.cursor.get("activities") or {}
        now = int(ctx.now.timestamp())
        depth = self.int_setting("HISTORY_DAYS", self.history_days) * 86400
        if state.get("page") and state.get("after") is not None and state.get("before") is not None:
            # An interrupted history pass: go on from the next page.
            yield from self._pass(run, int(state["after"]), int(state["before"]), int(state["page"]))
        elif state.get("done") is not None:
            after = max(now - depth, min(int(state["done"]), now) - int(REPULL.total_seconds()))
            yield self._window(run, after, now)
        else:
            yield from self._pass(run, now - depth, now, 1)
        yield from self._backfill(run)

    def _pass(self, run: _Run, after: int, before: int, page: int) -> Iterator[RawPage]:
        """Page through [after, before), storing each page with the next page as the cursor."""
        for _ in range(MAX_PAGES):
            items = self._list(run, after, before, page)
            last = len(items) < self.per_page()
            position = {"done": before} if last else {"after": after, "before": before, "page": page + 1}
            # Strava pages oldest first here; the recent ones are looked up as they come, the
            # older ones wait for `_backfill`, which takes them newest first.
            recent = int((run.ctx.now - KEEP_KNOWN).timestamp())
            calories = self._enrich(run, items, not_before=recent)
            cursor = {"activities": position, "calories": run.book.state(run.ctx.now)}
            yield RawPage(type="activities", payload=items, cursor=cursor, context={"calories": calories})
            if last:
                return
            page += 1
        raise TransientError(f"Strava kept paging activities past {MAX_PAGES} pages")

    def _window(self, run: _Run, after: int, before: int) -> RawPage:
        """Every activity starting in [after, before), as one page the engine can delete against."""
        items: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            batch = self._list(run, after, before, page)
            items.extend(batch)
            if len(batch) < self.per_page():
                calories = self._enrich(run, items)
                window = Window("activities", datetime.fromtimestamp(after, UTC), datetime.fromtimestamp(before, UTC))
                cursor = {"activities": {"done": before}, "calories": run.book.state(run.ctx.now)}
                return RawPage(
                    type="activities", payload=items, cursor=cursor, window=window, context={"calories": calories}
                )
        raise TransientError(f"Strava kept paging activities past {MAX_PAGES} pages")

    def _list(self, run: _Run, after: int, before: int, page: int) -> list[Any]:
        # The engine takes each call from the application's shared rate budget (sources.ratebudget).
        # Whether Strava's bounds are inclusive is not documented; widened by a second each way
        # so an activity on the edge is never missed (the window itself stays [after, before)).
        params = {"after": after - 1, "before": before + 1, "page": page, "per_page": self.per_page()}
        response = run.ctx.http.request(
            "GET",
            f"{self.api_url}/athlete/activities",
            params=params,
            headers=self.auth_headers(run.ctx.credentials),
            check=False,
            inspect=run.budget.inspect,
        )
        body = response.json()
        if not isinstance(body, list):
            raise TransientError("Strava returned an unexpected body for activities (not a list)")
        return body

    # --- calories (the detail of each activity) -------------------------------------------
    def _enrich(self, run: _Run, items: list[Any], not_before: int | None = None) -> dict[str, float | None]:
        """Calories of the listed activities: remembered, else looked up (newest first) while
        the budget allows, else queued (so are those starting before `not_before`)."""
        found: dict[str, float | None] = {}
        listed: list[tuple[int, str]] = []
        for item in items:
            key, start = _key_and_start(item)
            if key is None or not _readable(item):
                continue  # unreadable: normalize says why, and its calories would not help
            if key in run.book.known:
                found[key] = run.book.known[key][0]
            else:
                listed.append((start, key))
        for start, key in sorted(listed, reverse=True):
            detail = self._detail(run, key) if not_before is None or start >= not_before else _NOT_NOW
            if detail is _NOT_NOW:
                run.book.pending[key] = start
                continue
            calories = _calories(detail) if isinstance(detail, dict) else None
            run.book.learn(key, calories, start)
            found[key] = calories
        return found

    def _backfill(self, run: _Run) -> Iterator[RawPage]:
        """Details of activities listed by earlier runs that still lack their calories, newest
        first, each stored as its own page (no window: it proves nothing about the others)."""
        for key, start in sorted(run.book.pending.items(), key=lambda kv: kv[1], reverse=True):
            detail = self._detail(run, key)
            if detail is _NOT_NOW:
                return
            if not isinstance(detail, dict):
                run.book.learn(key, None, start)  # gone or not visible: nothing to store
                yield RawPage(type="activities", payload=[], cursor={"calories": run.book.state(run.ctx.now)})
                continue
            run.book.learn(key, _calories(detail), start)
            cursor = {"calories": run.book.state(run.ctx.now)}
            yield RawPage(type="activities", payload=[detail], cursor=cursor, context={"detail": True})

    def _detail(self, run: _Run, key: str) -> Any:
        """One DetailedActivity; None if Strava no longer shows it; `_NOT_NOW` when the budget
        or Strava says to stop asking for this run."""
        if run.stopped or run.fetched >= run.limit or not run.budget.room_for_details():
            return _NOT_NOW
        run.fetched += 1
        try:
            response = run.ctx.http.request(
                "GET",
                f"{self.api_url}/activities/{key}",
                headers=self.auth_headers(run.ctx.credentials),
                check=False,
                inspect=run.budget.inspect,
            )
        except TokenRejected:
            raise  # the engine refreshes the token and starts the collection again
        except PermanentError as exc:
            # 404: deleted since it was listed, or not visible to this token. The activity's
            # record (from the list) is unaffected; only its calories stay unknown.
            log.warning("Strava activity detail not available: %s", exc)
            return None
        except (RateLimited, TransientError) as exc:
            log.info("Strava activity details paused until a later run: %s", exc)
            run.stopped = True
            return _NOT_NOW
        body = response.json()
        if not isinstance(body, dict):
            run.stopped = True
            return _NOT_NOW
        return body

    # --- push (webhooks in: developers.strava.com/docs/webhooks) ---------------------------
    def _app(self) -> dict[str, str]:
        return {"client_id": self.client_id, "client_secret": self.client_secret}

    def push_list(self, http: ProviderHttp) -> list[Subscribed]:
        response = http.request("GET", f"{self.api_url}/push_subscriptions", params=self._app(), check=False)
        _subscription_status(response)
        body = response.json()
        if not isinstance(body, list):
            raise TransientError("Strava listed its push subscriptions in an unexpected shape")
        return [
            Subscribed(str(item["id"]), str(item.get("callback_url") or ""))
            for item in body
            if isinstance(item, dict) and isinstance(item.get("id"), int | str)
        ]

    def push_subscribe(
        self, topic: PushTopic, *, callback_url: str, verify_token: str, http: ProviderHttp
    ) -> Subscribed:
        # Strava GETs the callback with the verify token before it answers (within its 2 s).
        form = {**self._app(), "callback_url": callback_url, "verify_token": verify_token}
        response = http.request("POST", f"{self.api_url}/push_subscriptions", data=form, check=False)
        _subscription_status(response)
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("id"), int | str):
            raise TransientError("Strava answered a push subscription without its id")
        return Subscribed(str(body["id"]), callback_url)

    def push_unsubscribe(self, provider_id: str, http: ProviderHttp) -> None:
        url = f"{self.api_url}/push_subscriptions/{provider_id}"
        response = http.request("DELETE", url, params=self._app(), check=False)
        if response.status_code != 404:  # already gone is what was wanted
            _subscription_status(response)

    def push_challenge(self, query: Mapping[str, str]) -> tuple[str, dict[str, Any]] | None:
        challenge, token = query.get("hub.challenge", ""), query.get("hub.verify_token", "")
        if query.get("hub.mode") != "subscribe" or not challenge or not token:
            return None
        return token, {"hub.challenge": challenge}

    def push_read(self, *, headers: Mapping[str, str], body: bytes, now: datetime, max_age: int) -> PushBatch:
        signature = headers.get("x-strava-signature", "")
        if signature:
            self._check_signature(signature, body, now, max_age)
        try:
            event = json.loads(body)
        except ValueError:
            raise PushRefused("the event is not JSON", 400) from None
        if not isinstance(event, dict):
            raise PushRefused("the event is not a JSON object", 400)
        kind, aspect, updates = event.get("object_type"), event.get("aspect_type"), event.get("updates") or {}
        owner, object_id, subscription = (_event_id(event, k) for k in ("owner_id", "object_id", "subscription_id"))
        if not owner or not object_id or not subscription or not isinstance(updates, dict):
            raise PushRefused("the event lacks owner_id, object_id, subscription_id or updates", 400)
        notices: list[Notice] = []
        if kind == "activity" and aspect in ("create", "update", "delete"):
            notices.append(Notice(owner, Change("activity", object_id, str(aspect))))
        elif kind == "athlete" and str(updates.get("authorized", "")).lower() == "false":
            notices.append(Notice(owner, Change("athlete", owner, DEAUTHORIZE)))
        return PushBatch(notices, hashlib.sha256(body).hexdigest(), subscription)

    def _check_signature(self, header: str, body: bytes, now: datetime, max_age: int) -> None:
        """`X-Strava-Signature` as the clients that verify it read it (Strava documents none):
        `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, or a bare hex HMAC-SHA256 of
        the body; keyed with the client secret."""
        key = self.client_secret.encode()
        if "=" in header:
            parts = dict(item.strip().split("=", 1) for item in header.split(",") if "=" in item)
            stamp, given = parts.get("t", ""), parts.get("v1", "")
            if not (stamp.isascii() and stamp.isdigit()) or not given:
                raise PushRefused("X-Strava-Signature is malformed")
            expected = hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        else:
            stamp, given = "", header
            expected = hmac.new(key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.strip().lower().encode("utf-8", "replace")):
            raise PushRefused("X-Strava-Signature does not match")
        if stamp and abs(now.timestamp() - int(stamp)) > max_age:
            raise PushRefused("X-Strava-Signature is too old (a replay?)")

    def fetch_changed(self, ctx: SyncContext, change: Change) -> Iterator[RawPage]:
        if change.kind != "activity" or not change.object_id.isdigit():
            return
        budget = RateBudget()
        response = ctx.http.request(
            "GET",
            f"{self.api_url}/activities/{change.object_id}",
            headers=self.auth_headers(ctx.credentials),
            check=False,
            inspect=lambda r: None if r.status_code == 404 else budget.inspect(r),
        )
        if response.status_code == 404:  # deleted, or no longer visible to this token
            yield RawPage(type="activities", payload=[], gone=[("activities", change.object_id)])
            return
        detail = response.json()
        key, start = _key_and_start(detail)
        if key != change.object_id:
            raise TransientError("Strava answered an activity detail without its id or start")
        book = CalorieBook.load(ctx.cursor.get("calories"))
        book.learn(key, _calories(detail), start)
        cursor = {"calories": book.state(ctx.now)}
        # Listed at its start, it is stored exactly as the polling's list stores it (the same
        # content, so a later re-read changes nothing); a detail only where the list misses it.
        budget.check(ctx.now)
        listed = ctx.http.request(
            "GET",
            f"{self.api_url}/athlete/activities",
            params={"after": start - 1, "before": start + 1, "page": 1, "per_page": PER_PAGE},
            headers=self.auth_headers(ctx.credentials),
            check=False,
            inspect=budget.inspect,
        ).json()
        item = next((i for i in listed if _key_and_start(i)[0] == key), None) if isinstance(listed, list) else None
        if item is None:
            yield RawPage(type="activities", payload=[detail], cursor=cursor, context={"detail": True})
        else:
            known = {key: book.known[key][0]}
            yield RawPage(type="activities", payload=[item], cursor=cursor, context={"calories": known})

    def authorized(self, ctx: SyncContext) -> bool:
        response = ctx.http.request(
            "GET", f"{self.api_url}/athlete", headers=self.auth_headers(ctx.credentials), check=False
        )
        if response.status_code == 401:
            return False
        raise_for_status(response, detail=_fault(response))
        return True

    # --- normalize -----------------------------------------------------------------------
    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Record]:
        records: list[Record] = []
        from_detail = bool(page.context.get("detail"))
        known: dict[str, float | None] = page.context.get("calories") or {}
        for item in page.payload:
            try:
                if from_detail:
                    record = activity_record(item, _calories(item), detail=True)
                else:
                    key, _ = _key_and_start(item)
                    record = activity_record(item, known.get(key or ""), known=(key in known))
            except BadItem as exc:
                page.skipped(str(exc), type="activities")
                continue
            records.append(record)
        return records


_NOT_NOW = object()


@dataclass
class CalorieBook:
    """What the cursor remembers of activity details: calories learnt (id -> [kcal, start]) for
    the activities the trailing window re-reads, and the activities still waiting (id -> start)."""

    known: dict[str, tuple[float | None, int]] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: Any) -> CalorieBook:
        book = cls()
        if not isinstance(raw, dict):
            return book
        for key, entry in (raw.get("known") or {}).items():
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], int):
                kcal = entry[0] if isinstance(entry[0], int | float) and not isinstance(entry[0], bool) else None
                book.known[str(key)] = (kcal, entry[1])
        for entry in raw.get("pending") or []:
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], int):
                book.pending[str(entry[0])] = entry[1]
        return book

    def learn(self, key: str, calories: float | None, start: int) -> None:
        self.known[key] = (calories, start)
        self.pending.pop(key, None)

    def state(self, now: datetime) -> dict[str, Any]:
        horizon = int((now - KEEP_KNOWN).timestamp())
        known = {k: [kcal, start] for k, (kcal, start) in self.known.items() if start >= horizon}
        waiting = sorted(self.pending.items(), key=lambda kv: kv[1], reverse=True)
        if len(waiting) > MAX_PENDING:
            log.warning("Strava: %d activities wait for their calories; the oldest are given up", len(waiting))
            waiting = waiting[:MAX_PENDING]
        return {"known": known, "pending": [[k, start] for k, start in waiting]}


@dataclass
class _Run:
    ctx: SyncContext
    budget: RateBudget
    book: CalorieBook
    limit: int
    fetched: int = 0
    stopped: bool = False


# --- rate limits -----------------------------------------------------------------------------


@dataclass
class RateBudget:
    """What Strava's X-RateLimit-* and X-ReadRateLimit-* headers said about the app's budget."""

    # (15-minute usage, 15-minute limit, daily usage, daily limit) per header family
    seen: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)

    def inspect(self, response: requests.Response) -> None:
        for family in ("X-RateLimit", "X-ReadRateLimit"):
            usage = _pair(response.headers.get(f"{family}-Usage"))
            limit = _pair(response.headers.get(f"{family}-Limit"))
            if usage and limit:
                self.seen[family] = (usage[0], limit[0], usage[1], limit[1])
        _api_status(response, self)

    def wait(self, now: datetime) -> float | None:
        """Seconds until the exhausted window resets, or None if there is room left."""
        wait: float | None = None
        for short_used, short_limit, day_used, day_limit in self.seen.values():
            if day_used >= day_limit - RATE_RESERVE:
                wait = max(wait or 0, _until_midnight(now))
            elif short_used >= short_limit - RATE_RESERVE:
                wait = max(wait or 0, _until_quarter(now))
        return wait

    def check(self, now: datetime) -> None:
        wait = self.wait(now)
        if wait is not None:
            raise RateLimited("Strava's rate limit is nearly used up; waiting for its window to reset", wait)

    def room_for_details(self) -> bool:
        """Whether the app has used less than DETAIL_SHARE of every limit Strava reported."""
        if not self.seen:
            return False
        return all(
            short_used < short_limit * DETAIL_SHARE and day_used < day_limit * DETAIL_SHARE
            for short_used, short_limit, day_used, day_limit in self.seen.values()
        )


def _pair(raw: str | None) -> tuple[int, int] | None:
    parts = (raw or "").split(",")
    if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def _until_quarter(now: datetime) -> float:
    """Strava's 15-minute windows reset at :00, :15, :30 and :45."""
    now = now.astimezone(UTC)
    start = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    return (start + timedelta(minutes=15) - now).total_seconds() + 1


def _until_midnight(now: datetime) -> float:
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return (midnight - now).total_seconds() + 1


def _event_id(event: dict[str, Any], key: str) -> str:
    value = event.get(key)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | str)
        or not str(value).isascii()
        or not str(value).isdigit()
    ):
        return ""
    return str(value)


def _subscription_status(response: requests.Response) -> None:
    """Strava's answer to a push subscription call, its `Fault` named (e.g. `PushSubscription
    callback url GET to callback URL does not return 200`, or `already exists`)."""
    if response.status_code >= 400:
        raise_for_status(response, detail=_fault(response), retry_after=60.0)
    if response.status_code != 204:
        decode_json(response)


# --- HTTP answers ----------------------------------------------------------------------------


def _api_status(response: requests.Response, budget: RateBudget) -> None:
    if response.status_code == 401 and _missing_permission(response):
        # The token is fine but the athlete did not grant activity access: a refresh won't help.
        raise PermanentError(f"Strava answered 401 ({_fault(response)}): reconnect and allow activity access")
    if response.status_code >= 400:
        # Strava sends no Retry-After on a 429: the engine's rate budget, corrected by the
        # rate-limit headers, knows which window is spent and when it resets.
        raise_for_status(response, detail=_fault(response))
    decode_json(response)  # a malformed body is retried like a 5xx


def _missing_permission(response: requests.Response) -> bool:
    """Strava's 401 for a scope the token lacks: `{resource: AccessToken, field:
    activity:read_permission, code: missing}`."""
    try:
        body = response.json()
    except ValueError:
        return False
    errors = body.get("errors") if isinstance(body, dict) else None
    return isinstance(errors, list) and any(
        isinstance(e, dict) and str(e.get("field", "")).endswith("_permission") and e.get("code") == "missing"
        for e in errors
    )


def _token_status(response: requests.Response) -> None:
    raise_for_token_status(response, "Strava")


def _fault(response: requests.Response) -> str:
    """Strava's `Fault {message, errors: [{resource, field, code}]}` in a few words."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        return " ".join(str(first.get(k, "?"))[:60] for k in ("resource", "field", "code"))
    message = body.get("message") if isinstance(body, dict) else None
    return str(message)[:100] if message else f"HTTP {response.status_code}"


# --- activities -> records --------------------------------------------------------------------


def _field(item: Any, key: str) -> Any:
    if not isinstance(item, dict):
        raise BadItem("activity is not an object")
    if item.get(key) is None:
        raise BadItem(f"{key} is missing")
    return item[key]


def _number(item: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    if optional and item.get(key) is None:
        return None
    value = _field(item, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadItem(f"{key} is not a number")
    return float(value)


def _activity_id(item: Any) -> str:
    value = _field(item, "id")
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and value.isascii() and value.isdigit())
    ):
        raise BadItem("id is not an integer")
    return str(value)


def _clock(item: dict[str, Any], key: str) -> datetime:
    """The date-time digits of `key`, naive. `start_date` is UTC; `start_date_local` is the
    local wall clock, though Strava writes it with a `Z` too."""
    raw = _field(item, key)
    try:
        moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise BadItem(f"{key} is not an ISO 8601 date-time") from None
    if key == "start_date" and moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None)


def _key_and_start(item: Any) -> tuple[str | None, int]:
    try:
        return _activity_id(item), int(_clock(item, "start_date").replace(tzinfo=UTC).timestamp())
    except BadItem:
        return None, 0


def _readable(item: Any) -> bool:
    try:
        activity_record(item, None)
    except BadItem:
        return False
    return True


def _zone_offset(item: dict[str, Any], wall: datetime) -> int | None:
    """Minutes east of UTC at `wall` in the activity's `timezone`, "(GMT-08:00) America/Los_Angeles"
    or a bare IANA name. The "(GMT...)" label is the zone's standard offset, never read as such."""
    raw = item.get("timezone")
    if not isinstance(raw, str) or not raw.strip():
        return None
    name = raw.strip().split(" ", 1)[1] if raw.strip().startswith("(") and " " in raw.strip() else raw.strip()
    try:
        offset = wall.replace(tzinfo=ZoneInfo(name)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return round(offset.total_seconds() / 60) if offset is not None else None


def _utc_offset(item: dict[str, Any]) -> int | None:
    """`utc_offset` (seconds, int or float; not in every payload) in minutes."""
    seconds = _number(item, "utc_offset", optional=True)
    if seconds is None or abs(seconds) > MAX_OFFSET * 60:
        return None
    return round(seconds / 60)


def _start(item: dict[str, Any]) -> tuple[datetime, int, date]:
    """(UTC start, minutes east of UTC, local day). The offset is `start_date_local` minus
    `start_date`, which every payload has; `utc_offset`, then the `timezone` name, stand in when
    `start_date_local` is missing, or when the start is hidden (both fields "...T00:00:01Z":
    only the local day is real)."""
    start_raw = _field(item, "start_date")
    start = _clock(item, "start_date")
    if item.get("start_date_local") is None:
        offset = _utc_offset(item)
        if offset is None:
            offset = _zone_offset(item, start)  # a wall-clock guess of the zone's offset; close enough
        if offset is None:
            raise BadItem("start_date_local is missing")
        return start.replace(tzinfo=UTC), offset, (start + timedelta(minutes=offset)).date()
    wall = _clock(item, "start_date_local")
    if HIDDEN_START in str(item["start_date_local"]) and HIDDEN_START in str(start_raw):
        # The start stays Strava's `start_date`, the instant its `after`/`before` filter on, so
        # the trailing window never deletes the activity at its edge; the day is the local one.
        offset = _utc_offset(item)
        if offset is None:
            offset = _zone_offset(item, wall) or 0
        return start.replace(tzinfo=UTC), offset, wall.date()
    offset = round((wall - start).total_seconds() / 60)
    if abs(offset) > MAX_OFFSET:
        raise BadItem("start_date_local is more than 14 hours from start_date")
    return start.replace(tzinfo=UTC), offset, wall.date()


def sport(item: dict[str, Any]) -> str:
    name = item.get("sport_type") or item.get("type")  # `type` is the older, coarser field
    if not isinstance(name, str) or not name:
        raise BadItem("sport_type and type are missing")
    return SPORT_TYPES.get(name) or re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _calories(item: Any) -> float | None:
    """A DetailedActivity's `calories` (kcal); None where it has none."""
    value = item.get("calories") if isinstance(item, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def activity_record(item: Any, calories: float | None, *, known: bool = False, detail: bool = False) -> Record:
    """One SummaryActivity (or DetailedActivity, `detail`) as an activity. `calories` come from
    the activity's detail; `known` says a list item's detail was read, so sourceData carries them."""
    activity_id = _activity_id(item)
    start, offset, day = _start(item)
    elapsed = _number(item, "elapsed_time")
    assert elapsed is not None
    if elapsed < 0:
        raise BadItem("elapsed_time is negative")
    # Moving time (pauses excluded) is the activity's duration, as Strava shows it; the record
    # spans the elapsed time on the wall clock.
    moving = _number(item, "moving_time", optional=True)
    fields = {
        "type": sport(item),
        "duration": round(moving if moving is not None else elapsed),
        "distance": _number(item, "distance", optional=True),
        "steps": None,  # Strava doesn't count steps
        "calories": calories,
    }
    if detail:
        source = {k: v for k, v in item.items() if k not in DETAIL_ONLY}
        if isinstance(source.get("map"), dict):  # the full route; lists carry only its summary
            source["map"] = {k: v for k, v in source["map"].items() if k != "polyline"}
    else:
        source = dict(item)
        if known and calories is not None:
            source["calories"] = calories  # from the activity's detail
    end = start + timedelta(seconds=elapsed)
    return Record("activities", activity_id, start, offset, end, fields=fields, source_data=source, day=day)
