import json
import math
import re
import uuid
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.core.validators import MaxLengthValidator, URLValidator
from django.db.models import QuerySet

from accounts.models import Team

from .catalog import ANY_MODEL_PROMPT_LENGTH, CATALOG, DEFAULT_MODEL, CatalogModel, Input
from .client import MODEL_RE, ProviderNotConfigured
from .models import Prediction

MAX_VARIATIONS = 8
SEED_RANGE = 2**32
MODEL_MESSAGE = "Give the model as owner/name, for example black-forest-labs/flux-schnell."
# The New images form's fields that are no input of the model (the others are: the prompt, and a
# catalog model's inputs).
NOT_INPUTS = {"provider", "model", "extra_input", "variations", "request_key"}


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


class PromptLengthValidator(MaxLengthValidator):
    """Counts a line break as one character, as the page's counter does: browsers send a
    textarea's line breaks as two (CR LF)."""

    def clean(self, x: str) -> int:
        return len(x.replace("\r\n", "\n"))


def refuse_constant(name: str):
    """NaN and Infinity are not JSON, though Python's parser takes them."""
    raise ValueError(f"{name} is not a JSON number: give a finite number.")


# A whole number a provider's JSON parser and Darkroom's own number fields take: 64 bits.
LARGEST_INTEGER = 2**63 - 1
# A lone surrogate (half of a UTF-16 pair) comes through JSON's \ud800 escapes: no UTF-8 text,
# so no database, holds one.
SURROGATE_RE = re.compile("[\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """Why `text` may not be part of an input, if it may not."""
    if "\x00" in text:
        # PostgreSQL stores no NUL, in text or in JSON.
        return "Null characters are not allowed."
    if surrogate := SURROGATE_RE.search(text):
        return (
            f"Text must be valid Unicode: this holds half of a surrogate pair "
            f"(\\u{ord(surrogate.group()):04x})."
        )
    if len(text) > settings.INPUT_MAX_STRING:
        return (
            f"Text is limited to {settings.INPUT_MAX_STRING:,} characters "
            f"(this one has {len(text):,})."
        )
    return None


def value_problem(value: Any) -> str | None:
    """Why one input's `value` may not be sent, if it may not: text no database holds or longer
    than INPUT_MAX_STRING, a number that is not finite or beyond 64 bits, or objects and lists
    nested deeper than INPUT_MAX_DEPTH (the input object holding it is the first level). Read
    without recursion, so that no depth breaks the check itself."""
    stack = [(value, 2)]
    while stack:
        item, level = stack.pop()
        problem = None
        if isinstance(item, str):
            problem = text_problem(item)
        elif isinstance(item, float) and not math.isfinite(item):
            problem = "Give a finite number."
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > LARGEST_INTEGER:
            problem = f"Give a whole number within ±{LARGEST_INTEGER:,}."
        elif isinstance(item, dict | list):
            if level > settings.INPUT_MAX_DEPTH:
                return f"Nested more than {settings.INPUT_MAX_DEPTH} levels deep."
            if isinstance(item, dict):
                stack.extend((key, level) for key in item)  # keys are text, checked as text
                item = item.values()
            stack.extend((child, level + 1) for child in item)
        if problem:
            return problem
    return None


def input_problems(input: dict[str, Any]) -> list[tuple[str, str]]:
    """What Darkroom will not save or send of an input, as (input name, why) pairs; the name is
    "" for an input larger than INPUT_MAX_BYTES as JSON. Empty for an input within the limits."""
    problems = []
    for name, value in input.items():
        if problem := text_problem(name):
            # Named as Python writes it: a NUL or a lone surrogate cannot be shown as it is.
            problems.append((repr(name)[1:-1], problem))
        elif problem := value_problem(value):
            problems.append((name, problem))
    if not problems:
        size = len(json.dumps(input, ensure_ascii=False).encode())
        if size > settings.INPUT_MAX_BYTES:
            problems.append(
                (
                    "",
                    f"The input holds {size:,} bytes as JSON: give at most "
                    f"{settings.INPUT_MAX_BYTES:,} bytes.",
                )
            )
    return problems


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
        self.limit_prompt(
            self.catalog_model.prompt_length if self.catalog_model else ANY_MODEL_PROMPT_LENGTH
        )
        if self.catalog_model is None:
            return
        # Never restored by a browser's back button into another model's inputs.
        self.fields["model"].widget = forms.HiddenInput(attrs={"autocomplete": "off"})
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

    def limit_prompt(self, length: int) -> None:
        """Cap the prompt at what the model reads (the catalog says), in the browser too."""
        prompt = self.fields["prompt"]
        prompt.max_length = length
        prompt.validators.append(
            PromptLengthValidator(
                length,
                f"Keep the prompt to {length:,} characters: the model reads no more "
                "(this one has %(show_value)s).",
            )
        )
        prompt.widget.attrs.update({"maxlength": str(length), "data-counter": ""})

    @classmethod
    def switching(cls, model: str | None, values: dict[str, Any], team: Team) -> "PredictionForm":
        """A fresh form for `model` (None: the default) that keeps `values`, the inputs of the
        model it replaces (`values["previous"]`), where the new model takes them too (aspect
        ratio, seed, format...). An input the new model does not take, or not with that value,
        is dropped, as is one left at the old model's default: the new model starts from its
        own (flux-dev's 28 steps are not schnell's 4)."""
        model = DEFAULT_MODEL if model is None else model
        catalog_model = CATALOG.get(model)
        previous = CATALOG.get(str(values.get("previous", "")))
        kept = {}
        for spec in catalog_model.inputs if catalog_model else ():
            value = values.get(spec.name)
            if value in (None, "") or (previous and previous.at_default(spec.name, value)):
                continue
            try:
                input_field(spec).clean(value)
            except forms.ValidationError:
                continue
            kept[spec.name] = value
        if values.get("extra_input") and catalog_model:
            kept["extra_input"] = values["extra_input"]
        return cls(team=team, initial={"model": model, **kept})

    @classmethod
    def tweaking(cls, prediction: Prediction, team: Team) -> "PredictionForm":
        """A fresh form holding `prediction`'s provider, model and input, to change and send;
        with the seed it used, where the model takes one and it was drawn at random (a model
        outside the catalog that printed one takes one: it goes into the JSON input)."""
        input = dict(prediction.input)
        catalog_model = CATALOG.get(prediction.model)
        takes_seed = catalog_model is None or catalog_model.takes("seed")
        drawn = takes_seed and "seed" not in input
        if drawn and (seed := prediction.seed_used) is not None:
            input["seed"] = seed
        initial = {
            "provider": prediction.provider,
            "model": prediction.model,
            "prompt": input.pop("prompt", ""),
        }
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
        size = len(text.encode(errors="surrogatepass"))
        if size > settings.INPUT_MAX_BYTES:
            raise forms.ValidationError(
                f"This holds {size:,} bytes: give at most {settings.INPUT_MAX_BYTES:,} bytes of "
                "JSON."
            )
        try:
            value = json.loads(text, parse_constant=refuse_constant)
        except RecursionError:
            raise forms.ValidationError(
                "This JSON is nested too deeply to read: give at most "
                f"{settings.INPUT_MAX_DEPTH} levels."
            ) from None
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
        # Before a catalog field reads any of it: float() of a 400-digit number overflows.
        if problems := input_problems(value):
            raise forms.ValidationError(
                [f"{name}: {why}" if name else why for name, why in problems]
            )
        return value

    def clean_variations(self) -> int:
        return self.cleaned_data["variations"] or 1

    def clean(self) -> dict:
        data = super().clean()
        if "extra_input" in data and self.catalog_model:
            data["extra_input"] = self._checked_other_inputs(data["extra_input"])
        if not self.errors:
            self._check_input(self.input())
            self._check_request_key(data["request_key"])
        return data

    def _check_input(self, input: dict[str, Any]) -> None:
        """The whole input within the limits, as the API sends typed inputs: each problem next
        to the field that holds the input, other inputs' under "Other inputs"."""
        for name, why in input_problems(input):
            if name in self.fields and name not in NOT_INPUTS:
                self.add_error(name, why)
            elif name:
                self.add_error("extra_input", f"{name}: {why}")
            else:
                self.add_error(None, why)

    def _check_request_key(self, key: uuid.UUID) -> None:
        """A form sent from one team's page, then sent again after switching teams, carries a
        key another team's predictions hold (keys are unique across teams). Nothing is sent;
        shown again, the form carries a fresh key, so Generate sends it to this team."""
        if not Prediction.objects.filter(request_key=key).exclude(team=self.team).exists():
            return
        self.data = self.data.copy()
        self.data["request_key"] = str(uuid.uuid4())
        self.add_error(
            None,
            f"This form was sent from another team's page, so nothing was sent to "
            f"{self.team.name}. Its inputs are kept below: press Generate to send them to "
            f"{self.team.name}.",
        )

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

    def input(self) -> dict[str, Any]:
        """The model's input this valid form makes: other inputs, the catalog inputs that are
        not left blank, and the prompt."""
        data = self.cleaned_data
        input = dict(data["extra_input"])
        for spec in self.catalog_model.inputs if self.catalog_model else ():
            if data[spec.name] not in (None, ""):
                input[spec.name] = data[spec.name]
        input["prompt"] = data["prompt"]
        return input

    def prediction_fields(self) -> list[dict[str, Any]]:
        """Model fields of the predictions to create: one dict per variation.

        Each variation is its own prediction with its own `variation` index. With a seed, the
        variations take consecutive seeds, so the set differs and each one can be reproduced;
        without one, each is sent without a seed and the provider draws one.
        """
        data = self.cleaned_data
        input = self.input()
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
    """`?cursor=N&bar=M&polled=T`: how many characters of the log the viewer has been sent,
    where the line of the bar it shows as `#log-bar-current` starts (see predictions.logs), and
    the last poll it was told of (`last_polled_at`)."""

    cursor = log_offset_field("cursor")
    bar = log_offset_field("bar")
    polled = forms.DateTimeField(
        required=False, error_messages={"invalid": "The polled time must be an ISO 8601 time."}
    )


# --- Compare -------------------------------------------------------------------------------

COMPARE_LEAST, COMPARE_MOST = 2, 4
# The most rows of images a comparison shows.
COMPARE_IMAGES = 12
# A BIGINT's range: a larger number is no prediction's, and PostgreSQL refuses to look it up.
LARGEST_PK = 2**63 - 1
COMPARE_HOW = (
    "Tick two to four predictions in the history (or images of them in the gallery), then "
    "press Compare."
)


class PredictionNumbersField(forms.Field):
    """A repeated query parameter of prediction numbers (`?p=12&p=15`), in the order given."""

    widget = forms.MultipleHiddenInput
    default_error_messages = {"invalid": "“%(value)s” is not a prediction number."}

    def to_python(self, value) -> list[int]:
        numbers = []
        for item in value or ():
            text = str(item).strip()
            if not (
                text.isascii()
                and text.isdigit()
                and len(text) <= 19
                and 0 < int(text) <= LARGEST_PK
            ):
                params = {"value": str(item)[:30]}
                raise forms.ValidationError(self.error_messages["invalid"], "invalid", params)
            numbers.append(int(text))
        return numbers


class CompareForm(forms.Form):
    """The compare page's query: two to four different predictions, shown in the order given."""

    p = PredictionNumbersField(
        error_messages={"required": f"Choose the predictions to compare. {COMPARE_HOW}"}
    )

    def clean_p(self) -> list[int]:
        numbers = self.cleaned_data["p"]
        if twice := next((n for i, n in enumerate(numbers) if n in numbers[:i]), None):
            raise forms.ValidationError(
                f"Prediction {twice} is named twice: compare different predictions."
            )
        if not COMPARE_LEAST <= len(numbers) <= COMPARE_MOST:
            raise forms.ValidationError(
                f"Compare takes two to four predictions, not {len(numbers)}. {COMPARE_HOW}"
            )
        return numbers

    def comparison(self, predictions: QuerySet) -> "Comparison | None":
        """The chosen predictions, found among `predictions` (the team's), side by side; None
        if one of them is not there."""
        numbers = self.cleaned_data["p"]
        found = predictions.in_bulk(numbers)
        if len(found) < len(numbers):
            return None
        return Comparison([found[number] for number in numbers])


@dataclass(frozen=True)
class ComparedValue:
    """One prediction's value in a row of the compare page: its words and the spaces between
    them, each word marked where the row's other values do not have it. No parts: not set."""

    parts: list[tuple[str, bool]]
    note: str = ""

    @property
    def text(self) -> str:
        return "".join(piece for piece, _ in self.parts)


@dataclass(frozen=True)
class ComparedRow:
    label: str
    values: list[ComparedValue]
    is_input: bool  # the label is an input's own name, shown as code
    unset: str  # what a value without parts says

    @property
    def differs(self) -> bool:
        return len({value.text for value in self.values}) > 1


def shown_value(value: Any) -> str:
    """An input's value as the page shows it: text as it is, anything else as JSON; "" for
    an input not sent."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def marked_words(texts: list[str]) -> list[list[tuple[str, bool]]]:
    """Each text as (piece, marked) pairs: its words and the spaces between them, a word marked
    unless every other text has it in the same place (difflib's longest matching runs)."""
    pieces = [re.findall(r"\s+|\S+", text) for text in texts]
    words = [[piece for piece in own if not piece.isspace()] for own in pieces]
    marked = []
    for i, own in enumerate(pieces):
        shared = set(range(len(words[i])))
        for j, other in enumerate(words):
            if j != i:
                blocks = SequenceMatcher(None, words[i], other, autojunk=False)
                shared &= {
                    k for a, _, size in blocks.get_matching_blocks() for k in range(a, a + size)
                }
        parts, word = [], 0
        for piece in own:
            if piece.isspace():
                parts.append((piece, False))
            else:
                parts.append((piece, word not in shared))
                word += 1
        marked.append(parts)
    return marked


def compared_row(
    label: str,
    texts: list[str],
    notes: list[str] | None = None,
    is_input: bool = False,
    unset: str = "not set",
) -> ComparedRow:
    notes = notes or [""] * len(texts)
    values = [
        ComparedValue(parts, note) for parts, note in zip(marked_words(texts), notes, strict=True)
    ]
    return ComparedRow(label, values, is_input, unset)


class Comparison:
    """Two to four predictions side by side: their outputs by index, then what was asked of
    each. Model and seed always show, and every input that differs, its differing words marked;
    inputs the same in all are listed once, in `same`."""

    def __init__(self, predictions: list[Prediction]) -> None:
        self.predictions = predictions
        asked = [compared_row("Provider", [p.provider_label for p in predictions])]
        for name in self.input_names():
            values = [shown_value(p.input.get(name)) for p in predictions]
            asked.append(compared_row(name, values, is_input=True))
        self.rows = [
            compared_row("Model", [p.model for p in predictions]),
            self.seed_row(),
            *(row for row in asked if row.differs),
        ]
        self.same = [row for row in asked if not row.differs and row.values[0].text]

    def input_names(self) -> list[str]:
        """Every input of the predictions but the seed (a row of its own), the prompt first."""
        names = dict.fromkeys(["prompt"])
        for prediction in self.predictions:
            names.update(dict.fromkeys(prediction.input))
        names.pop("seed", None)
        return list(names)

    def seed_row(self) -> ComparedRow:
        """The seed each one used: the one asked for, or the one the model drew (its logs)."""
        seeds = [p.seed_used for p in self.predictions]
        notes = [
            "drawn at random" if seed is not None and "seed" not in p.input else ""
            for p, seed in zip(self.predictions, seeds, strict=True)
        ]
        return compared_row("Seed", [shown_value(seed) for seed in seeds], notes, unset="unknown")

    @property
    def output_rows(self) -> list[list]:
        """The outputs by index: row n holds each prediction's output n, or None."""
        outputs = [list(p.outputs.all()) for p in self.predictions]
        # The first rows only, as the gallery shows a prediction's first tiles: one may bring
        # thousands of outputs.
        most = min(max(len(own) for own in outputs), COMPARE_IMAGES)
        return [[own[n] if n < len(own) else None for own in outputs] for n in range(most)]

    @property
    def columns(self) -> list[tuple[Prediction, str]]:
        """Each prediction, and the query of this comparison without it (with more than two)."""
        numbers = [p.pk for p in self.predictions]
        if len(numbers) == COMPARE_LEAST:
            return [(prediction, "") for prediction in self.predictions]
        return [
            (prediction, urlencode({"p": [n for n in numbers if n != prediction.pk]}, doseq=True))
            for prediction in self.predictions
        ]


class TrackForm(forms.Form):
    """Track a prediction made elsewhere: its provider, and its id there (checked by
    `Prediction.track`, which the API shares)."""

    provider = forms.ChoiceField(choices=provider_choices)
    remote_id = forms.CharField(
        label="Prediction id",
        max_length=128,
        help_text="As the provider shows it, for example ufawqhfynnddngldkgtslldrkq.",
    )

    def __init__(self, *args, team: Team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["provider"].initial = team.default_provider()
        self.fields["remote_id"].widget.attrs.update(autocomplete="off", spellcheck="false")
