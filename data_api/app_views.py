"""The Application API (CONTRACT §7): the client app's server manages its users and pulls
their data in batch. HTTP Basic with the App Key, for the Application named in the URL."""

from __future__ import annotations

import re
from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from connect import ratelimit
from connect.models import Application, Human
from humanapi_project.errors import error_body
from humanapi_project.parsers import StrictCharField, UserIdField

from . import app_selectors as selectors
from .app_services import NothingToSync, app_user_create, app_user_delete, app_user_request_sync
from .auth import AppKeyAuthentication
from .records import Page


class AppView(APIView):
    """Base of the Application API: request.user is the Application the App Key opened."""

    authentication_classes = [AppKeyAuthentication]

    @property
    def application(self) -> Application:
        return self.request.user  # type: ignore[return-value]

    def check_throttles(self, request: Request) -> None:
        # Counted once the App Key is right: nobody who only knows a client_id uses up its budget.
        ratelimit.enforce(ratelimit.hit(ratelimit.limit("app-api"), str(self.application.pk)))

    def human_or_404(self, human_id: str) -> Human:
        human = selectors.app_human(self.application, human_id)
        if human is None:
            raise NotFound(f"No user {human_id!r} in this application")
        return human

    def page_response(self, page: Page) -> Response:
        request = self.request
        return Response(page.items, headers=page.headers(request.build_absolute_uri(request.path), request.GET))

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        if response.status_code == 401:
            response["WWW-Authenticate"] = 'Basic realm="humanapi"'
        return response


class UsersView(AppView):
    """GET /users (paginated, oldest first; `externalId` filters); POST /users."""

    class Input(serializers.Serializer[dict[str, Any]]):
        externalId = UserIdField(max_length=255)

    def get(self, request: Request, client_id: str) -> Response:
        page = selectors.paginate(
            selectors.app_humans(self.application, request.query_params),
            request.query_params,
            lambda human: selectors.human_json(human, self.application),
        )
        return self.page_response(page)

    def post(self, request: Request, client_id: str) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        human, created = app_user_create(
            application=self.application, external_id=data.validated_data["externalId"], request=request._request
        )
        return Response(selectors.human_json(human, self.application), status=201 if created else 200)


class UserView(AppView):
    """GET /users/{humanId}; DELETE /users/{humanId} erases the user and everything of theirs."""

    def get(self, request: Request, client_id: str, human_id: str) -> Response:
        return Response(selectors.human_json(self.human_or_404(human_id), self.application))

    def delete(self, request: Request, client_id: str, human_id: str) -> Response:
        app_user_delete(human=self.human_or_404(human_id), request=request._request)
        return Response(status=204)


class UserSourcesView(AppView):
    """GET /users/{humanId}/sources: each connection, its sync status and recent sync runs."""

    def get(self, request: Request, client_id: str, human_id: str) -> Response:
        return Response(selectors.human_connections(self.human_or_404(human_id)))


class UserSyncView(AppView):
    """POST /users/{humanId}/sync (optional `source`): sync now; 202, the sync runs in a worker.
    Limited per Human and per Application (per hour): a sync spends provider quota that every
    tenant shares."""

    class Input(serializers.Serializer[dict[str, Any]]):
        # allow_blank: an empty value (a form's `source=` too) reaches the slug check, not dropped.
        source = StrictCharField(required=False, allow_blank=True)  # type: ignore[assignment]  # stubs: Field.source

    def post(self, request: Request, client_id: str, human_id: str) -> Response:
        human = self.human_or_404(human_id)
        body = self.Input(data=request.data)  # none, or a JSON object
        body.is_valid(raise_exception=True)
        source = _optional_slug(body.validated_data.get("source"), request.query_params.get("source"))
        ratelimit.enforce(
            ratelimit.hit_each(
                (ratelimit.limit("sync-human"), human.pk), (ratelimit.limit("sync-app"), str(self.application.pk))
            )
        )
        try:
            connections = app_user_request_sync(human=human, source=source, request=request._request)
        except NothingToSync:
            what = f"no active {source!r} connection" if source else "no active connection"
            return Response(error_body(409, f"Nothing to sync: this user has {what}", request._request), status=409)
        return Response(
            {"status": "queued", "connections": [{"id": c.pk, "source": c.source} for c in connections]}, 202
        )


def _optional_slug(body: str | None, query: str | None) -> str | None:
    """`source` from the body or the query: each given one a slug, and both the same."""
    given = [raw for raw in (body, query) if raw is not None]
    for raw in given:
        if not re.fullmatch(r"[a-z0-9_-]{1,64}", raw):
            raise ValidationError({"source": f"not a source slug: {raw!r}"})
    if len(set(given)) > 1:
        raise ValidationError({"source": f"the body says {body!r}, the query {query!r}"})
    return given[0] if given else None


class BatchRecordsView(AppView):
    """GET /users/{type}: records of one type of every user, ordered by updatedAt then id."""

    record_type = ""

    def get(self, request: Request, client_id: str) -> Response:
        return self.page_response(selectors.batch_page(self.application, self.record_type, request.query_params))


class BatchSummariesView(AppView):
    """GET /users/{activities,sleeps}/summaries: daily totals of every user, by updatedAt."""

    record_type = ""

    def get(self, request: Request, client_id: str) -> Response:
        return self.page_response(selectors.batch_summaries(self.application, self.record_type, request.query_params))


class AuditView(AppView):
    """GET /audit: the Application's audit log, newest first (`humanId`, `action`, `since`,
    `before` filter)."""

    def get(self, request: Request, client_id: str) -> Response:
        queryset = selectors.app_audit(self.application, request.query_params)
        return self.page_response(selectors.paginate(queryset, request.query_params, selectors.audit_json))
