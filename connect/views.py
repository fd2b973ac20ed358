from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from humanapi_project import crypto
from humanapi_project.errors import error_body, error_response
from sources.base import AuthKind, AuthorizationFailed, SourceError
from sources.models import Connection, ConnectionStatus
from sources.registry import enabled_plugins, plugin_classes
from sources.services import UnknownSource, connection_authorize_form, connection_disconnect

from .models import Actor, Token
from .services import ExchangeError, resolve_connect_token, token_exchange

ASSETS = Path(__file__).resolve().parent / "assets"


class TokenView(APIView):
    """POST /v1/connect/token: the client app's server trades its credentials for tokens."""

    class Input(serializers.Serializer[dict[str, Any]]):
        client_id = serializers.CharField(max_length=64)
        client_secret = serializers.CharField(max_length=200)
        type = serializers.ChoiceField(choices=["session", "id", "access", "refresh"])
        client_user_id = serializers.CharField(max_length=255, required=False)
        client_user_email = serializers.EmailField(max_length=320, required=False)
        refresh_token = serializers.CharField(max_length=200, required=False)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            kind = attrs["type"]
            if kind != "refresh" and not attrs.get("client_user_id"):
                raise serializers.ValidationError({"client_user_id": "This field is required."})
            if kind == "session" and not attrs.get("client_user_email"):
                raise serializers.ValidationError({"client_user_email": "This field is required for type=session."})
            if kind == "refresh" and not attrs.get("refresh_token"):
                raise serializers.ValidationError({"refresh_token": "This field is required for type=refresh."})
            return attrs

    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            body = token_exchange(data=dict(data.validated_data), request=request._request)
        except ExchangeError as exc:
            return Response(error_body(exc.status, exc.message, request._request), status=exc.status)
        return Response(body)


# --- the Connect page ----------------------------------------------------------------------


def csrf_for(token: Token) -> str:
    """Connect runs in a third-party iframe, where cookies can't be relied on, so its CSRF token
    is bound to the Connect session's own bearer token instead of a cookie."""
    return crypto.sign("connect-csrf", token.token_hash)


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
    response = render(request, "connect/index.html", {"state": state, "app_name": application.name})
    return frame_policy(response, list(application.allowed_origins))


def _form_fields(plugin: Any, app_config: dict[str, str]) -> list[Any]:
    if plugin.auth_kind == AuthKind.OAUTH2_CODE:
        return []
    fields = list(plugin.credential_fields)
    # Fields the operator configured for the Application are not asked of the user.
    return [f for f in fields if f.name not in app_config]


def _session(request: HttpRequest, body: dict[str, str]) -> tuple[Token | None, JsonResponse | None]:
    token, status = resolve_connect_token(body.get("token", ""))
    if token is None:
        response = error_response(401, status, request)
        return None, response
    if not crypto.hashes_match_plain(body.get("csrf", ""), csrf_for(token)):
        return None, error_response(403, "The form's CSRF token is missing or wrong; reload the page", request)
    return token, None


def _form_body(request: HttpRequest) -> dict[str, str]:
    if request.content_type == "application/json":
        try:
            parsed = json.loads(request.body or b"{}")
        except ValueError:
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
        try:
            connection = connection_authorize_form(human=token.human, slug=slug, form=form, request=request)
        except UnknownSource:
            return error_response(404, f"No source {slug!r} that connects with a form", request)
        except AuthorizationFailed as exc:
            return error_response(400, str(exc), request, ["username", "password"])
        except SourceError as exc:
            return error_response(502, f"The provider could not be reached: {exc}", request)
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
        connection_disconnect(connection=connection, actor=Actor.END_USER, request=request)
        return JsonResponse(
            {
                "status": "DISCONNECTED_SOURCE",
                "connection": {"id": connection.pk, "name": _name(connection.source), "source": connection.source},
                "currentConnections": connection_list(token.human_id),
            }
        )


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
