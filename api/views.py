"""Replicate's HTTP API over Darkroom's predictions (the document: api/openapi.py).

Creates go the browser's way (predictions.submissions): saved before anything is sent, refused
by a budget (402) or the submit limits (429) before any provider call, and sent at most once.
"""

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.http import Http404, HttpRequest, JsonResponse

from accounts.models import Role
from accounts.teams import for_team, team_object_or_404
from outputs.models import ArchiveState, Output
from outputs.views import serve_copy
from predictions.catalog import CATALOG, CatalogModel
from predictions.client import MODEL_RE
from predictions.live import team_marker
from predictions.models import Prediction
from predictions.submissions import Refused, save_predictions, submitted_with
from predictions.tasks import wake_dispatcher
from webhooks.outgoing import checked_events, save_subscription, signing_secret

from . import openapi
from .auth import ApiError, api_view
from .forms import (
    CreateForm,
    CursorForm,
    InvalidFields,
    encode_cursor,
    prediction_fields,
    request_key,
)
from .shapes import api_root, model_json, prediction_json, signed_output, version_json, version_of

PAGE_SIZE = 100
# The largest id a BIGINT holds: PostgreSQL refuses to look up a larger one.
LARGEST_PK = 2**63 - 1
# While a create waits for its prediction's end: how often the team's change marker is read (a
# cache read), and the longest time between two looks at the prediction itself.
MARKER_INTERVAL = 0.2
LOOK_INTERVAL = 5.0


def respond(request: HttpRequest, prediction: Prediction, status: int = 200) -> JsonResponse:
    return JsonResponse(prediction_json(prediction, api_root(request)), status=status)


def prediction_or_404(request: HttpRequest, pk: int) -> Prediction:
    if pk > LARGEST_PK:
        raise Http404
    return team_object_or_404(request, Prediction.objects.prefetch_related("outputs"), pk=pk)


def invalid(fields: list[tuple[str, str]]) -> ApiError:
    """A 422 as Replicate words it: each field on a line of `detail`, and in `invalid_fields`."""
    return ApiError(
        422,
        "".join(f"- {field}: {description}\n" for field, description in fields),
        "Input validation failed",
        invalid_fields=[
            {"type": "invalid", "field": field, "description": description}
            for field, description in fields
        ],
    )


def json_body(request: HttpRequest) -> dict:
    try:
        body = json.loads(request.body or b"{}", parse_constant=refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}", "Invalid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", "Invalid JSON")
    return body


def refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


# --- Predictions ---------------------------------------------------------------------------------


@api_view()
def list_predictions(request):
    """The team's predictions, newest first, a page at a time: `next` and `previous` are the
    URLs of the pages after and before this one (null at either end)."""
    form = CursorForm(request.GET)
    if not form.is_valid():
        raise ApiError(400, " ".join(form.errors["cursor"]), "Invalid cursor")
    cursor = form.cleaned_data["cursor"]
    newest_first = for_team(request, Prediction.objects.prefetch_related("outputs")).order_by(
        "-submitted_at", "-id"
    )
    older = newer = False
    if cursor is None:
        rows = list(newest_first[: PAGE_SIZE + 1])
        older = len(rows) > PAGE_SIZE
    elif cursor[0] == "b":
        _, moment, pk = cursor
        after = Q(submitted_at__lt=moment) | Q(submitted_at=moment, id__lt=pk)
        rows = list(newest_first.filter(after)[: PAGE_SIZE + 1])
        older, newer = len(rows) > PAGE_SIZE, True
    else:
        _, moment, pk = cursor
        before = Q(submitted_at__gt=moment) | Q(submitted_at=moment, id__gt=pk)
        # The page just before: the nearest newer ones, read oldest first and turned round.
        rows = list(newest_first.filter(before).reverse()[: PAGE_SIZE + 1])
        older, newer = True, len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE][::-1]
    rows = rows[:PAGE_SIZE]
    base = api_root(request)
    page = f"{base}/predictions?cursor="
    return JsonResponse(
        {
            "previous": page + encode_cursor("a", rows[0].submitted_at, rows[0].pk)
            if newer and rows
            else None,
            "next": page + encode_cursor("b", rows[-1].submitted_at, rows[-1].pk)
            if older and rows
            else None,
            "results": [prediction_json(prediction, base) for prediction in rows],
        }
    )


@api_view(Role.MEMBER)
def create_prediction(request, owner: str | None = None, name: str | None = None):
    """A new prediction of `owner/name` (`POST /models/{owner}/{name}/predictions`) or of a
    catalog version (`POST /predictions`); `Prefer: wait` holds the answer until it ends."""
    model = None
    if owner is not None:
        model = f"{owner}/{name}"
        if not MODEL_RE.fullmatch(model):
            raise ApiError(404, f"Model {model} not found: a model is named owner/name.")
    form = CreateForm(json_body(request), model)
    if not form.is_valid():
        raise invalid(form.invalid_fields())
    team = request.membership.team
    key = request_key(team, idempotency_key(request))
    model, input = form.cleaned_data["model"], form.cleaned_data["input"]
    try:
        fields = prediction_fields(team, model, input, key)
    except InvalidFields as exc:
        raise invalid(exc.fields) from None
    if sent := submitted_with(team, key):
        if (sent[0].model, sent[0].input) != (fields["model"], fields["input"]):
            raise ApiError(
                409,
                "This Idempotency-Key was used for another prediction (another model or input): "
                "send a new key for a new prediction.",
                "Idempotency key reused",
            )
        response = created(request, sent[0])
        response["Idempotent-Replayed"] = "true"
        return response
    webhook, events = form.cleaned_data["webhook"], form.cleaned_data["events"]
    if webhook:
        # Checked (its name resolved) before the submit's transaction, which holds the team's
        # budget lock.
        try:
            events = checked_events(webhook, events)
        except ValidationError as exc:
            raise invalid(error_fields(exc)) from None

    def subscribe_webhook(predictions: list[Prediction]) -> None:
        if webhook:
            save_subscription(predictions[0], webhook, events, api_root(request))

    try:
        prediction = save_predictions(team, request.user, key, [fields], subscribe_webhook)[0]
    except Refused as refused:
        retry = {"Retry-After": str(refused.retry_after)} if refused.retry_after else {}
        raise ApiError(refused.status, refused.why, headers=retry) from None
    except ValidationError as exc:
        raise invalid(error_fields(exc)) from None
    return created(request, prediction)


def error_fields(error: ValidationError) -> list[tuple[str, str]]:
    """A model's ValidationError as (field, description) pairs."""
    if not hasattr(error, "error_dict"):
        return [("body", message) for message in error.messages]
    return [
        (field, message) for field, messages in error.message_dict.items() for message in messages
    ]


def idempotency_key(request: HttpRequest) -> str | None:
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > 255:
        raise ApiError(400, "The Idempotency-Key header takes at most 255 characters.")
    return key or None


def created(request: HttpRequest, prediction: Prediction) -> JsonResponse:
    """A create's answer (201), once the prediction has ended if the client asked to wait and
    one of this process's waiting seats is free (otherwise at once: the client polls)."""
    seconds = preferred_wait(request)
    with waiting_seat(seconds > 0) as seated:
        if seated:
            prediction = wait_for_end(request, prediction.pk, seconds)
    response = respond(request, prediction, status=201)
    if seated:
        response["Preference-Applied"] = f"wait={seconds}"
    return response


_waiting = 0
_waiting_lock = threading.Lock()


@contextmanager
def waiting_seat(wanted: bool) -> Iterator[bool]:
    """One of the API_MAX_WAITING seats of this process for a request that holds its answer:
    True while held, False when none was wanted or all are taken."""
    global _waiting
    with _waiting_lock:
        seated = wanted and _waiting < settings.API_MAX_WAITING
        _waiting += seated
    try:
        yield seated
    finally:
        if seated:
            with _waiting_lock:
                _waiting -= 1


def preferred_wait(request: HttpRequest) -> int:
    """Seconds `Prefer: wait` (the most allowed) or `Prefer: wait=n` asks to hold the answer
    for, at most API_MAX_WAIT; 0 when the client does not ask."""
    match = re.search(
        r"(?:^|[,;\s])wait(?:\s*=\s*\"?(\d{1,6})\"?)?\s*(?:$|[,;])",
        request.headers.get("Prefer", ""),
    )
    if match is None:
        return 0
    return min(int(match[1] or settings.API_MAX_WAIT), settings.API_MAX_WAIT)


