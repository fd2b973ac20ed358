"""Cross-origin reads of the Data API.

The Data API is authenticated by a bearer token, never by a cookie, so any origin may read it:
a page that holds a user's access token may use it from the browser. Allowing `*` without
credentials lets browsers send the Authorization header and never sends cookies.
"""

from __future__ import annotations

from django.http import HttpResponse, HttpResponseBase

ALLOWED_METHODS = "GET, HEAD, OPTIONS"
ALLOWED_HEADERS = "Authorization, Accept, Content-Type, X-Request-Id"
EXPOSED_HEADERS = "X-Total-Count, X-Total-Count-Exact, Link, X-Request-Id, Retry-After"
PREFLIGHT_MAX_AGE = "86400"


def add_cors_headers(response: HttpResponseBase) -> HttpResponseBase:
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    return response


def preflight_response() -> HttpResponse:
    response = HttpResponse(status=204)
    add_cors_headers(response)
    response["Access-Control-Allow-Methods"] = ALLOWED_METHODS
    response["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
    response["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
    return response
