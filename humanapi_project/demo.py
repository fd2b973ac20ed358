"""A sample client app, served only in demo mode: its page opens Connect with a fresh session
token, and its "server" exchanges for an access token and reads the user's data over HTTP,
exactly as a real client app's server would."""

import json
import secrets
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import requests
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path

from .errors import error_response

DEMO_USER_COOKIE = "demo_user"


def _credentials() -> dict[str, str]:
    return dict(json.loads(Path(settings.DEMO_CREDENTIALS_FILE).read_text()))


def _base(request: HttpRequest) -> str:
    return f"{request.scheme}://{request.get_host()}"


def page(request: HttpRequest) -> HttpResponse:
    user = request.COOKIES.get(DEMO_USER_COOKIE) or f"demo-{secrets.token_hex(4)}"
    app = _credentials()
    response = requests.post(
        f"{_base(request)}/v1/connect/token",
        json={
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "client_user_id": user,
            "client_user_email": f"{user}@example.com",
            "type": "session",
        },
        timeout=10,
    )
    response.raise_for_status()
    context = {"session_token": response.json()["session_token"], "base": _base(request), "user": user}
    html = render(request, "demo/index.html", context)
    html.set_cookie(DEMO_USER_COOKIE, user, max_age=30 * 86400, samesite="Lax")
    return html


def data(request: HttpRequest) -> JsonResponse:
    user = request.COOKIES.get(DEMO_USER_COOKIE, "")
    app = _credentials()
    exchange = requests.post(
        f"{_base(request)}/v1/connect/token",
        json={
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "client_user_id": user,
            "type": "access",
        },
        timeout=10,
    )
    if exchange.status_code == 404:
        return JsonResponse({"connected": False, "activities": [], "total": 0})
    exchange.raise_for_status()
    token = exchange.json()["access_token"]
    listing = requests.get(
        f"{_base(request)}/v1/human/activities",
        params={"limit": 20},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    listing.raise_for_status()
    return JsonResponse(
        {"connected": True, "activities": listing.json(), "total": int(listing.headers.get("X-Total-Count", "0"))}
    )


def _explained(view: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """The demo page answers what is missing, never a bare server error."""

    @wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        try:
            return view(request)
        except FileNotFoundError:
            message = (
                f"The demo application is not set up ({settings.DEMO_CREDENTIALS_FILE} is missing): run scripts/demo."
            )
        except (requests.RequestException, ValueError, KeyError):
            message = "The demo page could not reach this server's own API; is it running where this page is served?"
        return error_response(503, message, request)

    return wrapper


urlpatterns = [path("", _explained(page), name="demo-page"), path("data", _explained(data), name="demo-data")]
