"""The simulated provider: model profiles, the prediction state machine and fault decisions.

A prediction's status is never advanced by a timer. Its queue time and run time are drawn when it
is created, and every request derives status, logs and output from the clock, so the simulator
needs no thread per prediction and a stopped simulator leaves nothing running.
"""

import hashlib
import json
import math
import random
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from .images import ASPECT_RATIOS, MATCH_INPUT_IMAGE, OUTPUT_FORMATS, render_image
from .webhooks import EVENTS, LOGS_INTERVAL, WebhookSender

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
FAULT_ENDPOINTS = ("create", "get", "cancel", "file")
# Output files are fetched by the archive, not the poller: their faults are asked for by name.
DEFAULT_FAULT_ENDPOINTS = ("create", "get", "cancel")
SERVER_ERROR_STATUSES = (500, 502, 503)

# What a create with a webhook and no filter gets, as Replicate documents it.
DEFAULT_WEBHOOK_EVENTS = ("output", "completed")

# Every model's one version was pushed at this moment, with this Cog: stable answers.
VERSION_CREATED_AT = "2025-01-15T12:00:00.000000Z"
COG_VERSION = "0.13.7"

# Replicate ids are 26 characters of lowercase Crockford base32.
ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"

FAILURE_MESSAGES = (
    "CUDA out of memory. Tried to allocate 2.50 GiB (GPU 0; 39.39 GiB total capacity; "
    "35.12 GiB already allocated; 1.27 GiB free; 36.80 GiB reserved in total by PyTorch)",
    "NSFW content detected. Try running it again, or try a different prompt.",
    "Prediction interrupted; please retry (code: PA)",
)


