"""Webhooks as Replicate sends them: signed with the Standard Webhooks scheme, retried on failure.

Statuses come from the clock, so deliveries do too: each event's moment is known when the
prediction is created, and one sender thread waits on a heap of due deliveries.
"""

import base64
import hashlib
import heapq
import hmac
import itertools
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

EVENTS = ("start", "output", "logs", "completed")
# Replicate sends logs (and output) events at most every 500 ms.
LOGS_INTERVAL = 0.5
# Seconds before each retry of a failed delivery; Replicate spreads its retries over minutes,
# which would outlast any test.
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
# A receiver is meant to answer within seconds; one that hangs must not hold up the others.
TIMEOUT = httpx.Timeout(3.0, connect=1.0)
USER_AGENT = "DarkroomSimulator/1.0 webhooks"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: HMAC-SHA256 of `id.timestamp.body`, keyed with the
    secret's base64 part."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@dataclass(order=True)
class Delivery:
    due: float
    order: int
    prediction_id: str = field(compare=False)
    event: str = field(compare=False)
    moment: float = field(compare=False)  # when the event happened; the body shows that moment
    url: str = field(compare=False)
    webhook_id: str = field(compare=False)
    # Rendered for the first attempt; retries and duplicates send the same bytes.
    body: bytes | None = field(default=None, compare=False)
    attempt: int = field(default=0, compare=False)
    duplicate: bool = field(default=False, compare=False)


class WebhookSender:
    """The simulator's webhook deliveries: one thread, started and stopped with the simulator.

    `render(prediction_id, event, moment)` gives a delivery's body, or None if the event did
    not happen after all."""

    def __init__(
        self,
        render: Callable[[str, str, float], bytes | None],
        faults: Any,
        seed: int | None,
    ) -> None:
        self.secret = new_secret()
        self._render = render
        self._faults = faults
        self._rng = random.Random(seed)
        self._due: list[Delivery] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._counts: Counter[str] = Counter()
        self._delivered_by_event: Counter[str] = Counter()

    def schedule(self, prediction_id: str, url: str, moments: list[tuple[float, str]]) -> None:
        with self._changed:
            for moment, event in moments:
                delivery = Delivery(
                    due=moment,
                    order=next(self._order),
                    prediction_id=prediction_id,
                    event=event,
                    moment=moment,
                    url=url,
                    webhook_id=f"msg_{secrets.token_hex(13)}",
                )
                heapq.heappush(self._due, delivery)
            self._changed.notify()

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        with self._changed:
            return {
                "delivered": self._counts["delivered"],
                "delivered_by_event": dict(self._delivered_by_event),
                "duplicated": self._counts["duplicated"],
                "failed_attempts": self._counts["failed_attempts"],
                "given_up": self._counts["given_up"],
                "pending": len(self._due),
            }

    def _run(self) -> None:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as http:
            while (delivery := self._next()) is not None:
                self._attempt(http, delivery)

    def _next(self) -> Delivery | None:
        """The next due delivery, waiting for it; None once stopped."""
        with self._changed:
            while not self._stopping:
                wait = self._due[0].due - time.time() if self._due else None
                if wait is not None and wait <= 0:
                    return heapq.heappop(self._due)
                self._changed.wait(wait)
            return None

    def _attempt(self, http: httpx.Client, delivery: Delivery) -> None:
        if delivery.body is None:
            delivery.body = self._render(delivery.prediction_id, delivery.event, delivery.moment)
            if delivery.body is None:
                return
        # Signed anew for every attempt, with its own timestamp, as Standard Webhooks does.
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(
                self.secret, delivery.webhook_id, timestamp, delivery.body
            ),
        }
        try:
            delivered = http.post(delivery.url, content=delivery.body, headers=headers).is_success
        except httpx.HTTPError:
            delivered = False
        with self._changed:
            if delivered:
                self._counts["delivered"] += 1
                self._delivered_by_event[delivery.event] += 1
                if not delivery.duplicate and self._happens(self._faults.webhook_duplicate_rate):
                    self._counts["duplicated"] += 1
                    self._again(delivery, 0.0, duplicate=True)
            elif delivery.attempt < len(RETRY_DELAYS):
                self._counts["failed_attempts"] += 1
                self._again(delivery, RETRY_DELAYS[delivery.attempt], attempt=delivery.attempt + 1)
            else:
                self._counts["failed_attempts"] += 1
                self._counts["given_up"] += 1

    def _again(self, delivery: Delivery, delay: float, **changes: Any) -> None:
        """Send `delivery` once more (same webhook id, same body) after `delay` seconds."""
        again = replace(delivery, due=time.time() + delay, order=next(self._order), **changes)
        heapq.heappush(self._due, again)

    def _happens(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate
