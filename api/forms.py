"""What API requests carry: a create's JSON body, a list's cursor, and the token page's form.

A create's input is checked by the New images form itself (`PredictionForm`), so a catalog
model's inputs follow the same rules on both doors: ranges, choices, the prompt's length, the
inputs a model cannot run without.
"""

import base64
import binascii
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import Team
from predictions.catalog import CATALOG
from predictions.forms import PredictionForm, initial_value, input_problems
from webhooks.models import EVENTS as WEBHOOK_EVENTS

from .shapes import catalog_version

# Replicate's default when a webhook comes without a filter.
DEFAULT_WEBHOOK_EVENTS = ("output", "completed")
# JSON types each kind of catalog input takes (a bool is no number, though Python says so).
INPUT_TYPES = {
    "integer": ("integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "boolean": ("boolean", lambda v: isinstance(v, bool)),
}
TEXT_TYPE = ("string", lambda v: isinstance(v, str))
# A namespace of Darkroom's own for request keys made from Idempotency-Key headers.
IDEMPOTENCY_NAMESPACE = uuid.UUID("5b0e7a4e-3c1f-4d8e-9a51-6a2f0d6c9e10")


class InvalidFields(Exception):
    """A request whose fields are not valid: (field, description) pairs, named as Replicate
    names them (`input.num_outputs`)."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {description}" for field, description in fields))
        self.fields = fields


class CreateForm(forms.Form):
    """A create's JSON body: `input`, and for `POST /predictions` the `version`; `webhook` and
    `webhook_events_filter` (or Replicate's older `webhook_completed`) ask for webhooks.
    Cleaned, it names the `model` and the webhook's `events`."""

    input = forms.Field(required=False)
    version = forms.Field(required=False)
    webhook = forms.Field(required=False)
    webhook_completed = forms.Field(required=False)
    webhook_events_filter = forms.Field(required=False)

    def __init__(self, body: dict[str, Any], model: str | None = None) -> None:
        super().__init__(body)
        self.model = model

    def clean_input(self) -> dict[str, Any]:
        value = self.cleaned_data["input"]
        if not isinstance(value, dict):
            raise forms.ValidationError("input is required, as a JSON object.")
        return value

    def clean_version(self) -> str:
        version = text_or_nothing(self.cleaned_data["version"], 300)
        if self.model is not None:
            return version
        if not version:
            raise forms.ValidationError("version is required.")
        if catalog_version(version) is None:
            raise forms.ValidationError(
                f"Version {version} not found: give owner/name, owner/name:version or the "
                "version id of a model of Darkroom's catalog."
            )
        return version

    def clean_webhook(self) -> str:
        return text_or_nothing(self.cleaned_data["webhook"], 2000)

    def clean_webhook_completed(self) -> str:
        return text_or_nothing(self.cleaned_data["webhook_completed"], 2000)

    def clean_webhook_events_filter(self) -> list[str] | None:
        events = self.cleaned_data["webhook_events_filter"]
        if events is None:
            return None
        if not isinstance(events, list) or not all(event in WEBHOOK_EVENTS for event in events):
            choices = ", ".join(f'"{event}"' for event in WEBHOOK_EVENTS)
            raise forms.ValidationError(f"Give a list drawn from {choices}.")
        return list(dict.fromkeys(events))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "version" in data:
            data["model"] = self.model or catalog_version(data["version"]).name
        # webhook_completed, alone, is Replicate's older way to ask for the end only.
        completed_only = bool(data.get("webhook_completed")) and not data.get("webhook")
        data["webhook"] = data.get("webhook") or data.get("webhook_completed", "")
        events = data.get("webhook_events_filter")
        if events is None:
            events = ["completed"] if completed_only else list(DEFAULT_WEBHOOK_EVENTS)
        data["events"] = events
        return data

    def invalid_fields(self) -> list[tuple[str, str]]:
        return [(field, message) for field, messages in self.errors.items() for message in messages]


def text_or_nothing(value: Any, longest: int) -> str:
    """A string field of a JSON body: a string of at most `longest` characters, or absent."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise forms.ValidationError("Give a string.")
    if len(value) > longest:
        raise forms.ValidationError(f"Give at most {longest:,} characters.")
    return value.strip()


def input_field_name(field: str) -> str:
    """A New images form field's name as an API client knows it."""
    if field in ("provider", "model"):
        return field
    if field in ("__all__", "extra_input"):
        return "input"
    return f"input.{field}"


def prediction_fields(team: Team, model: str, input: dict[str, Any], key: uuid.UUID) -> dict:
    """The fields of the prediction to create from an API input, checked as the New images form
    checks its own; InvalidFields if they are not valid.

    A catalog input must have its JSON type (an integer, not "4"); the form then checks its
    range or choices. Inputs the catalog does not list go to the form's "other inputs".
    """
    catalog_model = CATALOG.get(model)
    specs = {spec.name: spec for spec in catalog_model.inputs} if catalog_model else {}
    data = {
        "provider": team.default_provider(),
        "model": model,
        "request_key": str(key),
        "variations": "1",
    }
    # Within the limits every input keeps (no NUL, no lone surrogate, a finite number, no
    # deeper nesting...), before the form's fields read any of it.
    if problems := input_problems(input):
        raise InvalidFields(
            [(f"input.{name}" if name else "input", message) for name, message in problems]
        )
    other, problems = {}, []
    for name, value in input.items():
        spec = specs.get(name)
        if name != "prompt" and spec is None:
            other[name] = value
            continue
        if value is None:
            continue  # not sent: the model's default
        kind, matches = INPUT_TYPES.get(spec.kind, TEXT_TYPE) if spec else TEXT_TYPE
        if not matches(value):
            problems.append((f"input.{name}", f"Invalid type. Expected: {kind}."))
        else:
            data[name] = initial_value(spec, value) if spec else value
    if problems:
        raise InvalidFields(problems)
    # As a browser sends it: the form counts the bytes of this text against INPUT_MAX_BYTES.
    data["extra_input"] = json.dumps(other, ensure_ascii=False) if other else ""
    form = PredictionForm(data, team=team)
    if not form.is_valid():
        raise InvalidFields(
            [
                (input_field_name(field), message)
                for field, messages in form.errors.items()
                for message in messages
            ]
        )
    return form.prediction_fields()[0]


def request_key(team: Team, idempotency_key: str | None) -> uuid.UUID:
    """The create's request key: the same for every retry carrying one Idempotency-Key in one
    team, else a fresh one."""
    if not idempotency_key:
        return uuid.uuid4()
    return uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{team.pk}:{idempotency_key}")


# --- Listing ------------------------------------------------------------------------------------


def encode_cursor(direction: str, submitted_at: datetime, pk: int) -> str:
    raw = f"{direction}|{submitted_at.isoformat()}|{pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


class CursorForm(forms.Form):
    """`?cursor=`: where a page of the list starts, as the previous page's `next` or
    `previous` link says: older ("b", before) or newer ("a", after) than one prediction."""

    cursor = forms.CharField(required=False, max_length=200)

    def clean_cursor(self) -> tuple[str, datetime, int] | None:
        text = self.cleaned_data["cursor"]
        if not text:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            direction, moment, pk = raw.split("|")
            submitted_at = parse_datetime(moment)
            number = int(pk)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            submitted_at = None
        if submitted_at is None or direction not in ("a", "b") or not 0 < number < 2**63:
            raise forms.ValidationError("This cursor is not one Darkroom gave: start again.")
        return direction, submitted_at, number


# --- The token page -----------------------------------------------------------------------------

LIFETIMES = [
    ("7", "7 days"),
    ("30", "30 days"),
    ("90", "90 days"),
    ("365", "A year"),
    ("", "Never"),
]


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What it is for, for example “render farm” or “notebook”.",
        error_messages={"required": "Name the token: say what it is for."},
    )
    expires_in = forms.ChoiceField(
        label="Expires after", choices=LIFETIMES, required=False, initial="90"
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Name the token: say what it is for.")
        return name

    def expires_at(self) -> datetime | None:
        days = self.cleaned_data["expires_in"]
        return timezone.now() + timedelta(days=int(days)) if days else None
