from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.utils.http import urlencode
from django.views import View
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from humanapi_project import crypto
from humanapi_project.errors import error_body, error_response
from humanapi_project.parsers import StrictCharField, UserIdField, storable_text
from sources.base import AuthKind, AuthorizationFailed, SourceError
from sources.models import Connection, ConnectionStatus
from sources.registry import enabled_plugins, plugin_classes
from sources.services import UnknownSource, connection_authorize_form, connection_disconnect

from . import ratelimit
from .audit import client_ip
from .models import Actor, Token
from .oauth import BROWSER_COOKIE, OAuthOutcome, OAuthProblem, oauth_callback, oauth_start, result_open, result_seal
from .services import (
    ExchangeError,
    authenticate_client,
    connect_completed,
    legacy_public_token_exchange,
    legacy_tokens_exchange,
    previous_status,
    resolve_connect_token,
    token_exchange,
)

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
OAUTH_ASSETS = Path(__file__).resolve().parent / "oauth_assets"


class ExchangeView(APIView):
    """Base of the token endpoints: validate `Input`, call `exchange`, answer its JSON or the
    error envelope of an ExchangeError.

    Limits: every request counts per client address (`check_throttles`). Wrong credentials count
    per (client_id, address), so guessing is slowed where it comes from; only requests whose
    secret is right count against the Application's own limit, so nobody who merely knows a
    public client_id can use up the tenant's budget."""

    client_field = "client_id"  # the field that names the Application
    secret_field = "client_secret"  # noqa: S105 - a field name, not a secret
    Input: type[serializers.Serializer[dict[str, Any]]]

    def exchange(self, values: dict[str, Any], request: HttpRequest) -> dict[str, Any]:
        raise NotImplementedError

    def check_throttles(self, request: Request) -> None:
        # DRF's place for limits (before the handler); the counting is connect.ratelimit's.
        ratelimit.enforce(ratelimit.hit(ratelimit.limit("token-ip"), client_ip(request._request) or "unknown"))

    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        client_id, secret = values[self.client_field], values[self.secret_field]
        source = f"{client_id}\n{client_ip(request._request) or 'unknown'}"
        ratelimit.enforce(ratelimit.peek(ratelimit.token_failure_limit(), source))
        try:
            authenticate_client(client_id, secret)
        except ExchangeError as exc:
            ratelimit.hit(ratelimit.token_failure_limit(), source)
            return Response(error_body(exc.status, exc.message, request._request), status=exc.status)
        ratelimit.enforce(ratelimit.hit(ratelimit.limit("token-client"), client_id))
        try:
            body = self.exchange(values, request._request)
        except ExchangeError as exc:
            return Response(error_body(exc.status, exc.message, request._request), status=exc.status)
        return Response(body)


class TokenView(ExchangeView):
    """POST /v1/connect/token: the client app's server trades its credentials for tokens."""

    class Input(serializers.Serializer[dict[str, Any]]):
        client_id = StrictCharField(max_length=64)
        client_secret = StrictCharField(max_length=200)
        type = serializers.ChoiceField(choices=["session", "id", "access", "refresh"])
        client_user_id = UserIdField(max_length=255, required=False)
        client_user_email = serializers.EmailField(max_length=320, required=False)
        refresh_token = StrictCharField(max_length=200, required=False)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            kind = attrs["type"]
            if kind != "refresh" and not attrs.get("client_user_id"):
                raise serializers.ValidationError({"client_user_id": "This field is required."})
            if kind == "session" and not attrs.get("client_user_email"):
                raise serializers.ValidationError({"client_user_email": "This field is required for type=session."})
            if kind == "refresh" and not attrs.get("refresh_token"):
                raise serializers.ValidationError({"refresh_token": "This field is required for type=refresh."})
            return attrs

    def exchange(self, values: dict[str, Any], request: HttpRequest) -> dict[str, Any]:
        return token_exchange(data=values, request=request)


class LegacyTokensView(ExchangeView):
    """POST /v1/connect/tokens (Human API v1): session token -> access token + public token."""

    client_field = "clientId"
    secret_field = "clientSecret"  # noqa: S105 - a field name, not a secret

    class Input(serializers.Serializer[dict[str, Any]]):
        humanId = StrictCharField(max_length=64)
        clientId = StrictCharField(max_length=64)
        sessionToken = StrictCharField(max_length=200)
        clientSecret = StrictCharField(max_length=200)

    def exchange(self, values: dict[str, Any], request: HttpRequest) -> dict[str, Any]:
        return legacy_tokens_exchange(
            human_id=values["humanId"],
            client_id=values["clientId"],
            client_secret=values["clientSecret"],
            session_token=values["sessionToken"],
            request=request,
        )


class LegacyPublicTokensView(ExchangeView):
    """POST /v1/connect/publictokens (Human API v1): a fresh public token for a Human."""

    client_field = "clientId"
    secret_field = "clientSecret"  # noqa: S105 - a field name, not a secret

    class Input(serializers.Serializer[dict[str, Any]]):
        humanId = StrictCharField(max_length=64)
        clientId = StrictCharField(max_length=64)
        clientSecret = StrictCharField(max_length=200)

    def exchange(self, values: dict[str, Any], request: HttpRequest) -> dict[str, Any]:
        return legacy_public_token_exchange(
            human_id=values["humanId"],
            client_id=values["clientId"],
            client_secret=values["clientSecret"],
            request=request,
        )


# --- the Connect page ----------------------------------------------------------------------


def csrf_for(token: Token) -> str:
    """Connect runs in a third-party iframe, where cookies can't be relied on, so its CSRF token
    is bound to the Connect session's own bearer token instead of a cookie."""
    return crypto.sign("connect-csrf", token.token_hash)


def csrf_matches(token: Token, candidate: str) -> bool:
    """A page rendered before SECRET_KEY changed keeps working while the old key is a fallback."""
    return crypto.signed_matches("connect-csrf", token.token_hash, candidate)


def initials(name: str) -> str:
    words = [w for w in name.replace("-", " ").split() if w]
    return "".join(w[0] for w in words[:2]).upper() or "?"


def connection_list(human_id: str) -> list[dict[str, Any]]:
    names = {slug: cls.name for slug, cls in plugin_classes().items()}
    rows = (
        Connection.objects.filter(human_id=human_id)
        .exclude(status=ConnectionStatus.DISCONNECTED)
        .order_by("connected_at")
    )
    return [{"id": c.pk, "source": c.source, "name": names.get(c.source, c.source), "status": c.status} for c in rows]


def frame_policy(response: HttpResponse, origins: list[str] | None) -> HttpResponse:
    ancestors = " ".join(origins) if origins else "'none'"
    if origins is None:
        ancestors = "*"  # a page with nobody's data on it (bad token) may be framed anywhere
    response["Content-Security-Policy"] = (
        f"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        f"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    )
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    # Opened top-level (popups blocked earlier, or a link), Connect still opens the sign-in
    # popup, whose pages must keep it as their opener (see keep_opener).
    response["Cross-Origin-Opener-Policy"] = "same-origin-allow-popups"
    return response


@xframe_options_exempt
def connect_page(request: HttpRequest) -> HttpResponse:
    token, status = resolve_connect_token(request.GET.get("token", ""))
    state: dict[str, Any]
    if token is None:
        messages = {
            "MISSING_SESSION_TOKEN": "This page was opened without a session token.",
            "SESSION_TOKEN_INVALID": "This link is not valid. Close this window and try again from the app.",
            "SESSION_TOKEN_EXPIRED": "This session has expired. Close this window and open it again from the app.",
        }
        state = {"status": status, "message": messages[status], "origins": []}
        response = render(request, "connect/index.html", {"state": state, "app_name": ""}, status=200)
        return frame_policy(response, None)
    application = token.application
    state = {
        "status": "",
        "csrf": csrf_for(token),
        "origins": list(application.allowed_origins),
        "sources": [
            {
                "slug": p.slug,
                "name": p.name,
                "initials": initials(p.name),
                "authKind": str(p.auth_kind),
                "fields": [
                    {
                        "name": f.name,
                        "label": f.label,
                        "kind": f.kind,
                        "required": f.required,
                        "autocomplete": f.autocomplete,
                    }
                    for f in _form_fields(p, application.source_config(p.slug))
                ],
            }
            for p in enabled_plugins()
        ],
        "connections": connection_list(token.human_id),
    }
    # Redirect mode of the OAuth flow comes back here with its (signed) result to show.
    oauth_result = result_open(request.GET.get("oauth_result", ""), token.human_id)
    if oauth_result is not None:
        state["oauthResult"] = oauth_result
    response = render(request, "connect/index.html", {"state": state, "app_name": application.name})
    return frame_policy(response, list(application.allowed_origins))


