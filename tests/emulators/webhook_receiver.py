"""A client app's webhook endpoint: a real HTTP server on 127.0.0.1 that checks each request's
`X-HumanAPI-Signature` the way a client would (HMAC-SHA256 of "<t>.<raw body>" with the webhook
secret, compared in constant time, the timestamp within a tolerance) and keeps what it got.

Its answer can be set per test: a status code, and a delay before answering (to play a slow
receiver)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

TOLERANCE_SECONDS = 300


def verify_signature(secret: str, header: str, body: bytes, now: float | None = None) -> bool:
    """What a client does: parse `t=...,v1=...`, recompute, compare, check freshness."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    if not stamp.isdigit() or not given:
        return False
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = abs((time.time() if now is None else now) - int(stamp)) <= TOLERANCE_SECONDS
    return hmac.compare_digest(expected, given) and fresh


@dataclass
class Delivery:
    received_at: float
    headers: dict[str, str]
    body: bytes
    signature_valid: bool

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class WebhookReceiver:
    secret: str
    status: int = 200
    delay: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        delivery = Delivery(
            received_at=time.time(),
            headers=dict(request.headers),
            body=body,
            signature_valid=verify_signature(self.secret, request.headers.get("X-HumanAPI-Signature", ""), body),
        )
        with self._lock:
            self.deliveries.append(delivery)
        if self.delay:
            time.sleep(self.delay)
        status = self.status if delivery.signature_valid else 401
        return Response(b"{}", status=status, content_type="application/json")(environ, start_response)

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            found = [d.event for d in self.deliveries if d.signature_valid]
        return [e for e in found if event_type is None or e["eventType"] == event_type]


@contextmanager
def running_receiver(secret: str, status: int = 200, delay: float = 0.0) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret=secret, status=status, delay=delay)
    server: BaseWSGIServer = make_server("127.0.0.1", 0, receiver, threaded=True)
    receiver.url = f"http://127.0.0.1:{server.server_port}/hooks/humanapi"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        thread.join(timeout=5)
