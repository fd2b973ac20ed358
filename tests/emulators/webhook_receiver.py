"""A client app's webhook endpoint: a real HTTP server on 127.0.0.1 that checks each request's
`X-HumanAPI-Signature` the way a client would and keeps what it got.

Two ways of signing, as the Application chose:
- "default": `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` keyed with the webhook
  secret, compared in constant time, the timestamp within a tolerance.
- "humanapi": as Human API documents the header for its own notifications: an HMAC-SHA1 keyed
  with the app's client secret over the raw body, then the timestamp, then the nonce. What its
  documentation leaves open is read as the server's README says (hex digest; timestamp and nonce
  in `X-HumanAPI-Timestamp` and `X-HumanAPI-Nonce`); a nonce seen before is refused (a replay).

It also does what a careful receiver does with what it accepts: it ignores an `eventId` it has
seen (delivery is at least once), and applies each Human's events in `sequence` order, holding
back an event until the ones before it have come (`applied`, `held`).

Its answer can be set per test: a status code, and a delay before answering (to play a slow
receiver)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator, Mapping
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


def verify_humanapi_signature(
    client_secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> bool:
    """What a receiver written for Human API does: HMAC-SHA1 with the client secret over
    payload + timestamp + nonce, compared in constant time with the header; the timestamp
    must be recent."""
    lowered = {k.lower(): v for k, v in headers.items()}
    given = lowered.get("x-humanapi-signature", "")
    stamp, nonce = lowered.get("x-humanapi-timestamp", ""), lowered.get("x-humanapi-nonce", "")
    if not given or not stamp.isdigit() or not nonce:
        return False
    digest = hmac.new(client_secret.encode(), body + stamp.encode() + nonce.encode(), hashlib.sha1).hexdigest()
    fresh = abs((time.time() if now is None else now) - int(stamp)) <= TOLERANCE_SECONDS
    return hmac.compare_digest(digest, given.lower()) and fresh


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
    mode: str = "default"  # or "humanapi", keyed with client_secret
    client_secret: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""
    # Per humanId: the events applied, in sequence order, and those waiting for an earlier one.
    applied: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    held: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    seen_event_ids: set[str] = field(default_factory=set)
    seen_nonces: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        with self._lock:
            valid = self.verify(dict(request.headers), body)
            delivery = Delivery(
                received_at=time.time(), headers=dict(request.headers), body=body, signature_valid=valid
            )
            self.deliveries.append(delivery)
            if valid:
                self._take(delivery.event)
        if self.delay:
            time.sleep(self.delay)
        status = self.status if delivery.signature_valid else 401
        return Response(b"{}", status=status, content_type="application/json")(environ, start_response)

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        if self.mode == "humanapi":
            nonce = headers.get("X-Humanapi-Nonce", "")
            if nonce in self.seen_nonces or not verify_humanapi_signature(self.client_secret, headers, body):
                return False
            self.seen_nonces.add(nonce)
            return True
        return verify_signature(self.secret, headers.get("X-Humanapi-Signature", ""), body)

    def _take(self, event: dict[str, Any]) -> None:
        """Deduplicate by eventId, then apply the Human's events strictly in sequence order."""
        if event["eventId"] in self.seen_event_ids:
            return
        self.seen_event_ids.add(event["eventId"])
        human = event["humanId"]
        applied, held = self.applied.setdefault(human, []), self.held.setdefault(human, {})
        held[int(event["sequence"])] = event
        while len(applied) + 1 in held:
            applied.append(held.pop(len(applied) + 1))

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            found = [d.event for d in self.deliveries if d.signature_valid]
        return [e for e in found if event_type is None or e["eventType"] == event_type]


@contextmanager
def running_receiver(
    secret: str, status: int = 200, delay: float = 0.0, *, mode: str = "default", client_secret: str = ""
) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret=secret, status=status, delay=delay, mode=mode, client_secret=client_secret)
    server: BaseWSGIServer = make_server("127.0.0.1", 0, receiver, threaded=True)
    receiver.url = f"http://127.0.0.1:{server.server_port}/hooks/humanapi"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        thread.join(timeout=5)
