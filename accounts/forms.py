import math

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm

from dashboard.clients import client_address

from . import ratelimit
from .models import Role

User = get_user_model()


def wait_text(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} second{'' if seconds == 1 else 's'}"
    return f"{math.ceil(seconds / 60)} minutes"


class ThrottledSignIn:
    """Progressive delays per username and per client address (accounts/ratelimit.py), for
    the sign-in page and the admin's alike: failures add up, whichever page they were on."""

    def clean(self):
        username = (self.cleaned_data.get("username") or "").lower()
        address = client_address(self.request.META) if self.request else ""
        user = ratelimit.SignInThrottle("login-user", username, settings.LOGIN_RATE_LIMIT)
        place = ratelimit.SignInThrottle("login-ip", address, settings.LOGIN_RATE_LIMIT_IP)
        if not user.begin().allowed:
            self.refuse(user.retry_after)
        if not place.begin().allowed:
            user.cancel()
            self.refuse(place.retry_after)
        try:
            cleaned = super().clean()
        except forms.ValidationError as error:
            wait = max(user.failed(), place.failed())
            if not wait:
                raise
            note = forms.ValidationError(
                f"Wait {wait_text(wait)} before trying again.", code="rate_limited"
            )
            raise forms.ValidationError([*error.error_list, note]) from None
        user.succeeded(forget=True)
        place.succeeded(forget=False)
        return cleaned

    def refuse(self, retry_after: int) -> None:
        raise forms.ValidationError(
            f"Too many sign-in attempts failed: wait {wait_text(retry_after)}, then try again.",
            code="rate_limited",
        )


class SignInForm(ThrottledSignIn, AuthenticationForm):
    """The sign-in page's form."""


class AdminSignInForm(ThrottledSignIn, AdminAuthenticationForm):
    """/admin/login/'s form (accounts/admin.py): for staff only, and throttled the same."""


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
    # Within a BIGINT: the database refuses to look up a larger id (a 500, not a 404).
    team = forms.IntegerField(min_value=1, max_value=2**63 - 1)


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