@dataclass(frozen=True)
class ModelProfile:
    name: str
    queue_median: float  # seconds in "starting" before a worker picks the prediction up
    run_median: float  # seconds in "processing" at speed 1
    steps: int  # denoising steps, one progress line each
    failure: str | None = None  # every prediction fails with this error

    @cached_property
    def version(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()

    def version_json(self) -> dict[str, Any]:
        """Its version as `GET /v1/models/{owner}/{name}/versions/{id}` answers."""
        return {
            "id": self.version,
            "created_at": VERSION_CREATED_AT,
            "cog_version": COG_VERSION,
            "openapi_schema": openapi_schema(),
        }

    def as_json(self, run_count: int) -> dict[str, Any]:
        """The model as `GET /v1/models/{owner}/{name}` answers."""
        owner, name = self.name.split("/")
        seconds = self.queue_median + self.run_median
        return {
            "url": f"https://replicate.com/{self.name}",
            "owner": owner,
            "name": name,
            "description": (
                f"Simulated by Darkroom: a real image from the prompt in about {seconds:g} s"
                + (", then always fails." if self.failure else ".")
            ),
            "visibility": "public",
            "github_url": None,
            "paper_url": None,
            "license_url": None,
            "run_count": run_count,
            "cover_image_url": None,
            "default_example": None,
            "latest_version": self.version_json(),
        }


MODELS: dict[str, ModelProfile] = {
    profile.name: profile
    for profile in (
        ModelProfile("black-forest-labs/flux-schnell", 0.3, 0.8, 4),
        ModelProfile("black-forest-labs/flux-dev", 1.0, 4.0, 28),
        ModelProfile("black-forest-labs/flux-1.1-pro", 0.5, 3.5, 25),
        ModelProfile("black-forest-labs/flux-kontext-pro", 0.5, 5.0, 30),
        ModelProfile("stability-ai/sdxl", 2.0, 6.0, 25),
        ModelProfile("darkroom/fails", 0.3, 1.0, 4, failure=FAILURE_MESSAGES[0]),
        ModelProfile("darkroom/slow", 0.3, 60.0, 50),
    )
}


@dataclass
class Faults:
    """Misbehaviour to inject, changeable while the simulator runs."""

    rate_limit_burst: int = field(default=0, metadata={"help": "answer the next N requests 429"})
    rate_limit_rate: float = field(default=0.0, metadata={"help": "fraction of requests 429"})
    retry_after: float = field(default=1.0, metadata={"help": "Retry-After seconds on a 429"})
    server_error_rate: float = field(
        default=0.0, metadata={"help": "fraction of requests answered 500, 502 or 503"}
    )
    create_error_after_commit: bool = field(
        default=True,
        metadata={"help": "a create that gets a 5xx or stalls was still created"},
    )
    slow_rate: float = field(default=0.0, metadata={"help": "fraction of responses delayed"})
    slow_seconds: float = field(default=3.0, metadata={"help": "delay of a slow response"})
    stall_rate: float = field(default=0.0, metadata={"help": "fraction of requests that hang"})
    stall_seconds: float = field(default=300.0, metadata={"help": "how long a stall hangs"})
    stall_burst: int = field(
        default=0, metadata={"help": "stall the next N requests to the fault endpoints"}
    )
    malformed_rate: float = field(
        default=0.0, metadata={"help": "fraction of responses with a truncated body"}
    )
    failure_rate: float = field(default=0.0, metadata={"help": "fraction of predictions failing"})
    query_rate_limit: int = field(
        default=0,
        metadata={"help": "requests a second allowed to every API call but creates (0: no limit)"},
    )
    create_rate_limit: int = field(
        default=0, metadata={"help": "creates a second allowed (0: no limit)"}
    )
    webhook_duplicate_rate: float = field(
        default=0.0, metadata={"help": "fraction of webhook deliveries sent twice"}
    )
    endpoints: list[str] = field(
        default_factory=lambda: list(DEFAULT_FAULT_ENDPOINTS),
        metadata={"help": "which endpoints the random faults hit"},
    )
    bad_payload: str = field(
        default="",
        metadata={
            "help": "a JSON object whose fields replace those of every prediction answered "
            "(a NUL in the logs, metrics of the wrong type, thousands of outputs)"
        },
    )

    def any_random(self) -> bool:
        """Whether any random fault is on."""
        return (
            self.rate_limit_rate > 0
            or self.server_error_rate > 0
            or self.stall_rate > 0
            or self.slow_rate > 0
            or self.malformed_rate > 0
        )

    def update(self, changes: dict[str, Any]) -> None:
        """Apply changes from JSON, all or none; ValueError names the first bad one."""
        checked = {name: _checked_fault(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _checked_fault(name: str, value: Any) -> Any:
    kinds = {knob.name: knob.type for knob in fields(Faults)}
    if name not in kinds:
        raise ValueError(f"{name}: unknown fault")
    kind = kinds[name]
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name}: must be true or false")
        return value
    if kind is str:  # bad_payload: a JSON object's text, or nothing
        try:
            valid = isinstance(value, str) and (not value or isinstance(json.loads(value), dict))
        except (ValueError, RecursionError):
            valid = False
        if not valid:
            raise ValueError(f"{name}: must be a JSON object, as text")
        return value
    if kind == list[str]:
        if not isinstance(value, list) or not set(value) <= set(FAULT_ENDPOINTS):
            raise ValueError(f"{name}: must be a list drawn from {', '.join(FAULT_ENDPOINTS)}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name}: must be a number not below 0")
    if kind is int and value != int(value):
        raise ValueError(f"{name}: must be a whole number")
    if name.endswith("_rate") and value > 1:
        raise ValueError(f"{name}: must be between 0 and 1")
    return kind(value)


@dataclass(frozen=True)
class Fault:
    kind: str  # "rate_limit", "server_error", "stall", "slow" or "malformed"
    status: int = 0  # the 5xx a client gets: which one, or a gateway's 504 after a stall


class UnknownModel(Exception):
    pass


class InvalidInput(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))


@dataclass
class Prediction:
    id: str
    model: ModelProfile
    input: dict[str, Any]
    seed: int
    num_outputs: int
    aspect_ratio: str
    output_format: str
    output_quality: int
    created: float
    queue: float
    run: float
    failure: str | None
    stream_key: str
    canceled: float | None = None
    # The API token that created it: only that token sees it (None: made in-process, for tests).
    token: str | None = None
    images: dict[int, bytes] = field(default_factory=dict)
    # Where its webhooks go, for which events, and the base of the output URLs they name.
    webhook: str | None = None
    webhook_events: frozenset[str] = frozenset()
    file_base: str = ""
    # Kept between requests, because a poll mostly finds what the last one found: the progress
    # lines printed so far, and the last body with the state it was rendered for.
    _progress: list[str] = field(default_factory=list, repr=False)
    _body: tuple[tuple[Any, ...], bytes] | None = field(default=None, repr=False)

    @property
    def started(self) -> float:
        return self.created + self.queue

    @property
    def ended(self) -> float:
        return self.canceled if self.canceled is not None else self.started + self.run

    def status(self, now: float) -> str:
        # `now` may be in the past, for a webhook about an earlier moment than the cancel.
        if self.canceled is not None and now >= self.canceled:
            return "canceled"
        if now < self.started:
            return "starting"
        if now < self.ended:
            return "processing"
        return "failed" if self.failure else "succeeded"

    def data_removed(self, now: float, retention: float) -> bool:
        return self.status(now) in TERMINAL and now >= self.ended + retention

    def steps_done(self, now: float) -> int:
        """Denoising steps the progress bar shows by now; -1 before the model started."""
        moment = min(now, self.ended)
        if moment < self.started:
            return -1
        steps = self.model.steps
        if self.status(now) in ("succeeded", "failed"):
            return steps
        return min(steps, int((moment - self.started) / self.run * steps))

    def logs(self, now: float) -> str:
        """What the model has printed by now: a tqdm bar advancing with the run time."""
        done = self.steps_done(now)
        if done < 0:
            return ""
        steps = self.model.steps
        while len(self._progress) <= done:
            self._progress.append(_progress_line(len(self._progress), steps, self.run))
        lines = [f"Using seed: {self.seed}", *self._progress[: done + 1]]
        if self.status(now) == "succeeded":
            lines.append(f"Total safe images: {self.num_outputs} out of {self.num_outputs}")
        return "\n".join(lines) + "\n"

    def body(self, now: float, retention: float, file_base: str) -> bytes:
        """`as_json` as JSON bytes, rendered again only when something in it has changed."""
        state = (
            self.status(now),
            self.steps_done(now),
            self.data_removed(now, retention),
            file_base,
        )
        if self._body is None or self._body[0] != state:
            self._body = (state, json.dumps(self.as_json(now, retention, file_base)).encode())
        return self._body[1]

    def has_started(self, now: float) -> bool:
        """Whether a worker had picked it up by `now` (one canceled in the queue never was)."""
        return now >= self.started and (self.canceled is None or self.ended > self.started)

    def metrics(self, now: float) -> dict[str, Any]:
        """Replicate's metrics: none while it runs; at its end, whatever its end (canceled and
        failed too), the time it ran if it did, and its whole time since the create."""
        status = self.status(now)
        if status not in TERMINAL:
            return {}
        metrics: dict[str, Any] = {}
        if status == "succeeded":
            metrics["image_count"] = self.num_outputs
        if self.has_started(now):
            metrics["predict_time"] = round(self.ended - self.started, 9)
        metrics["total_time"] = round(self.ended - self.created, 9)
        return metrics

    def as_json(self, now: float, retention: float, file_base: str) -> dict[str, Any]:
        status = self.status(now)
        removed = self.data_removed(now, retention)
        succeeded = status == "succeeded"
        api = f"https://api.replicate.com/v1/predictions/{self.id}"
        return {
            "id": self.id,
            "model": self.model.name,
            "version": self.model.version,
            "input": self.input,
            "logs": "" if removed else self.logs(now),
            "output": None if removed or not succeeded else self.output_urls(file_base),
            "data_removed": removed,
            "error": self.failure if status == "failed" else None,
            "status": status,
            # Replicate's precision: microseconds on the create, nanoseconds on the run.
            "created_at": _iso(self.created, 6),
            "started_at": _iso(self.started, 9) if self.has_started(now) else None,
            "completed_at": _iso(self.ended, 9) if status in TERMINAL else None,
            "urls": {
                "get": api,
                "cancel": f"{api}/cancel",
                "stream": f"https://stream.replicate.com/v1/files/{self.stream_key}",
            },
            "metrics": self.metrics(now),
        }

    def output_urls(self, file_base: str) -> list[str]:
        return [
            f"{file_base}/files/{self.id}/out-{index}.{self.output_format}"
            for index in range(self.num_outputs)
        ]

    def webhook_moments(self) -> list[tuple[float, str]]:
        """When each event it has webhooks for happens, as the clock tells at its creation (a
        cancel brings its own `completed`)."""
        events = self.webhook_events
        moments = []
        if "start" in events:
            moments.append((self.started, "start"))
        if "logs" in events:
            steps, last = self.model.steps, self.started
            for step in range(1, steps):
                moment = self.started + self.run * step / steps
                if moment - last >= LOGS_INTERVAL:
                    moments.append((moment, "logs"))
                    last = moment
        # Outputs appear all at once, on success: the output event comes with the end.
        if "output" in events and not self.failure:
            moments.append((self.ended, "output"))
        if "completed" in events:
            moments.append((self.ended, "completed"))
        return moments

    def has_event(self, event: str, moment: float) -> bool:
        """Whether `event` still happens at `moment`: a cancel ends it early, so the events
        drawn for later never come."""
        if event == "completed":
            return moment == self.ended
        if event == "output":
            return moment == self.ended and self.status(moment) == "succeeded"
        return self.status(moment) == "processing"


class Engine:
    """Every prediction and counter of one simulator, behind one lock."""

    def __init__(self, speed: float, retention: float, faults: Faults, seed: int | None):
        self.speed = speed
        self.retention = retention
        self.faults = faults
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._predictions: dict[str, Prediction] = {}
        self._requests_by_endpoint: Counter[str] = Counter()
        self._responses_by_status: Counter[str] = Counter()
        self._creates_by_prompt: Counter[str] = Counter()
        self._rate_limits = {"query": RateLimit(), "create": RateLimit()}
        self.webhooks = WebhookSender(self.webhook_body, faults, seed)

    def resolve_version(self, version: str) -> str:
        """The model named by `owner/name`, `owner/name:hash` or a bare version hash."""
        name, _, version_hash = version.partition(":")
        if "/" not in name:
            name, version_hash = "", name
        for profile in MODELS.values():
            if (not name or profile.name == name) and version_hash in ("", profile.version):
                return profile.name
        raise UnknownModel(f"Version {version} not found")

    def create(
        self,
        model_name: str,
        input: Any,
        file_base: str,
        webhook: Any = None,
        webhook_events: Any = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """Start a prediction for the API token `token`, with webhooks to `webhook` for
        `webhook_events` (by default Replicate's: output and completed); UnknownModel or
        InvalidInput if it is refused."""
        model = MODELS.get(model_name)
        if model is None:
            raise UnknownModel(f"Model {model_name} not found")
        problems = input_problems(input) + webhook_problems(webhook, webhook_events)
        if problems:
            raise InvalidInput(problems)
        with self._lock:
            now = time.time()
            self._forget_removed_images(now)
            prediction = Prediction(
                id="".join(secrets.choice(ID_ALPHABET) for _ in range(26)),
                model=model,
                input=input,
                seed=input.get("seed", self._rng.randrange(65536)),
                num_outputs=input.get("num_outputs", 1),
                aspect_ratio=(
                    "1:1"
                    if input.get("aspect_ratio") == MATCH_INPUT_IMAGE
                    else input.get("aspect_ratio", "1:1")
                ),
                output_format=input.get("output_format", "webp"),
                output_quality=input.get("output_quality", 80),
                created=now,
                queue=self._draw_duration(model.queue_median),
                run=self._draw_duration(model.run_median),
                failure=model.failure or self._draw_failure(),
                stream_key=secrets.token_hex(26),
                webhook=webhook,
                webhook_events=frozenset(
                    DEFAULT_WEBHOOK_EVENTS if webhook_events is None else webhook_events
                ),
                file_base=file_base,
                token=token,
            )
            self._predictions[prediction.id] = prediction
            self._creates_by_prompt[input["prompt"]] += 1
            answer = prediction.as_json(now, self.retention, file_base)
        if webhook:
            self.webhooks.schedule(prediction.id, webhook, prediction.webhook_moments())
        return answer

    def get(
        self, prediction_id: str, file_base: str, token: str | None = None
    ) -> dict[str, Any] | None:
        """The prediction, if `token` may see it (in-process callers, with None, see all)."""
        with self._lock:
            prediction = self._visible(prediction_id, token)
            if prediction is None:
                return None
            return prediction.as_json(time.time(), self.retention, file_base)

    def get_body(
        self, prediction_id: str, file_base: str, token: str | None = None
    ) -> bytes | None:
        """`get` as the JSON a poll receives: the hot path, so mostly rendered before."""
        with self._lock:
            prediction = self._visible(prediction_id, token)
            if prediction is None:
                return None
            return prediction.body(time.time(), self.retention, file_base)

    def cancel(
        self, prediction_id: str, file_base: str, token: str | None = None
    ) -> dict[str, Any] | None:
        with self._lock:
            prediction = self._visible(prediction_id, token)
            if prediction is None:
                return None
            now = time.time()
            canceled_now = prediction.status(now) not in TERMINAL
            if canceled_now:
                prediction.canceled = now
            answer = prediction.as_json(now, self.retention, file_base)
        if canceled_now and prediction.webhook and "completed" in prediction.webhook_events:
            self.webhooks.schedule(prediction.id, prediction.webhook, [(now, "completed")])
        return answer

    def webhook_body(self, prediction_id: str, event: str, moment: float) -> bytes | None:
        """The prediction as it was at `moment`, for a webhook of `event`; None if that event
        never happened after all (a cancel came first)."""
        with self._lock:
            prediction = self._predictions.get(prediction_id)
            if prediction is None or not prediction.has_event(event, moment):
                return None
            return prediction.body(moment, self.retention, prediction.file_base)

    def newest_first(self, file_base: str, token: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            now = time.time()
            predictions = sorted(
                (p for p in self._predictions.values() if token is None or p.token == token),
                key=lambda p: -p.created,
            )
            return [p.as_json(now, self.retention, file_base) for p in predictions]

    def _visible(self, prediction_id: str, token: str | None) -> Prediction | None:
        """The prediction, unless another token made it: as on Replicate, one account's
        predictions are not found by another (404, not 403). Called under the lock."""
        prediction = self._predictions.get(prediction_id)
        if prediction is None or (token is not None and prediction.token != token):
            return None
        return prediction

    def model(self, name: str) -> dict[str, Any] | None:
        """The model `owner/name` as Replicate describes it, or None if there is none. Its run
        count is every token's, as Replicate shows to all."""
        profile = MODELS.get(name)
        if profile is None:
            return None
        with self._lock:
            runs = sum(1 for p in self._predictions.values() if p.model is profile)
        return profile.as_json(runs)

    def output_file(self, prediction_id: str, index: int, extension: str) -> bytes | None:
        """An output image's bytes, or None if there is no such file (any more)."""
        with self._lock:
            prediction = self._predictions.get(prediction_id)
            now = time.time()
            if (
                prediction is None
                or prediction.status(now) != "succeeded"
                or prediction.data_removed(now, self.retention)
                or not 0 <= index < prediction.num_outputs
                or extension != prediction.output_format
            ):
                return None
            image = prediction.images.get(index)
        if image is None:
            # Rendered outside the lock: it takes milliseconds, and polls must not queue behind it.
            # Two concurrent renders produce the same bytes, so the race is harmless.
            image = render_image(
                prediction.input["prompt"],
                prediction.seed,
                index,
                prediction.aspect_ratio,
                prediction.output_format,
                prediction.output_quality,
            )
            with self._lock:
                prediction.images[index] = image
        return image

    def throttle(self, endpoint: str) -> float | None:
        """Seconds until the rate limit lets this request through, or None if it may go now."""
        kind = "create" if endpoint == "create" else "query"
        limit = self.faults.create_rate_limit if kind == "create" else self.faults.query_rate_limit
        if limit <= 0:
            return None
        with self._lock:
            return self._rate_limits[kind].admit(limit, time.monotonic())

    def draw_fault(self, endpoint: str) -> Fault | None:
        """Decide whether this request misbehaves, and how."""
        faults = self.faults
        if faults.rate_limit_burst <= 0 and not (
            endpoint in faults.endpoints and (faults.stall_burst > 0 or faults.any_random())
        ):
            # Most requests meet no fault at all: they need no lock to learn that.
            return None
        with self._lock:
            if faults.rate_limit_burst > 0:
                faults.rate_limit_burst -= 1
                return Fault("rate_limit")
            if endpoint not in faults.endpoints:
                return None
            if faults.stall_burst > 0:
                faults.stall_burst -= 1
                return Fault("stall", 504)
            if self._happens(faults.rate_limit_rate):
                return Fault("rate_limit")
            if self._happens(faults.server_error_rate):
                return Fault("server_error", self._rng.choice(SERVER_ERROR_STATUSES))
            if self._happens(faults.stall_rate):
                return Fault("stall", 504)
            if self._happens(faults.slow_rate):
                return Fault("slow")
            if self._happens(faults.malformed_rate):
                return Fault("malformed")
            return None

    def update_faults(self, changes: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.faults.update(changes)
            return self.faults.as_json()

    def count_request(self, endpoint: str) -> None:
        with self._lock:
            self._requests_by_endpoint[endpoint] += 1

    def count_response(self, status: int) -> None:
        with self._lock:
            self._responses_by_status[str(status)] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests_by_endpoint": dict(self._requests_by_endpoint),
                "responses_by_status": dict(self._responses_by_status),
                "predictions_created": len(self._predictions),
                "creates_by_prompt": dict(self._creates_by_prompt),
                "webhooks": self.webhooks.stats(),
            }

    def _draw_duration(self, median: float) -> float:
        # Lognormal like real queue and run times, clamped so a test never meets a freak outlier.
        spread = min(max(math.exp(self._rng.gauss(0, 0.35)), 0.5), 2.0)
        return median * spread / self.speed

    def _draw_failure(self) -> str | None:
        if self._happens(self.faults.failure_rate):
            return self._rng.choice(FAILURE_MESSAGES)
        return None

    def _happens(self, rate: float) -> bool:
        # No draw for a knob that is off, so seeded runs stay the same whatever faults exist.
        return rate > 0 and self._rng.random() < rate

    def _forget_removed_images(self, now: float) -> None:
        for prediction in self._predictions.values():
            if prediction.images and prediction.data_removed(now, self.retention):
                prediction.images.clear()


class RateLimit:
    """At most `limit` requests in any one second, as a provider's limiter enforces it.

    A sliding window of the times of the requests let through, not a token bucket: a bucket
    of one second's capacity lets twice its rate through in a second that begins with it full,
    and a client kept to a budget should find that budget in every second. It holds at most
    `limit` times, so it stays cheap."""

    def __init__(self) -> None:
        self._passed: deque[float] = deque()

    def admit(self, limit: int, now: float) -> float | None:
        """None if a request at `now` may pass (and count it), else seconds until one may."""
        passed = self._passed
        while passed and passed[0] <= now - 1:
            passed.popleft()
        if len(passed) < limit:
            passed.append(now)
            return None
        return passed[len(passed) - limit] + 1 - now


def openapi_schema() -> dict[str, Any]:
    """The inputs `input_problems` accepts and the output it makes, as Cog describes a model."""

    def choice(name: str, values: tuple[str, ...]) -> dict[str, Any]:
        return {"title": name, "description": "An enumeration.", "type": "string", "enum": values}

    ratios = (*ASPECT_RATIOS, MATCH_INPUT_IMAGE)
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {
            "schemas": {
                "Input": {
                    "title": "Input",
                    "type": "object",
                    "required": ["prompt"],
                    "properties": {
                        "prompt": {"title": "Prompt", "type": "string", "x-order": 0},
                        "seed": {
                            "title": "Seed",
                            "type": "integer",
                            "minimum": 0,
                            "maximum": 2**32 - 1,
                            "description": "Random seed; set it for reproducible images.",
                            "x-order": 1,
                        },
                        "num_outputs": {
                            "title": "Num Outputs",
                            "type": "integer",
                            "default": 1,
                            "minimum": 1,
                            "maximum": 4,
                            "x-order": 2,
                        },
                        "aspect_ratio": {
                            "allOf": [{"$ref": "#/components/schemas/aspect_ratio"}],
                            "default": "1:1",
                            "x-order": 3,
                        },
                        "output_format": {
                            "allOf": [{"$ref": "#/components/schemas/output_format"}],
                            "default": "webp",
                            "x-order": 4,
                        },
                        "output_quality": {
                            "title": "Output Quality",
                            "type": "integer",
                            "default": 80,
                            "minimum": 0,
                            "maximum": 100,
                            "x-order": 5,
                        },
                    },
                },
                "Output": {
                    "title": "Output",
                    "type": "array",
                    "items": {"type": "string", "format": "uri"},
                },
                "aspect_ratio": choice("aspect_ratio", ratios),
                "output_format": choice("output_format", tuple(OUTPUT_FORMATS)),
            }
        },
    }


def webhook_problems(webhook: Any, events: Any) -> list[str]:
    """Replicate-style validation messages for a create's webhook fields."""
    problems = []
    if webhook is not None and not (
        isinstance(webhook, str) and webhook.startswith(("https://", "http://"))
    ):
        problems.append("- webhook: must be an http or https URL")
    if events is not None and not (
        isinstance(events, list) and all(event in EVENTS for event in events)
    ):
        choices = ", ".join(f'"{event}"' for event in EVENTS)
        problems.append(f"- webhook_events_filter: must be a list drawn from {choices}")
    return problems


def input_problems(input: Any) -> list[str]:
    """Replicate-style validation messages for a prediction input, empty if it is valid."""
    if not isinstance(input, dict):
        return [f"- input: Invalid type. Expected: object, given: {type(input).__name__}"]
    problems = []
    prompt = input.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append("- input: prompt is required")
    if not _is_int_within(input.get("num_outputs", 1), 1, 4):
        problems.append("- input.num_outputs: must be an integer from 1 to 4")
    if input.get("aspect_ratio", "1:1") not in (*ASPECT_RATIOS, MATCH_INPUT_IMAGE):
        choices = ", ".join(f'"{ratio}"' for ratio in (*ASPECT_RATIOS, MATCH_INPUT_IMAGE))
        problems.append(f"- input.aspect_ratio: must be one of the following: {choices}")
    if input.get("output_format", "webp") not in OUTPUT_FORMATS:
        choices = ", ".join(f'"{name}"' for name in OUTPUT_FORMATS)
        problems.append(f"- input.output_format: must be one of the following: {choices}")
    if not _is_int_within(input.get("output_quality", 80), 0, 100):
        problems.append("- input.output_quality: must be an integer from 0 to 100")
    if "seed" in input and not _is_int_within(input["seed"], 0, 2**32 - 1):
        problems.append("- input.seed: must be an integer from 0 to 4294967295")
    return problems


def _is_int_within(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _progress_line(step: int, steps: int, run: float) -> str:
    """One tqdm line, e.g. ` 50%|█████     | 2/4 [00:00<00:00, 18.90it/s]`."""
    fraction = step / steps
    filled, part = divmod(fraction * 10, 1)
    bar = "█" * int(filled) + (" ▏▎▍▌▋▊▉"[int(part * 8)] if filled < 10 else "")
    bar = bar.ljust(10)
    if step == 0:
        return f"  0%|{bar}| 0/{steps} [00:00<?, ?it/s]"
    elapsed = run * fraction
    rate = step / elapsed
    speed = f"{rate:.2f}it/s" if rate >= 1 else f"{1 / rate:.2f}s/it"
    remaining = (steps - step) / rate
    return (
        f"{round(fraction * 100):3d}%|{bar}| {step}/{steps} "
        f"[{_clock(elapsed)}<{_clock(remaining)}, {speed}]"
    )


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes:02d}:{seconds:02d}"


def _iso(timestamp: float, digits: int) -> str:
    """RFC 3339 in UTC with `digits` of a second, cut rather than rounded (as Go prints them),
    e.g. `2026-12-02T04:31:02.123456789Z`."""
    seconds = math.floor(timestamp)
    fraction = int((timestamp - seconds) * 10**digits)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{fraction:0{digits}d}Z"
