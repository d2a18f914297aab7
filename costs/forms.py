from datetime import date, datetime, time
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import Team
from dashboard.formats import day_text
from predictions.client import provider_label
from predictions.filters import date_field, member_field, team_members
from predictions.forms import clean_model_name
from predictions.models import RUNNING, Status

from .models import (
    LARGEST_PRICE,
    Budget,
    PriceRule,
    Unit,
    check_price_start,
    day_of,
    money,
    no_price_in,
)
from .reports import Period, preset_period

# A custom period's longest: a year of daily columns.
LONGEST_PERIOD = 366
PRESETS = [
    ("this_month", "This month"),
    ("last_7", "Last 7 days"),
    ("last_30", "Last 30 days"),
    ("last_month", "Last month"),
]
# Only ended predictions have a cost.
ENDED = [(value, label) for value, label in Status.choices if value not in RUNNING]


class CostFilterForm(forms.Form):
    """The costs page's period (a preset, or from and to) and what it is narrowed to; the CSV
    export takes the same query."""

    # Kept in links: the page's query, as the CSV link and the period's links carry it.
    names = ["period", "since", "until", "model", "member", "status"]

    period = forms.ChoiceField(choices=PRESETS, required=False, label="Period")
    since = date_field("From")
    until = date_field("To")
    model = forms.CharField(required=False, max_length=201, label="Model")
    member = member_field()
    status = forms.ChoiceField(
        choices=[("", "Any status"), *ENDED],
        required=False,
        error_messages={"invalid_choice": "There is no ended status called %(value)s."},
    )

    def __init__(self, data, *, request: HttpRequest) -> None:
        super().__init__(data, label_suffix="")
        self.request = request
        self.fields["member"].queryset = team_members(request)
        self.fields["model"].widget.attrs["placeholder"] = "Any model (owner/name)"

    def clean_model(self) -> str:
        return clean_model_name(self.cleaned_data["model"], required=False)

    def clean(self) -> dict:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        today = day_of(timezone.now())
        if since and until and since > until:
            self.add_error("until", "The end date is before the start date.")
        elif since or until:
            until = until or max(today, since)
            since = since or until.replace(day=1)
            if (until - since).days >= LONGEST_PERIOD:
                self.add_error("until", f"Choose at most {LONGEST_PERIOD} days.")
            else:
                data["range"] = Period(since, until)
        elif "period" in data:
            data["range"] = preset_period(data["period"] or "this_month", today)
        return data

    @property
    def chosen_period(self) -> Period:
        return self.cleaned_data["range"]

    @property
    def is_custom(self) -> bool:
        return bool(self.data.get("since") or self.data.get("until"))

    def filters(self) -> dict[str, Any]:
        """The narrowing, as lookups on DailyCost and PredictionCost."""
        data = self.cleaned_data
        lookups = {"model": data["model"], "member": data["member"], "status": data["status"]}
        return {name: value for name, value in lookups.items() if value}

    def history_params(self) -> dict[str, str]:
        """The narrowing, as the history's filters have it."""
        data = self.cleaned_data
        member = data["member"].get_username() if data["member"] else ""
        return {"model": data["model"], "member": member, "status": data["status"]}

    def query(self) -> str:
        """This page's query, for the CSV link."""
        return urlencode([(name, self.data[name]) for name in self.names if self.data.get(name)])

    @property
    def is_narrowed(self) -> bool:
        return any(self.data.get(name) for name in ("model", "member", "status"))

    def preset_links(self) -> list[tuple[str, str, bool]]:
        """(label, query, current) for each preset, keeping the narrowing."""
        names = ("model", "member", "status")
        narrowing = [(name, self.data[name]) for name in names if self.data.get(name)]
        current = "" if self.is_custom else (self.data.get("period") or "this_month")
        return [
            (label, urlencode([("period", value), *narrowing]), value == current)
            for value, label in PRESETS
        ]


def provider_choices() -> list[tuple[str, str]]:
    return [(name, provider_label(name)) for name in settings.PROVIDERS]


class PriceRuleForm(forms.ModelForm):
    """An owner's price for the team: always a new rule, from a moment on."""

    provider = forms.ChoiceField(choices=provider_choices)
    # What is typed (the widget has no time zone) is read in the deployment's TIME_ZONE, the
    # zone of the costs pages' days.
    effective_from = forms.DateTimeField(
        label="Effective from",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )

    class Meta:
        model = PriceRule
        fields = ["provider", "model", "unit", "amount", "currency", "effective_from", "source"]
        widgets = {"source": forms.TextInput(attrs={"placeholder": "Our invoice of 1 Dec 2026"})}
        labels = {"amount": "Price", "source": "Source"}
        help_texts = {"source": "Where the price comes from, and when it was read."}

    def __init__(self, *args, team: Team, **kwargs) -> None:
        initial = kwargs.setdefault("initial", {})
        initial.setdefault("effective_from", timezone.now().replace(second=0, microsecond=0))
        initial.setdefault("unit", Unit.PER_IMAGE)
        # As New images starts with it: the provider the team's predictions go to.
        initial.setdefault("provider", team.default_provider())
        super().__init__(*args, instance=PriceRule(team=team), label_suffix="", **kwargs)
        self.fields["model"].widget.attrs["placeholder"] = "owner/name"
        self.fields["effective_from"].help_text = (
            f"In {settings.TIME_ZONE}. A moment in the past has the costs it "
            "covers priced again in the background; the costs before it stay as they were."
        )

    def clean_model(self) -> str:
        return clean_model_name(self.cleaned_data["model"])

    def clean_effective_from(self):
        """Checked before anything converts it to UTC: year 1 or 9999 would not survive."""
        start = self.cleaned_data["effective_from"]
        check_price_start(start)
        return start

    def clean(self) -> dict:
        data = super().clean()
        key = {name: data.get(name) for name in ("provider", "model", "effective_from")}
        if None not in key.values() and self.instance.team.price_rules.filter(**key).exists():
            self.add_error(
                "effective_from",
                "The team already has a price for this model from this moment: "
                "choose another moment.",
            )
        return data


