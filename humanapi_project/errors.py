"""One error envelope everywhere: `{"statusCode", "error", "message", "requestId"}`."""

import logging
from http import HTTPStatus
from typing import Any

from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response

log = logging.getLogger(__name__)


def request_id_of(request: HttpRequest | None) -> str:
    return getattr(request, "request_id", "") if request is not None else ""


def error_body(
    status: int, message: str, request: HttpRequest | None, validation_keys: list[str] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "statusCode": status,
        "error": HTTPStatus(status).phrase,
        "message": message,
        "requestId": request_id_of(request),
    }
    if validation_keys is not None:
        body["validation"] = {"keys": validation_keys}
    return body


def error_response(
    status: int, message: str, request: HttpRequest | None = None, validation_keys: list[str] | None = None
) -> JsonResponse:
    return JsonResponse(error_body(status, message, request, validation_keys), status=status)


def _flatten(detail: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(detail, dict):
        out: list[tuple[str, str]] = []
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.extend(_flatten(value, name))
        return out
    if isinstance(detail, list):
        out = []
        for item in detail:
            out.extend(_flatten(item, prefix))
        return out
    return [(prefix, str(detail))]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    request = context.get("request")
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found")
    if not isinstance(exc, exceptions.APIException):
        return None  # a real bug: let Django's 500 handler log it
    if isinstance(exc, exceptions.ValidationError):
        pairs = _flatten(exc.detail)
        keys = sorted({key for key, _ in pairs if key and key != "non_field_errors"})
        message = "; ".join(f"{key}: {text}" if key and key != "non_field_errors" else text for key, text in pairs)
        body = error_body(400, message or "Invalid input", request, keys)
        return Response(body, status=400)
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else "; ".join(text for _, text in _flatten(exc.detail))
    response = Response(error_body(status, str(message), request), status=status)
    wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        response["Retry-After"] = str(int(wait) + 1)
    auth_header = getattr(exc, "auth_header", None)  # set by DRF from the view's authenticator
    if status == 401:
        response["WWW-Authenticate"] = auth_header or 'Bearer realm="humanapi"'
    return response


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(404, f"No such path: {request.path}", request)


def handler400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(400, "Bad request", request)


def handler403(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(403, "Forbidden", request)


def handler500(request: HttpRequest) -> JsonResponse:
    return error_response(500, "Internal error; quote the request id when reporting it", request)