def _form_fields(plugin: Any, app_config: dict[str, str]) -> list[Any]:
    if plugin.auth_kind == AuthKind.OAUTH2_CODE:
        return []
    fields = list(plugin.credential_fields)
    # Fields the operator configured for the Application are not asked of the user.
    return [f for f in fields if f.name not in app_config]


def _session(request: HttpRequest, body: dict[str, str]) -> tuple[Token | None, JsonResponse | None]:
    """The Connect session of a form request, or the response that refuses it. Every request
    counts per client address (bad tokens too), then a good one per session."""
    refused = _refused(request, ratelimit.hit(ratelimit.limit("connect-ip"), _address(request)))
    if refused is not None:
        return None, refused
    token, status = resolve_connect_token(body.get("token", ""))
    if token is None:
        response = error_response(401, status, request)
        return None, response
    if not csrf_matches(token, body.get("csrf", "")):
        return None, error_response(403, "The form's CSRF token is missing or wrong; reload the page", request)
    refused = _refused(request, ratelimit.hit(ratelimit.limit("connect-session"), str(token.pk)))
    return (None, refused) if refused is not None else (token, None)


def _address(request: HttpRequest) -> str:
    return client_ip(request) or "unknown"


def _refused(request: HttpRequest, *verdicts: ratelimit.Verdict) -> JsonResponse | None:
    """429 for the first verdict that refuses, None when all allow."""
    for verdict in verdicts:
        if not verdict.allowed:
            return ratelimit.limited_response(verdict, request)
    return None


def _changes(human_id: str) -> tuple[ratelimit.Limit, str]:
    """The limit on connections made or removed for a Human (each sends a webhook)."""
    return ratelimit.limit("connect-changes"), human_id


def _form_body(request: HttpRequest) -> dict[str, str]:
    if request.content_type == "application/json":
        try:
            parsed = json.loads(request.body or b"{}")
        except (ValueError, RecursionError):
            return {}
        if not storable_text(parsed):
            return {}
        return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
    return {key: str(value) for key, value in request.POST.items()}


@method_decorator(csrf_exempt, name="dispatch")  # checked against the Connect session instead
class ConnectSourceView(View):
    """POST /connect/sources/<slug>/connect: the credential form of a source."""

    def post(self, request: HttpRequest, slug: str) -> JsonResponse:
        body = _form_body(request)
        token, problem = _session(request, body)
        if problem is not None or token is None:
            return problem  # type: ignore[return-value]
        form = {k: v[:1000] for k, v in body.items() if k not in ("token", "csrf")}
        # Failed sign-ins count per (session, username): guessing one account's password is
        # slowed without locking anyone else out; the session's own limit bounds spraying.
        sign_in = (ratelimit.limit("connect-failures"), f"{token.pk}\n{form.get('username', '').strip().casefold()}")
        refused = _refused(request, ratelimit.peek(*sign_in), ratelimit.peek(*_changes(token.human_id)))
        if refused is not None:
            return refused
        before = previous_status(token.human, slug)
        try:
            connection = connection_authorize_form(human=token.human, slug=slug, form=form, request=request)
        except UnknownSource:
            return error_response(404, f"No source {slug!r} that connects with a form", request)
        except AuthorizationFailed as exc:
            ratelimit.hit(*sign_in)
            return error_response(400, str(exc), request, list(exc.fields) or ["username", "password"])
        except SourceError as exc:
            return error_response(502, f"The provider could not be reached: {exc}", request)
        ratelimit.hit(*_changes(token.human_id))
        connect_completed(session=token, connection=connection, previous_status=before, request=request)
        return JsonResponse(
            {
                "status": "CONNECTED_SOURCE",
                "connection": {"id": connection.pk, "name": _name(slug), "source": slug},
                "currentConnections": connection_list(token.human_id),
            }
        )


@method_decorator(csrf_exempt, name="dispatch")
class DisconnectView(View):
    def post(self, request: HttpRequest, connection_id: str) -> JsonResponse:
        body = _form_body(request)
        token, problem = _session(request, body)
        if problem is not None or token is None:
            return problem  # type: ignore[return-value]
        connection = (
            Connection.objects.select_related("human__application")
            .filter(pk=connection_id, human_id=token.human_id)
            .exclude(status=ConnectionStatus.DISCONNECTED)
            .first()
        )
        if connection is None:
            return error_response(404, "No such connection", request)
        refused = _refused(request, ratelimit.hit(*_changes(token.human_id)))
        if refused is not None:
            return refused
        connection_disconnect(connection=connection, actor=Actor.END_USER, request=request)
        return JsonResponse(
            {
                "status": "DISCONNECTED_SOURCE",
                "connection": {"id": connection.pk, "name": _name(connection.source), "source": connection.source},
                "currentConnections": connection_list(token.human_id),
            }
        )


