"""What operators and their tools read: `/healthz` (the process answers), `/readyz` (the database
and the broker answer), `/metrics` (Prometheus, behind METRICS_TOKEN), one JSON line per request
when LOG_FORMAT=json, and the count of 429s served (humanapi_project.metrics)."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from connect.audit import client_ip

from .errors import error_response
from .metrics import DatabaseCollector, count_rate_limited
from .tasks import fold_metrics

log = logging.getLogger(__name__)
request_log = logging.getLogger("humanapi.request")

# How long /readyz waits for each dependency.
CHECK_TIMEOUT = 2.0
METRICS_TOKEN_MIN_LENGTH = 16


# --- readiness -----------------------------------------------------------------------------


class _Run:
    """One check, in a thread of its own: a dependency that hangs costs a probe CHECK_TIMEOUT."""

    def __init__(self, probe: Callable[[], None], name: str) -> None:
        self.started = time.monotonic()
        self.done = threading.Event()
        self.problem = ""
        threading.Thread(target=self._go, args=(probe,), name=f"readyz-{name}", daemon=True).start()

    def _go(self, probe: Callable[[], None]) -> None:
        try:
            probe()
        except Exception as exc:
            # The type only: a message may name hosts and users, never worth a probe's body.
            self.problem = f"unreachable ({type(exc).__name__})"
            log.warning("readiness check failed: %s", self.problem)
        finally:
            self.done.set()

    def result(self) -> str:
        if not self.done.wait(max(0.0, self.started + CHECK_TIMEOUT - time.monotonic())):
            return f"no answer within {CHECK_TIMEOUT:g} s"
        return self.problem or "ok"


class _Check:
    """Concurrent probes share the check under way; one still hanging is not started again
    until it ends, so a dead dependency never piles up threads."""

    def __init__(self, name: str, probe: Callable[[], None]) -> None:
        self.name, self.probe = name, probe
        self.lock = threading.Lock()
        self.current: _Run | None = None

    def start(self) -> _Run:
        with self.lock:
            if self.current is None or self.current.done.is_set():
                self.current = _Run(self.probe, self.name)
            return self.current


def _database() -> None:
    try:
        with connection.cursor() as cursor:  # this thread's own connection
            cursor.execute("SELECT 1")
    finally:
        connection.close()


def _broker() -> None:
    app = fold_metrics.app  # the project's Celery app, whichever thread asks
    timeouts = {"socket_connect_timeout": CHECK_TIMEOUT, "socket_timeout": CHECK_TIMEOUT}
    with app.connection_for_write(connect_timeout=CHECK_TIMEOUT, transport_options=timeouts) as conn:
        conn.ensure_connection(max_retries=0)


CHECKS = (_Check("database", _database), _Check("broker", _broker))


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> HttpResponse:
    runs = [(check.name, check.start()) for check in CHECKS]
    results = {name: run.result() for name, run in runs}
    ready = all(result == "ok" for result in results.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": results}, status=200 if ready else 503)


# --- metrics -------------------------------------------------------------------------------

_REGISTRY = CollectorRegistry(auto_describe=False)
_REGISTRY.register(DatabaseCollector())


def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if not token:
        return error_response(404, f"No such path: {request.path}", request)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        response = error_response(401, "Send METRICS_TOKEN as a bearer token", request)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    try:
        body = generate_latest(_REGISTRY)
    except Exception:
        log.warning("metrics could not be read", exc_info=True)
        return error_response(503, "Metrics could not be read from the database; try again", request)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


ENDPOINTS: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": healthz,
    "/readyz": readyz,
    "/metrics": metrics,
}


# --- the middleware ------------------------------------------------------------------------


class ObservabilityMiddleware:
    """Answers the operator endpoints before anything else runs (no session, no host check:
    probes and scrapers address a process by its IP), counts every 429, and writes the request
    line when LOG_FORMAT=json (not for probes and scrapes that succeed: they would drown the rest)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.monotonic()
        endpoint = ENDPOINTS.get(request.path_info)
        if endpoint is None:
            response = self.get_response(request)
        elif request.method in ("GET", "HEAD"):
            response = endpoint(request)
        else:
            response = error_response(405, f"{request.method} is not allowed here; use GET", request)
            response["Allow"] = "GET, HEAD"
        if response.status_code == 429:
            try:
                count_rate_limited()
            except Exception:  # the count is worth less than the answer
                log.warning("could not count a 429", exc_info=True)
        if settings.LOG_FORMAT == "json" and not (endpoint is not None and response.status_code < 400):
            _log_request(request, response, started)
        return response


def _log_request(request: HttpRequest, response: HttpResponse, started: float) -> None:
    status = response.status_code
    level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
    path = request.path[:500]  # never the query string: Connect's tokens and OAuth codes travel there
    fields: dict[str, Any] = {
        "method": request.method,
        "path": path,
        "status": status,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "request_id": getattr(request, "request_id", ""),
        "client": client_ip(request) or "",
    }
    request_log.log(level, "%s %s %s", request.method, path, status, extra=fields)


# --- settings ------------------------------------------------------------------------------


@checks.register("humanapi")
def check_observability_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    if settings.LOG_FORMAT not in ("text", "json"):
        errors.append(checks.Error(f"LOG_FORMAT must be text or json, got {settings.LOG_FORMAT!r}", id="humanapi.E201"))
    token = settings.METRICS_TOKEN
    if token and (len(token) < METRICS_TOKEN_MIN_LENGTH or not token.isprintable() or " " in token):
        errors.append(
            checks.Error(
                f"METRICS_TOKEN must be at least {METRICS_TOKEN_MIN_LENGTH} printable characters without spaces "
                "(it is all that guards /metrics); leave it empty to turn /metrics off",
                id="humanapi.E202",
            )
        )
    return errors
