import json
import uuid
from typing import Any

from django import forms
from django.conf import settings
from django.core.validators import URLValidator

from accounts.models import Team

from .catalog import CATALOG, DEFAULT_MODEL, CatalogModel, Input
from .client import MODEL_RE, ProviderNotConfigured
from .models import Prediction

MAX_VARIATIONS = 8
SEED_RANGE = 2**32
MODEL_MESSAGE = "Give the model as owner/name, for example black-forest-labs/flux-schnell."


def clean_model_name(value: str, required: bool = True) -> str:
    """A model field's value, stripped: owner/name (or empty when not `required`)."""
    model = value.strip()
    if (model or required) and not MODEL_RE.fullmatch(model):
        raise forms.ValidationError(MODEL_MESSAGE)
    return model


def provider_choices() -> list[tuple[str, str]]:
    """Every provider; the demo simulator only where it is the deployment's default (elsewhere
    no simulator runs)."""
    return [
        (name, config["label"])
        for name, config in settings.PROVIDERS.items()
        if name != "simulator" or settings.DEFAULT_PROVIDER == "simulator"
    ]


class WebAddressField(forms.URLField):
    """A URL a provider can fetch: http or https only."""

    default_validators = [URLValidator(schemes=["http", "https"])]


def spoken_number(value: float | None) -> str:
    """4294967295 rather than 4.29497e+09, 0.5 rather than 0.500000."""
    if value is None:
        return ""
    return str(int(value)) if value == int(value) else f"{value:g}"


def input_field(spec: Input) -> forms.Field:
    """The form field for one catalog input; a blank value means "not sent"."""
    low, high = spoken_number(spec.minimum), spoken_number(spec.maximum)
    common = {"label": spec.label, "help_text": spec.help, "required": bool(spec.required_message)}
    if spec.required_message:
        common["error_messages"] = {"required": spec.required_message}
    if spec.kind in ("integer", "number"):
        whole = spec.kind == "integer"
        message = f"Enter a {'whole ' if whole else ''}number from {low} to {high}."
        messages = {"invalid": message, "min_value": message, "max_value": message}
        kind = forms.IntegerField if whole else forms.FloatField
        field = kind(min_value=spec.minimum, max_value=spec.maximum, **common)
        field.error_messages.update(messages)
    elif spec.kind == "choice":
        field = forms.ChoiceField(
            choices=[(value, value.replace("_", " ")) for value in spec.choices], **common
        )
        field.error_messages["invalid_choice"] = (
            f"“%(value)s” is not offered by this model: choose one of {', '.join(spec.choices)}."
        )
    elif spec.kind == "boolean":
        # A select rather than a checkbox: an unticked box is indistinguishable from an input
        # that was not sent at all, and a missing input must mean "the model's default".
        field = forms.TypedChoiceField(
            choices=[("true", "Yes"), ("false", "No")],
            coerce=lambda value: value == "true",
            empty_value=None,
            **common,
        )
        field.error_messages["invalid_choice"] = "Choose yes or no."
    elif spec.kind == "text":
        field = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), **common)
    elif spec.kind == "url":
        field = WebAddressField(max_length=2000, **common)
        field.error_messages["invalid"] = (
            "Enter the image's full web address, starting with https:// or http://."
        )
        field.widget.attrs["placeholder"] = "https://…"
    else:
        raise ValueError(f"{spec.name}: unknown input kind {spec.kind!r}")
    return field


def initial_value(spec: Input, value: Any) -> Any:
    """`value` as the field for `spec` shows it."""
    if spec.kind == "boolean" and isinstance(value, bool):
        return "true" if value else "false"
    return value


def refuse_constant(name: str):
    """NaN and Infinity are not JSON, though Python's parser takes them."""
    raise ValueError(f"{name} is not a JSON number: give a finite number.")