@method_decorator(csrf_exempt, name="dispatch")
class ConnectionsView(View):
    """POST /connect/connections: this Connect session's current connections. The page asks
    when a sign-in popup closed without reporting back (a provider page may sever
    `window.opener`), so a connection made in the popup is still recognised."""

    def post(self, request: HttpRequest) -> JsonResponse:
        token, problem = _session(request, _form_body(request))
        if problem is not None or token is None:
            return problem  # type: ignore[return-value]
        return JsonResponse({"currentConnections": connection_list(token.human_id)})


def _name(slug: str) -> str:
    cls = plugin_classes().get(slug)
    return cls.name if cls else slug


_ASSET_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def asset(request: HttpRequest, name: str) -> FileResponse:
    path = (ASSETS / name).resolve()
    if path.parent != ASSETS or path.suffix not in _ASSET_TYPES or not path.is_file():
        raise Http404(name)
    response = FileResponse(path.open("rb"), content_type=_ASSET_TYPES[path.suffix])
    response["Cache-Control"] = "public, max-age=300" if not settings.DEBUG else "no-cache"
    response["Access-Control-Allow-Origin"] = "*"
    return response


def client_js(request: HttpRequest) -> FileResponse:
    return asset(request, "client.js")


# --- OAuth2 authorization code (connect.oauth) --------------------------------------------

_TOKEN_MESSAGES = {
    "MISSING_SESSION_TOKEN": "This page was opened without a session token. Close it and try again from the app.",
    "SESSION_TOKEN_INVALID": "This link is not valid. Close this window and try again from the app.",
    "SESSION_TOKEN_EXPIRED": "This session has expired. Close this window and open Connect again from the app.",
}


@require_GET
def oauth_start_view(request: HttpRequest, slug: str) -> HttpResponse:
    """GET /connect/oauth/<slug>/start?token=&csrf=[&redirect=1]: off to the provider. Each start
    writes a state row and an audit entry: limited per client address and per Connect session,
    and refused once the Human's connection changes are used up."""
    verdict = ratelimit.hit(ratelimit.limit("connect-ip"), _address(request))
    if not verdict.allowed:
        return _oauth_limited(request, slug, verdict)
    token_value = request.GET.get("token", "")
    token, status = resolve_connect_token(token_value)
    if token is None:
        return _oauth_page(request, OAuthOutcome(ok=False, slug=slug, message=_TOKEN_MESSAGES[status]), 401)
    if not csrf_matches(token, request.GET.get("csrf", "")):
        message = "This request did not come from the Connect page. Close this window and try again."
        return _oauth_page(request, OAuthOutcome(ok=False, slug=slug, message=message), 403)
    for verdict in (
        ratelimit.hit(ratelimit.limit("connect-session"), str(token.pk)),
        ratelimit.peek(*_changes(token.human_id)),
    ):
        if not verdict.allowed:
            return _oauth_limited(request, slug, verdict)
    browser_id = _browser_id(request)
    try:
        url = oauth_start(
            session=token,
            session_value=token_value,
            slug=slug,
            redirect_mode=request.GET.get("redirect") == "1",
            browser_id=browser_id,
            request=request,
        )
    except OAuthProblem as exc:
        return _oauth_page(request, OAuthOutcome(ok=False, slug=slug, message=exc.message), exc.status)
    except Exception:
        # A person in a popup must read what happened, never a bare server error.
        log.exception("starting the %s sign-in failed", slug)
        return _oauth_page(request, OAuthOutcome(ok=False, slug=slug, message=_unavailable(slug)), 503)
    response = keep_opener(HttpResponseRedirect(url))
    response["Referrer-Policy"] = "no-referrer"  # the Connect token is in this URL
    response["Cache-Control"] = "no-store"
    response.set_cookie(
        BROWSER_COOKIE,
        browser_id,
        max_age=settings.OAUTH_STATE_TTL + 60,
        path="/connect/oauth/",
        secure=request.is_secure(),
        httponly=True,
        samesite="Lax",  # sent on the provider's top-level redirect back to the callback
    )
    return response


@require_GET
def oauth_callback_view(request: HttpRequest) -> HttpResponse:
    """GET /connect/oauth/callback?code=&state= (or ?error=&state=): the provider's way back."""
    verdict = ratelimit.hit(ratelimit.limit("connect-ip"), _address(request))
    if not verdict.allowed:
        return _oauth_limited(request, "", verdict)
    status = 200
    try:
        outcome = oauth_callback(
            state=request.GET.get("state", ""),
            code=request.GET.get("code", ""),
            error=request.GET.get("error", ""),
            browser_id=request.COOKIES.get(BROWSER_COOKIE, ""),
            request=request,
        )
    except OAuthProblem as exc:
        outcome = OAuthOutcome(ok=False, slug=exc.slug, message=exc.message, state=exc.state)
        status = exc.status
    except Exception:
        log.exception("completing a sign-in failed")
        outcome = OAuthOutcome(ok=False, slug="", message=_unavailable(""))
        status = 503
    if outcome.ok and outcome.connection is not None:
        ratelimit.hit(*_changes(outcome.connection.human_id))
    redirect_token = outcome.redirect_token
    if redirect_token and outcome.state is not None:
        # Redirect mode: back to the Connect page, which shows the (signed) result.
        sealed = result_seal(_result(outcome), outcome.state.human_id)
        query = urlencode({"token": redirect_token, "mode": "auth", "oauth_result": sealed})
        response = HttpResponseRedirect(f"/connect/?{query}")
        response["Referrer-Policy"] = "no-referrer"
        response["Cache-Control"] = "no-store"
        return response
    return _oauth_page(request, outcome, status)


def _oauth_limited(request: HttpRequest, slug: str, verdict: ratelimit.Verdict) -> HttpResponse:
    """The sign-in popup's 429: a page a person can read (as every error of these pages), with
    Retry-After."""
    response = _oauth_page(request, OAuthOutcome(ok=False, slug=slug, message=verdict.message), 429)
    response["Retry-After"] = str(verdict.retry_after)
    return response


def _unavailable(slug: str) -> str:
    name = _name(slug) if slug else "The provider"
    return (
        f"{name} can't be connected right now: this server could not complete the sign-in. Nothing was "
        "connected. Please close this window and try again later; if it keeps happening, tell the app's support."
    )


def keep_opener(response: HttpResponse) -> HttpResponse:
    """The sign-in popup's pages must keep `window.opener` (the Connect iframe, under the client
    app's page): the result page posts to it. SecurityMiddleware's default COOP `same-origin`
    would put the popup in a new browsing context group, which cuts the opener and makes
    Connect see the popup as closed, so these pages opt out (the middleware only sets a
    default)."""
    response["Cross-Origin-Opener-Policy"] = "unsafe-none"
    return response


def _browser_id(request: HttpRequest) -> str:
    current = request.COOKIES.get(BROWSER_COOKIE, "")
    return current if 20 <= len(current) <= 100 else crypto.new_token()


def _result(outcome: OAuthOutcome) -> dict[str, Any]:
    """The message posted to the Connect page (window.opener), CONTRACT-internal protocol."""
    result: dict[str, Any] = {"type": "hapi-oauth-result", "ok": outcome.ok, "slug": outcome.slug}
    if outcome.ok and outcome.connection is not None:
        connection = outcome.connection
        result["connection"] = {"id": connection.pk, "name": _name(connection.source), "source": connection.source}
        result["currentConnections"] = connection_list(connection.human_id)
    else:
        result["message"] = outcome.message
    return result


def _oauth_page(request: HttpRequest, outcome: OAuthOutcome, status: int) -> HttpResponse:
    result = _result(outcome)
    context = {"result": result, "title": _page_title(outcome), "source_name": _name(outcome.slug)}
    response = keep_opener(render(request, "connect/oauth_done.html", context, status=status))
    response["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    return response


def _page_title(outcome: OAuthOutcome) -> str:
    if outcome.ok:
        return f"{_name(outcome.slug)} is connected"
    return "Nothing was connected"


def oauth_js(request: HttpRequest) -> FileResponse:
    """The OAuth result page's script, served from its own folder (CSP: no inline script)."""
    response = FileResponse((OAUTH_ASSETS / "oauth_done.js").open("rb"), content_type=_ASSET_TYPES[".js"])
    response["Cache-Control"] = "public, max-age=300" if not settings.DEBUG else "no-cache"
    return response
