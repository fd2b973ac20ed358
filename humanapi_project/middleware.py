import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed

# A caller may pass its own request id for tracing; anything else is replaced.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    """Gives every request an id, echoed in `X-Request-Id` and in error bodies."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-Id", "")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        response = self.get_response(request)
        response["X-Request-Id"] = request_id
        return response


class JsonMethodNotAllowedMiddleware:
    """Django's own 405 (from a class-based view) is an empty HTML page; every other error
    here is the JSON envelope, so this one is too. The `Allow` header is kept."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not isinstance(response, HttpResponseNotAllowed):
            return response
        from .errors import error_response

        allowed = response.get("Allow", "")
        replaced = error_response(405, f"{request.method} is not allowed here; use {allowed}", request)
        replaced["Allow"] = allowed
        return replaced


class RejectNulMiddleware:
    """No text column can hold U+0000, so a request carrying one anywhere (path, query, body)
    is refused up front with a 400, rather than failing deep inside as a 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._carries_nul(request):
            from .errors import error_response

            return error_response(400, "The request contains a NUL character, which is not accepted", request)
        return self.get_response(request)

    @staticmethod
    def _carries_nul(request: HttpRequest) -> bool:
        if "\x00" in request.path or "%00" in request.META.get("QUERY_STRING", ""):
            return True
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return False
        body = request.body
        if b"\x00" in body or b"\\u0000" in body:
            return True
        # In a form body a literal "%" is sent as %25, so %00 is always a NUL.
        return request.content_type == "application/x-www-form-urlencoded" and b"%00" in body
