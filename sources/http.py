"""The one HTTP client every plugin uses: identifies this server, times out, and turns the
provider's transport-level answers into the engine's exceptions."""

from __future__ import annotations

import email.utils
import json as jsonlib
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import requests
from django.conf import settings

if TYPE_CHECKING:
    from .ratebudget import Gate

DEFAULT_TIMEOUT = (5.0, 30.0)
# Failures of transport that another try may not meet: timeouts, refused or reset connections,
# bodies cut short or undecodable.
TRANSIENT_FAILURES = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
log = logging.getLogger(__name__)


def backoff_delay(attempt: int, *, base: float = 1.0, cap: float = 300.0, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; a provider's Retry-After is a floor, never shortened."""
    delay = random.uniform(0, min(cap, base * 2**attempt))
    return max(delay, retry_after) if retry_after is not None else max(delay, base / 2)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also admits "²", which float() refuses
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ProviderHttp:
    """Retries rate limits and transient failures in place, with backoff, while the wait is
    short (`PROVIDER_RETRY_ATTEMPTS`, `PROVIDER_RETRY_MAX_WAIT`); past that the error reaches
    the engine, which reschedules the sync and resumes from its stored cursor. With a `gate`
    (set by the engine for a run), every call is first taken from the provider application's
    shared rate budget, and every answer corrects it (`sources.ratebudget`)."""

    def __init__(
        self,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = settings.OUTBOUND_USER_AGENT
        self.timeout = timeout
        self.sleep = sleep
        self.attempts = settings.PROVIDER_RETRY_ATTEMPTS
        self.max_wait = float(settings.PROVIDER_RETRY_MAX_WAIT)
        self.retries = 0  # how many times this client waited and tried again
        self.gate: Gate | None = None
        self.priority = "backfill"  # of the run using this client (sources.models.SyncPriority)

    def request(
        self,
        method: str,
        url: str,
        *,
        inspect: Callable[[requests.Response], None] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send, retrying in place; `inspect` may raise the engine's errors from a body
        (e.g. Humanity's HTTP 200 with status 91)."""
        from .base import RateLimited, TransientError

        attempt = 0
        while True:
            self._take_budget()
            try:
                response = self._send(method, url, **kwargs)
                if inspect is not None:
                    inspect(response)
                return response
            except (RateLimited, TransientError) as exc:
                retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
                if isinstance(exc, RateLimited) and self.gate is not None:
                    # The application's budget is empty for everyone until the provider's reset.
                    exc.retry_after = retry_after = self.gate.refused(retry_after)
                delay = backoff_delay(attempt, retry_after=retry_after)
                attempt += 1
                if attempt >= self.attempts or delay > self.max_wait:
                    raise
                log.info("retrying %s %s in %.1fs: %s", method, _safe(url), delay, exc)
                self.retries += 1
                self.sleep(delay)
                if isinstance(exc, RateLimited) and self.gate is not None:
                    self.gate.waited_out()

    def _take_budget(self) -> None:
        """Take this call from the shared budget. A backfill never waits for it in place (the
        engine reschedules it, freeing the worker); interactive work does while the wait is short."""
        from .base import BudgetSpent

        if self.gate is None:
            return
        for _ in range(self.attempts):
            wait = self.gate.take()
            if wait <= 0:
                return
            if not self.gate.interactive or wait > self.max_wait:
                break
            self.sleep(wait)
        raise BudgetSpent(f"{self.gate.name}'s rate budget is spent for now; it frees in {wait:.0f}s", wait)

    def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        check: bool = True,
        allow_redirects: bool = True,
    ) -> requests.Response:
        from .base import PermanentError, TransientError

        try:
            response = self.session.request(
                method,
                url,
                params=params,
                data=data,
                json=json,
                headers=dict(headers or {}),
                auth=auth,
                timeout=self.timeout,
                allow_redirects=allow_redirects,
            )
        except TRANSIENT_FAILURES as exc:
            raise TransientError(f"{method} {_safe(url)}: {type(exc).__name__}") from None
        except requests.RequestException as exc:  # an invalid URL, too many redirects: retrying won't help
            raise PermanentError(f"{method} {_safe(url)}: {type(exc).__name__}") from None
        if self.gate is not None:
            self.gate.observe(response)
        status = response.status_code
        if not allow_redirects and 300 <= status < 400:
            # A source that must not be led elsewhere (a user-given host checked against an
            # allowlist) treats a redirect as a refusal, never as a new address to call.
            raise PermanentError(f"{_safe(url)} answered a redirect ({status}), which is not followed")
        if check:
            raise_for_status(response)
        return response

    def get_json(self, url: str, **kwargs: Any) -> Any:
        def checked(response: requests.Response) -> None:
            decode_json(response)  # a malformed body is retried like a 5xx
            if "inspect" in kwargs and kwargs["inspect"] is not None:
                kwargs["inspect"](response)

        response = self.request("GET", url, **{**kwargs, "inspect": checked})
        return response.json()


def raise_for_status(response: requests.Response, *, detail: str = "", retry_after: float | None = None) -> None:
    """The engine's error for a data call's HTTP answer: 429 RateLimited (Retry-After, else
    `retry_after`), 401 TokenRejected, 5xx TransientError, other 4xx PermanentError.
    `detail` (a provider's own error words, never echoed input) is added to the message."""
    from .base import PermanentError, RateLimited, TokenRejected, TransientError

    status = response.status_code
    where = _safe(response.url)
    words = f" ({detail})" if detail else ""
    if status == 429:
        header = parse_retry_after(response.headers.get("Retry-After"))
        raise RateLimited(f"{where} answered 429", header if header is not None else retry_after)
    if status == 401:
        raise TokenRejected(f"{where} answered 401{words}")
    if status >= 500:
        raise TransientError(f"{where} answered {status}")
    if status >= 400:
        raise PermanentError(f"{where} answered {status}{words}")


def raise_for_token_status(response: requests.Response, provider: str) -> None:
    """A token endpoint's outage is never a refusal: 429 RateLimited, 5xx TransientError, a
    success whose body is not JSON TransientError. A 4xx is left to the caller, which reads
    the OAuth error and raises RefreshRefused."""
    from .base import RateLimited, TransientError

    status = response.status_code
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise RateLimited(f"{provider} token endpoint answered 429", retry_after)
    if status >= 500:
        raise TransientError(f"{provider} token endpoint answered {status}")
    if status < 400:
        decode_json(response)


def oauth_error_code(response: requests.Response) -> str:
    """The RFC 6749 `error` code of a refused grant (`invalid_grant`, ...), reduced to
    `[a-z_]` so nothing a client sent can be echoed; "HTTP <status>" when there is none."""
    try:
        body = response.json()
    except ValueError:
        body = None
    code = body.get("error") if isinstance(body, dict) else None
    cleaned = re.sub(r"[^a-z_]", "", str(code).lower())[:40] if isinstance(code, str) else ""
    return cleaned or f"HTTP {response.status_code}"


def decode_json(response: requests.Response) -> Any:
    from .base import TransientError

    try:
        return response.json()
    except (ValueError, jsonlib.JSONDecodeError, RecursionError):
        raise TransientError(f"{_safe(response.url)} returned a body that is not JSON (or nested too deeply)") from None


def _safe(url: str) -> str:
    """The URL without its query string, which may carry an access token."""
    return url.split("?", 1)[0]