def wait_for_end(request: HttpRequest, pk: int, seconds: float) -> Prediction:
    """The prediction once it has ended, or as it is after `seconds`.

    The wait holds this request's thread and nothing else: no database connection between two
    looks at the prediction (it is closed, and the next look opens one), and a look only after
    the team's change marker moved (a cache read every 0.2 s), or every 5 s to be safe.
    """
    deadline = time.monotonic() + seconds
    team_id = request.membership.team_id
    while True:
        marker = team_marker(team_id)  # before the look: a change after it moves the marker
        prediction = prediction_or_404(request, pk)
        left = deadline - time.monotonic()
        if not prediction.is_running or left <= 0:
            return prediction
        if not connection.in_atomic_block:
            connection.close()
        look_at = time.monotonic() + min(left, LOOK_INTERVAL)
        while time.monotonic() < look_at and team_marker(team_id) == marker:
            time.sleep(min(MARKER_INTERVAL, max(0.0, look_at - time.monotonic())))


@api_view(Role.MEMBER)
def track_prediction(request):
    """Follow a prediction made elsewhere (`{"provider": ..., "id": ...}`) as one of the team's:
    polled, archived, costed and shown like its own, under the token's member."""
    body = json_body(request)
    try:
        prediction = Prediction.track(
            request.membership.team, request.user, body.get("provider"), body.get("id")
        )
    except ValidationError as exc:
        # Replicate's body names the provider's id `id`; the model, `remote_id`.
        fields = [(field.replace("remote_id", "id"), why) for field, why in error_fields(exc)]
        raise invalid(fields) from None
    return respond(request, prediction_or_404(request, prediction.pk), status=201)


@api_view()
def get_prediction(request, pk: int):
    return respond(request, prediction_or_404(request, pk))


@api_view(Role.MEMBER)
def cancel_prediction(request, pk: int):
    """Ask for the cancel, sent by the next worker step; the prediction as it is now."""
    if prediction_or_404(request, pk).request_cancel():
        transaction.on_commit(wake_dispatcher)
    return respond(request, prediction_or_404(request, pk))


# --- The catalog's models -------------------------------------------------------------------------


def catalog_model_or_404(owner: str, name: str) -> CatalogModel:
    model = CATALOG.get(f"{owner}/{name}")
    if model is None:
        raise ApiError(
            404,
            f"Model {owner}/{name} is not in Darkroom's catalog: its predictions can be created "
            "by owner/name, but it has no model or version page here.",
        )
    return model


@api_view()
def get_model(request, owner: str, name: str):
    model = catalog_model_or_404(owner, name)
    runs = for_team(request, Prediction.objects.filter(model=model.name)).count()
    return JsonResponse(model_json(model, api_root(request), runs))


@api_view()
def list_versions(request, owner: str, name: str):
    model = catalog_model_or_404(owner, name)
    return JsonResponse({"previous": None, "next": None, "results": [version_json(model)]})


@api_view()
def get_version(request, owner: str, name: str, version: str):
    model = catalog_model_or_404(owner, name)
    if version != version_of(model.name):
        raise ApiError(404, f"Version {version} of {model.name} not found.")
    return JsonResponse(version_json(model))


# --- Open to all ------------------------------------------------------------------------------


def file(request, signed: str):
    """An archived output, for whoever holds a link from a prediction's `output` that has not
    expired (API_FILE_URL_EXPIRY): the link is the credential, as Replicate's own are."""
    pk = signed_output(signed)
    outputs = Output.objects.select_related("prediction").filter(state=ArchiveState.ARCHIVED)
    output = outputs.filter(pk=pk).first() if pk else None
    if output is None:
        return ApiError(
            404,
            "This file link is not valid or has expired: get the prediction again for a fresh one.",
        ).response()
    return serve_copy(output, "file")


@api_view(Role.MEMBER)
def webhook_secret(request):
    """The secret the team's webhooks to API clients are signed with (Standard Webhooks)."""
    return JsonResponse({"key": signing_secret(request.membership.team)})


def document(request):
    """The OpenAPI document of this API, with this deployment's URL."""
    return JsonResponse(openapi.document(api_root(request)))


def not_found(request, rest: str = ""):
    return ApiError(404, "Not found: see /api/v1/openapi.json for this API's paths.").response()
