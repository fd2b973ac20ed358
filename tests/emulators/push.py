"""What the provider emulators share to push notifications: a subscription's verification GET
to the callback, and notifications POSTed to it over real HTTP, each delivery recorded (status,
how long the answer took) and retried as the provider retries."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass
class Delivery:
    url: str
    body: bytes
    headers: dict[str, str]
    status: int  # 0: no answer (refused, timed out)
    seconds: float
    answer: Any = None


@dataclass
class Pusher:
    """POSTs notifications; `attempts` in all while the answer isn't 2xx (`ok` says which are
    acceptable), `retry_delay` apart. `deliveries` is every attempt, in order."""

    attempts: int = 3
    retry_delay: float = 0.2
    timeout: float = 2.0
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, url: str, params: dict[str, str], timeout: float) -> Any:
        """The provider's GET to the callback before it makes a subscription: the JSON answered,
        or None when the answer is not a 200 with a JSON body."""
        try:
            answer = requests.get(url, params=params, timeout=timeout)
            return answer.json() if answer.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None

    def post(self, url: str, body: bytes, sign: Any, ok: tuple[int, ...] = (200,)) -> list[Delivery]:
        """Deliver one notification; `sign()` gives each attempt's headers (a fresh timestamp)."""
        sent: list[Delivery] = []
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.retry_delay)
            headers = {"Content-Type": "application/json", **sign()}
            started = time.monotonic()
            try:
                response = requests.post(url, data=body, headers=headers, timeout=self.timeout)
                status, answer = response.status_code, _json(response)
            except requests.RequestException:
                status, answer = 0, None
            delivery = Delivery(url, body, headers, status, time.monotonic() - started, answer)
            sent.append(delivery)
            with self.lock:
                self.deliveries.append(delivery)
            if status in ok:
                break
        return sent


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
