from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from connect.models import Human

from .auth import AccessTokenAuthentication
from .models import Record
from .records import apply_filters, paginate


class HumanView(APIView):
    """Base of the Data API: one Human, authenticated by an access token."""

    authentication_classes = [AccessTokenAuthentication]

    @property
    def human(self) -> Human:
        return self.request.user  # type: ignore[return-value]


class RecordListView(HumanView):
    """GET /v1/human/{type} (periods) and /v1/human/{measurement}/readings."""

    record_type = ""

    def get(self, request: Request, **kwargs: Any) -> Response:
        queryset = apply_filters(Record.objects.filter(human=self.human, type=self.record_type), request.query_params)
        page = paginate(queryset, request.query_params)
        return Response(
            page.items, headers=page.headers(request.build_absolute_uri(request.path), request.query_params)
        )
