"""The Data API (CONTRACT §6): thin views over data_api.selectors and data_api.summaries."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.shortcuts import render
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from connect import ratelimit
from connect.models import Human
from humanapi_project.errors import error_response

from . import openapi, selectors, summaries
from .auth import AccessTokenAuthentication, data_limits
from .cors import add_cors_headers, preflight_response
from .records import Filters, Page, Window, parse_day


class HumanView(APIView):
    """Base of the Data API: one Human, authenticated by an access token; readable cross-origin."""

    authentication_classes = [AccessTokenAuthentication]
    http_method_names = ["get", "head", "options"]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method == "OPTIONS":
            return preflight_response()  # before authentication: preflights carry no token
        return add_cors_headers(super().dispatch(request, *args, **kwargs))

    @property
    def human(self) -> Human:
        return self.request.user  # type: ignore[return-value]

    def check_throttles(self, request: Request) -> None:
        """Per Human, then per Application (a request refused for its Human does not count
        against the Application). DRF calls this once the token is known; connect.ratelimit counts."""
        verdict = getattr(request._request, "data_api_verdict", None)  # counted with the token (auth)
        if verdict is None:
            human = self.human
            verdict = ratelimit.hit_each(*data_limits(human.pk, str(human.application_id)))
        ratelimit.enforce(verdict)


def list_response(request: Request, page: Page) -> Response:
    return Response(page.items, headers=page.headers(request.build_absolute_uri(request.path), request.query_params))


def day_of(raw: str) -> date:
    return parse_day("day", raw)


class HumanSummaryView(HumanView):
    """GET /v1/human/"""

    def get(self, request: Request) -> Response:
        return Response(selectors.human_summary(self.human))


class ProfileView(HumanView):
    """GET /v1/human/profile"""

    def get(self, request: Request) -> Response:
        return Response(selectors.profile_json(self.human))


class SourcesView(HumanView):
    """GET /v1/human/sources"""

    def get(self, request: Request) -> Response:
        return Response([selectors.connection_json(c) for c in selectors.connections_of(self.human)])


class LatestReadingView(HumanView):
    """GET /v1/human/{measurement}: the latest reading, `{}` if none."""

    record_type = ""

    def get(self, request: Request) -> Response:
        return Response(selectors.latest_reading(human=self.human, kind=self.record_type))


class RecordListView(HumanView):
    """GET /v1/human/{periodic}, /{measurement}/readings, and their `daily/{day}`."""

    record_type = ""

    def get(self, request: Request, day: str | None = None) -> Response:
        filters = Filters.parse(request.query_params)
        if day is not None:
            filters = filters.on_day(day_of(day))
        window = Window.parse(request.query_params)
        return list_response(
            request, selectors.record_page(human=self.human, kind=self.record_type, filters=filters, window=window)
        )


class RecordDetailView(HumanView):
    """GET /v1/human/{periodic}/{id}, /{measurement}/readings/{id}"""

    record_type = ""

    def get(self, request: Request, record_id: str) -> Response:
        found = selectors.record_detail(human=self.human, kind=self.record_type, record_id=record_id)
        if found is None:
            raise exceptions.NotFound(f"No {self.record_type} record with id {record_id!r}")
        return Response(found)


class SummaryListView(HumanView):
    """GET /v1/human/{activities,sleeps,heart_rate}/summaries"""

    record_type = ""

    def get(self, request: Request) -> Response:
        filters = Filters.parse(request.query_params)
        window = Window.parse(request.query_params)
        return list_response(
            request, summaries.summary_page(human=self.human, kind=self.record_type, filters=filters, window=window)
        )


# A reference made only of digits and dashes is a day (and a malformed one is a 400);
# anything else is a summary id.
_DAYLIKE = re.compile(r"^[0-9-]+$")


class SummaryDetailView(HumanView):
    """GET /v1/human/{kind}/summaries/{id|day} and /{kind}/summary/{day}"""

    record_type = ""

    def get(self, request: Request, ref: str) -> Response:
        day = day_of(ref) if _DAYLIKE.match(ref) else summaries.day_of_summary_id(self.record_type, ref)
        found = summaries.summary_of_day(human=self.human, kind=self.record_type, day=day) if day else None
        if found is None:
            raise exceptions.NotFound(f"No {self.record_type} summary {ref!r}")
        return Response(found)


def not_found(request: HttpRequest, rest: str = "") -> HttpResponseBase:
    """Unknown paths under /v1/human/: the error envelope, readable cross-origin."""
    if request.method == "OPTIONS":
        return preflight_response()
    return add_cors_headers(error_response(404, f"No such path: {request.path}", request))


def schema_view(request: HttpRequest) -> HttpResponseBase:
    """GET /v1/schema: the OpenAPI 3 description of the whole contract."""
    return add_cors_headers(JsonResponse(openapi.schema()))


def docs_view(request: HttpRequest) -> HttpResponseBase:
    """GET /docs: the same, for people; self-contained (no external assets)."""
    return render(request, "data_api/docs.html", openapi.docs_context())
