"""Hooks of the Schemathesis run in tests/test_schemathesis.py (its configuration names this file).

gunicorn answers a request line longer than its `--limit-request-line` (4094 bytes by default, as
the README runs it) with its own 414 HTML page, before the application sees the request: that is
the HTTP server's limit, not part of the API. Such requests (a query of kilobytes of generated
values) are not sent."""

from __future__ import annotations

from typing import Any

import requests
import schemathesis

GUNICORN_LIMIT_REQUEST_LINE = 4094


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case[Any]) -> bool:
    kwargs = case.as_transport_kwargs(base_url="http://localhost")
    prepared = requests.Request(kwargs["method"], kwargs["url"], params=kwargs.get("params")).prepare()
    return len(f"{prepared.method} {prepared.path_url} HTTP/1.1") <= GUNICORN_LIMIT_REQUEST_LINE
