from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm

from . import ratelimit
from .models import Role

User = get_user_model()


class SignInForm(AuthenticationForm):
    """Django's sign-in form, refusing further attempts after too many failures."""

    def clean(self):
        # Every attempt counts before the password is checked, so parallel guesses cannot all
        # slip in before the first failure is recorded; a success clears the username's count.
        username = (self.cleaned_data.get("username") or "").lower()
        ip = self.request.META.get("REMOTE_ADDR", "") if self.request else ""
        decisions = [
            ratelimit.hit("login-user", username, settings.LOGIN_RATE_LIMIT),
            ratelimit.hit("login-ip", ip, settings.LOGIN_RATE_LIMIT_IP),
        ]
        refused = [d for d in decisions if not d.allowed]
        if refused:
            minutes = max(1, round(max(d.retry_after for d in refused) / 60))
            raise forms.ValidationError(
                f"Too many sign-in attempts. Try again in {minutes} minutes.",
                code="rate_limited",
            )
        cleaned = super().clean()
        ratelimit.reset("login-user", username, settings.LOGIN_RATE_LIMIT)
        return cleaned


class AccountForm(UserCreationForm):
    email = forms.EmailField(help_text="For password resets.")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ["username", "email"]


class SetupForm(AccountForm):
    team_name = forms.CharField(max_length=100, label="Team name", initial="My team")


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100, label="Team name")


class SwitchTeamForm(forms.Form):
    team = forms.IntegerField()


class InviteForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


def credential_providers() -> list[tuple[str, str]]:
    """Providers a team can hold a key for: all but the built-in simulator."""
    return [(name, c["label"]) for name, c in settings.PROVIDERS.items() if c["key_variable"]]


class CredentialForm(forms.Form):
    provider = forms.ChoiceField(choices=credential_providers)
    secret = forms.CharField(
        label="API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        strip=True,
    )

    def clean_secret(self) -> str:
        secret = self.cleaned_data["secret"]
        if len(secret) < 8 or any(c.isspace() for c in secret):
            raise forms.ValidationError(
                "That does not look like an API key: paste the whole key, without spaces."
            )
        return secret