class PredictionForm(forms.Form):
    """The New images form: one catalog model's inputs, or any model with a JSON input.

    The model decides the fields: a catalog model (`catalog_model`) gets a field per input, and
    "Other inputs" for anything the catalog does not list; any other owner/name gets the JSON
    editor alone. Catalog inputs left blank are not sent, so the model uses its own default.
    """

    provider = forms.ChoiceField(
        choices=provider_choices,
        error_messages={"invalid_choice": "Unknown provider %(value)s."},
    )
    prompt = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": "Enter a prompt: say what the image should show."},
    )
    model = forms.CharField(
        max_length=201,
        help_text="owner/name, as on the provider's model page.",
        error_messages={"required": MODEL_MESSAGE},
    )
    extra_input = forms.CharField(
        label="Input (JSON)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "placeholder": '{"aspect_ratio": "16:9"}'}),
        help_text="The model's inputs as a JSON object; the prompt above is sent as “prompt”.",
    )
    variations = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_VARIATIONS,
        initial=1,
        label="Variations",
        help_text=f"1 to {MAX_VARIATIONS} separate predictions from this input, in one click. "
        "With a seed, each takes the next one (42, 43, …); without, each gets a random seed.",
    )
    # Rendered once per form: a double-clicked or replayed submit carries the same key.
    # autocomplete=off: a browser restoring the page from history must not restore the key.
    request_key = forms.UUIDField(
        widget=forms.HiddenInput(attrs={"autocomplete": "off"}), initial=uuid.uuid4
    )

    def __init__(self, *args, team: Team, **kwargs):
        super().__init__(*args, **kwargs)
        self.team = team
        self.tweaked: Prediction | None = None  # the prediction this form started from
        self.fields["provider"].initial = team.default_provider()
        self.fields["variations"].error_messages.update(
            dict.fromkeys(
                ("invalid", "min_value", "max_value"),
                f"Enter a whole number of variations from 1 to {MAX_VARIATIONS}.",
            )
        )
        if self.is_bound:
            model = str(self.data.get("model", ""))
        else:
            model = self.initial.setdefault("model", DEFAULT_MODEL)
        self.catalog_model: CatalogModel | None = CATALOG.get(model.strip())
        if self.catalog_model is None:
            return
        self.fields["model"].widget = forms.HiddenInput()
        extra = self.fields["extra_input"]
        extra.label = "Other inputs (JSON)"
        extra.widget.attrs["rows"] = 3
        del extra.widget.attrs["placeholder"]
        extra.help_text = (
            "Inputs this form does not show, as a JSON object; see the model's page for them."
        )
        for spec in self.catalog_model.inputs:
            self.fields[spec.name] = input_field(spec)
            if spec.default is not None:
                self.fields[spec.name].initial = initial_value(spec, spec.default)

    @classmethod
    def tweaking(cls, prediction: Prediction, team: Team) -> "PredictionForm":
        """A fresh form holding `prediction`'s provider, model and input, to change and send."""
        input = dict(prediction.input)
        initial = {
            "provider": prediction.provider,
            "model": prediction.model,
            "prompt": input.pop("prompt", ""),
        }
        catalog_model = CATALOG.get(prediction.model)
        for spec in catalog_model.inputs if catalog_model else ():
            if spec.name in input:
                initial[spec.name] = initial_value(spec, input.pop(spec.name))
        if input:
            initial["extra_input"] = json.dumps(input, indent=2, ensure_ascii=False)
        form = cls(team=team, initial=initial)
        form.tweaked = prediction
        return form

    @property
    def catalog_fields(self) -> list[forms.BoundField]:
        inputs = self.catalog_model.inputs if self.catalog_model else ()
        return [self[spec.name] for spec in inputs]

    def clean_provider(self) -> str:
        name = self.cleaned_data["provider"]
        try:
            self.team.provider(name)
        except ProviderNotConfigured as exc:
            raise forms.ValidationError(str(exc)) from None
        return name

    def clean_model(self) -> str:
        return clean_model_name(self.cleaned_data["model"])

    def clean_prompt(self) -> str:
        prompt = self.cleaned_data["prompt"].strip()
        if not prompt:
            raise forms.ValidationError("Enter a prompt: say what the image should show.")
        return prompt

    def clean_extra_input(self) -> dict:
        text = self.cleaned_data["extra_input"].strip()
        if not text:
            return {}
        try:
            value = json.loads(text, parse_constant=refuse_constant)
        except ValueError as exc:
            if not isinstance(exc, json.JSONDecodeError):
                raise forms.ValidationError(str(exc)) from None
            raise forms.ValidationError(
                f"This is not valid JSON: {exc.msg.lower()} at line {exc.lineno}, column "
                f"{exc.colno}. Keys and strings take double quotes, as in "
                '{"num_outputs": 2}.'
            ) from None
        if not isinstance(value, dict):
            raise forms.ValidationError('Give a JSON object, like {"num_outputs": 2}.')
        return value

    def clean_variations(self) -> int:
        return self.cleaned_data["variations"] or 1

    def clean(self) -> dict:
        data = super().clean()
        if "extra_input" in data and self.catalog_model:
            data["extra_input"] = self._checked_other_inputs(data["extra_input"])
        return data

    def _checked_other_inputs(self, other: dict) -> dict:
        """Other inputs, holding inputs that have a field to the same rules as that field."""
        specs = {spec.name: spec for spec in self.catalog_model.inputs}
        checked = {}
        problems = []
        for name, value in other.items():
            spec = specs.get(name)
            if spec is None:
                checked[name] = value
            elif self.data.get(name) not in (None, ""):
                problems.append(f"{name} has its own field above: set it there, not here too.")
            else:
                try:
                    checked[name] = self.fields[name].clean(initial_value(spec, value))
                except forms.ValidationError as exc:
                    problems += [f"{name}: {message}" for message in exc.messages]
        if problems:
            self.add_error("extra_input", problems)
        return checked

    def prediction_fields(self) -> list[dict[str, Any]]:
        """Model fields of the predictions to create: one dict per variation.

        Each variation is its own prediction with its own `variation` index. With a seed, the
        variations take consecutive seeds, so the set differs and each one can be reproduced;
        without one, each is sent without a seed and the provider draws one.
        """
        data = self.cleaned_data
        input = dict(data["extra_input"])
        for spec in self.catalog_model.inputs if self.catalog_model else ():
            if data[spec.name] not in (None, ""):
                input[spec.name] = data[spec.name]
        input["prompt"] = data["prompt"]
        seed = input.get("seed")
        variations = []
        for index in range(data["variations"]):
            variation_input = dict(input)
            if index and isinstance(seed, int) and not isinstance(seed, bool):
                # Within the 32 bits the catalog allows; a seed from beyond them is left so.
                next_seed = seed + index
                variation_input["seed"] = (
                    next_seed % SEED_RANGE if 0 <= seed < SEED_RANGE else next_seed
                )
            variations.append(
                {
                    "provider": data["provider"],
                    "model": data["model"],
                    "input": variation_input,
                    "variation": index,
                }
            )
        return variations