class PriceChangeForm(forms.Form):
    """A team rule's new price from a day on (see `PriceRule.change_price`): the costs of the
    predictions submitted before that day stay as they were."""

    unit = forms.ChoiceField(choices=Unit.choices)
    amount = forms.DecimalField(
        label="New price",
        min_value=0,
        max_value=LARGEST_PRICE,
        max_digits=14,
        decimal_places=8,
        error_messages={
            "min_value": "A price cannot be negative.",
            "max_value": f"At most {LARGEST_PRICE:,} a unit: a higher price is a typing mistake.",
            "max_decimal_places": "At most %(max)s decimal places.",
        },
    )
    # A day of the deployment's TIME_ZONE, the zone of the costs pages' days.
    since = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    source = forms.CharField(
        required=False,
        max_length=500,
        widget=forms.TextInput(attrs={"placeholder": "Our invoice of 1 Dec 2026"}),
        help_text="Where the new price comes from.",
    )

    def __init__(self, *args, rule: PriceRule, **kwargs) -> None:
        initial = {
            "unit": rule.unit,
            "amount": f"{rule.amount.normalize():f}",
            # Today, or a rule's own first day if it starts later.
            "since": max(day_of(timezone.now()), day_of(rule.effective_from)),
        }
        # Ids of the rule's own: the page has a form for each of the team's rules.
        super().__init__(
            *args, initial=initial, auto_id=f"rule-{rule.pk}-%s", label_suffix="", **kwargs
        )
        self.rule = rule
        first = day_of(rule.effective_from)
        self.fields["since"].help_text = (
            f"A day in {settings.TIME_ZONE}, from {day_text(first)} on. The predictions "
            "submitted before it keep their costs; those from it on are priced again."
        )

    def clean_since(self) -> date:
        day = self.cleaned_data["since"]
        check_price_start(datetime.combine(day, time.min))
        return day

    def clean(self) -> dict:
        data = super().clean()
        if "since" in data:
            try:
                self.rule.change_start(data["since"])
            except ValidationError as refusal:
                self.add_error("since", refusal)
        same = (data.get("unit"), data.get("amount")) == (self.rule.unit, self.rule.amount)
        if same:
            self.add_error("amount", "That is the price already: change the price or the unit.")
        return data

    def save(self) -> PriceRule:
        """The change made; a ValidationError if it no longer fits (see `change_price`)."""
        data = self.cleaned_data
        return self.rule.change_price(data["unit"], data["amount"], data["since"], data["source"])


class BudgetForm(forms.Form):
    """A monthly budget: the team's (no member) or one member's own limit. Empty: none."""

    member = forms.ModelChoiceField(
        queryset=get_user_model().objects.none(),
        required=False,
        to_field_name="username",
        empty_label="The whole team",
        error_messages={"invalid_choice": "No member of this team is called %(value)s."},
    )
    amount = forms.DecimalField(
        label="Monthly amount",
        required=False,
        min_value=0,
        max_digits=12,
        decimal_places=2,
        help_text="Leave empty for no budget.",
    )
    currency = forms.ChoiceField(
        help_text="The currencies of the team's prices: a budget counts what is spent in its own.",
    )

    def __init__(self, *args, request: HttpRequest, for_member: bool, **kwargs) -> None:
        """`for_member`: a member's limit (prefix "limit"), else the team's budget ("team")."""
        prefix = "limit" if for_member else "team"
        super().__init__(*args, prefix=prefix, label_suffix="", **kwargs)
        currencies = Budget.currencies(request.membership.team_id)
        currency = self.fields["currency"]
        currency.choices = [(code, code) for code in currencies]
        currency.initial = "USD" if "USD" in currencies else currencies[0]
        currency.error_messages["invalid_choice"] = no_price_in("%(value)s")
        member = self.fields["member"]
        member.queryset = team_members(request)
        if for_member:
            member.required = True
            member.empty_label = "Choose a member"
            member.error_messages["required"] = "Choose the member whose limit this is."
        else:
            # The team's form has no member: it sets the team's budget whatever is sent.
            member.disabled = True

    def save(self, team: Team) -> tuple[Budget | None, str]:
        """Set (or with no amount, remove) the budget; what changed, in words."""
        data = self.cleaned_data
        member = data["member"]
        whose = f"{member.get_username()}'s monthly limit" if member else "The team's budget"
        if data["amount"] is None:
            Budget.objects.filter(team=team, member=member).delete()
            return None, f"{whose}: removed."
        budget, _ = Budget.objects.update_or_create(
            team=team,
            member=member,
            defaults={"amount": data["amount"], "currency": data["currency"]},
        )
        return budget, f"{whose}: {money(budget.amount, budget.currency)} a month."
