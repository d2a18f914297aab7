import json
import uuid

from django import forms
from django.conf import settings

from accounts.models import Team

from .client import MODEL_RE, ProviderNotConfigured


def provider_choices() -> list[tuple[str, str]]:
    return [(name, config["label"]) for name, config in settings.PROVIDERS.items()]


class PredictionForm(forms.Form):
    provider = forms.ChoiceField(
        choices=provider_choices,
        error_messages={"invalid_choice": "Unknown provider %(value)s."},
    )
    model = forms.CharField(
        max_length=201,
        initial="black-forest-labs/flux-schnell",
        help_text="owner/name, as on the provider's model page.",
    )
    prompt = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": "Enter a prompt: say what the image should show."},
    )
    extra_input = forms.CharField(
        label="More input (JSON)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": '{"aspect_ratio": "16:9"}'}),
        help_text="Other model inputs as a JSON object; the prompt above wins.",
    )
    # Rendered once per form: a double-clicked or replayed submit carries the same key.
    request_key = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)

    def __init__(self, *args, team: Team, **kwargs):
        super().__init__(*args, **kwargs)
        self.team = team
        self.fields["provider"].initial = team.default_provider()

    def clean_provider(self) -> str:
        name = self.cleaned_data["provider"]
        try:
            self.team.provider(name)
        except ProviderNotConfigured as exc:
            raise forms.ValidationError(str(exc)) from None
        return name

    def clean_model(self) -> str:
        model = self.cleaned_data["model"].strip()
        if not MODEL_RE.fullmatch(model):
            raise forms.ValidationError(
                "Give the model as owner/name, for example black-forest-labs/flux-schnell."
            )
        return model

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
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"This is not valid JSON: {exc}.") from None
        if not isinstance(value, dict):
            raise forms.ValidationError('Give a JSON object, like {"num_outputs": 2}.')
        return value

    def prediction_fields(self) -> dict:
        data = self.cleaned_data
        return {
            "provider": data["provider"],
            "model": data["model"],
            "input": {**data["extra_input"], "prompt": data["prompt"]},
        }