class NewImagesQuery(forms.Form):
    """The New images page's query: `?model=owner/name` (or `any`), `?from=<prediction pk>`."""

    model = forms.CharField(required=False, max_length=201)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # "from" is a keyword, so the field cannot be declared on the class.
        self.fields["from"] = forms.IntegerField(required=False, min_value=1)

    def clean_model(self) -> str | None:
        """The model to show: owner/name, "" for any model, None for the default."""
        if self.cleaned_data["model"].strip() == "any":
            return ""
        return clean_model_name(self.cleaned_data["model"], required=False) or None


class RerunForm(forms.Form):
    """Run again: an optional key makes a double-clicked button run the prediction once."""

    request_key = forms.UUIDField(required=False, widget=forms.HiddenInput, initial=uuid.uuid4)


def log_offset_field(name: str) -> forms.IntegerField:
    return forms.IntegerField(
        required=False,
        min_value=0,
        error_messages={
            "invalid": f"The {name} must be a whole number of characters.",
            "min_value": f"The {name} cannot be negative.",
        },
    )


class LogCursorForm(forms.Form):
    """`?cursor=N&bar=M`: how many characters of the log the viewer has been sent, and where
    the line of the bar it shows as `#log-bar-current` starts (see predictions.logs)."""

    cursor = log_offset_field("cursor")
    bar = log_offset_field("bar")
