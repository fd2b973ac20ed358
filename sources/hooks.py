"""`/hooks/<slug>`: where providers call with notifications (and to verify a subscription).
Public (the provider is the caller, authenticated by the plugin, not by our tokens), exempt
from CSRF, answered at once: the work runs on a worker (sources.push)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from humanapi_project.errors import error_response

from .push import MAX_BODY, hook_receive, hook_verify, push_plugin


@csrf_exempt
def hook(request: HttpRequest, slug: str) -> HttpResponse:
    plugin = push_plugin(slug)
    if plugin is None:
        return error_response(404, f"No notifications are taken for {slug!r} here", request)
    if request.method in ("GET", "HEAD"):
        status, body = hook_verify(plugin, request.GET)
    elif request.method == "POST":
        length = request.META.get("CONTENT_LENGTH") or "0"
        if not length.isascii() or not length.isdigit() or int(length) > MAX_BODY:
            return error_response(413, f"A notification is at most {MAX_BODY} bytes", request)
        headers = {name.lower(): value for name, value in request.headers.items()}
        status, body = hook_receive(plugin, headers, request.body, request.GET)
    else:
        response = error_response(405, f"{request.method} is not allowed here; use GET or POST", request)
        response["Allow"] = "GET, HEAD, POST"
        return response
    if status >= 400:
        return error_response(status, str(body.get("message", "Refused")), request)
    return JsonResponse(body, status=status)
