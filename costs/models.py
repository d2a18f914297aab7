"""What images cost: price rules, the cost of each ended prediction, daily roll-ups, budgets.

Money is a `Decimal` with a currency, never a float. A prediction's cost is computed when it ends,
inside the transaction that ends it (see signals.py), from the rule in force when it was
submitted, and stored with that rule: a price change is a new rule with a later `effective_from`,
so it never rewrites what was already spent. A prediction no rule prices is "unpriced", never $0.
A rule dated in the past does price again what it covers: its save records a `Repricing`, which a
worker does in the background (tasks.py), batch by batch.

Days and months are the deployment's (TIME_ZONE): a cost counts on the local day its prediction
was submitted, as the history's date filters count it, and a budget's month is a local calendar
month. After TIME_ZONE changes, `manage.py recompute_costs` moves the stored costs to their new
days and rebuilds the roll-ups.

A prediction that was given up as "submit outcome unknown" and then turns out to run keeps its
"possibly charged" cost until it ends; its end computes the cost again. Running predictions have
no cost row: budgets count them at their estimate.
"""

import functools
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Count, Exists, F, Min, OuterRef, Q, QuerySet, RestrictedError, Sum
from django.utils import timezone

from accounts.models import Team
from dashboard import leases
from dashboard.formats import day_text, moment_text
from predictions.client import provider_label
from predictions.models import RUNNING, Prediction, Status

ZERO = Decimal(0)
# Costs are kept to a millionth of the currency's unit: per-second prices have six decimals.
MILLIONTH = Decimal("0.000001")
# At this share of a budget, the team (or the member) is warned.
WARNING_AT = Decimal("0.8")
# How many of a team's latest successful runs of a model its typical run time is taken from.
TYPICAL_RUNS = 20
BATCH = 2000
# The highest price a rule may set, per image, second or prediction, in any currency: a higher
# one is a typing mistake.
LARGEST_PRICE = Decimal(10_000)
# The most one prediction is believed to cost. A larger result comes from metrics gone wrong (the
# provider's, or a price bypassing the forms), and is left unpriced rather than trusted: the cost
# column holds 8 digits before the point, and a day's roll-up 12.
LARGEST_COST = Decimal(10_000_000)
# When a price may take effect: an earlier or later start is a typing mistake (year 1, 9999),
# and one the database cannot even hold once moved to UTC.
EARLIEST_PRICE_START = date(2000, 1, 1)
LATEST_PRICE_START = timedelta(days=3653)  # ten years from today

currency_code = RegexValidator(r"^[A-Z]{3}$", "An ISO 4217 code in capitals, like USD.")


def money(amount: Decimal | None, currency: str) -> str:
    """An amount as people read it: "$0.003", "$48.20", "12.50 EUR"; "unpriced" for None."""
    if amount is None:
        return "unpriced"
    whole, _, fraction = f"{amount.normalize():f}".partition(".")
    text = f"{whole}.{fraction:0<2}"
    return f"${text}" if currency == "USD" else f"{text} {currency}".strip()


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def seconds_text(seconds: Decimal) -> str:
    return f"{seconds.quantize(Decimal('0.001')).normalize():f} s"


def day_of(moment: datetime) -> date:
    """The deployment's calendar day (TIME_ZONE) of `moment`: the day a cost counts in. Never a
    request's own time zone: roll-ups are stored by it."""
    return timezone.localdate(moment, timezone.get_default_timezone())


def start_of_day(day: date) -> datetime:
    """The moment the deployment's calendar day `day` begins."""
    return datetime.combine(day, datetime.min.time(), timezone.get_default_timezone())


def month_of(moment: datetime) -> tuple[date, date]:
    """The first and last day of `moment`'s calendar month in the deployment's TIME_ZONE."""
    first = day_of(moment).replace(day=1)
    return first, (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)


def requested_images(input: dict[str, Any]) -> int:
    """How many images a request asks for: its `num_outputs`, else one (every catalog model
    makes one unless asked for more)."""
    value = input.get("num_outputs", 1)
    valid = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if valid else 1


def no_price(provider: str, model: str) -> str:
    return f"No price for {provider_label(provider)} {model}."


def check_price_start(moment: datetime) -> None:
    """Refuse a price's start outside 1 January 2000 to ten years from today, by the date it
    was typed (its own time zone's): a date, so nothing here moves it out of range."""
    latest = timezone.localdate() + LATEST_PRICE_START
    if not EARLIEST_PRICE_START <= moment.date() <= latest:
        raise ValidationError(
            f"Choose a moment from {day_text(EARLIEST_PRICE_START)} to {day_text(latest)}.",
            code="out_of_range",
        )


def reported_seconds(prediction: Prediction) -> Decimal | None:
    """The run time the provider reported, if it is one: a negative or endless one is none."""
    seconds = prediction.predict_time
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return Decimal(str(seconds))


# Roll-ups are kept by increments from many workers at once, and rebuilt from the raw rows by
# `recompute_costs`. On PostgreSQL a rebuild holds a team's advisory lock exclusively and each
# increment shares it, so no increment lands between a rebuild's delete and its insert, while
# increments never wait for each other. A batch of pricing again holds it exclusively too, so no
# cost of the team is recorded between its read and its write. Nothing that holds it exclusively
# then waits for a prediction's row: a worker holds its prediction while it waits for the lock.
# SQLite runs one write transaction at a time anyway (IMMEDIATE mode).
# The lock's first key ("cost" in ASCII); the team's id is the second.
COSTS_LOCK = 0x636F7374


def lock_team_costs(team_id: int, exclusive: bool = False) -> None:
    """Take the team's costs lock until the end of the current transaction."""
    if connection.vendor != "postgresql":
        return
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s, %s)", [COSTS_LOCK, team_id % 2**31])


# A submission checks the team's budgets and saves its predictions holding this lock (the first
# key, "budg" in ASCII; the team's id is the second), so that the next one's check counts them.
# SQLite runs one write transaction at a time anyway.
BUDGET_LOCK = 0x62756467


def lock_team_budgets(team_id: int) -> None:
    """Take the team's budgets lock until the end of the current transaction."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [BUDGET_LOCK, team_id % 2**31])


def team_id_of(team: "Team | int | None") -> int | None:
    return team.pk if isinstance(team, Team) else team


# A user, or a user's id.
Member = AbstractBaseUser | int | None


# --- Prices -----------------------------------------------------------------------------------


class Unit(models.TextChoices):
    PER_IMAGE = "per_image", "per output image"
    PER_SECOND = "per_second", "per second of run time"
    PER_PREDICTION = "per_prediction", "per prediction"


class Kind(models.TextChoices):
    # The provider billed it (or, at a price of 0, would have): `amount` is what.
    CHARGED = "charged", "Charged"
    # Certainly nothing to pay: it never ran, or produced nothing that is billed.
    FREE = "free", "Free"
    # The provider may have run it (timed out, submit outcome unknown): `amount` is the estimate,
    # None when there is none.
    POSSIBLY_CHARGED = "possibly_charged", "Possibly charged"
    # It was billed, but no rule (or no run time) says how much.
    UNPRICED = "unpriced", "Unpriced"


class Charge(NamedTuple):
    kind: str
    amount: Decimal | None
    explanation: str


@dataclass(frozen=True)
class Estimate:
    """What one requested prediction would cost if it ran; `amount` None when unknown."""

    amount: Decimal | None
    currency: str
    explanation: str
    rule: "PriceRule | None" = None


# What a rule prices, and from when: an edit of anything else (its source) changes no cost.
PRICING_FIELDS = ["team_id", "provider", "model", "unit", "amount", "currency", "effective_from"]

# (team id, provider, model) -> (median seconds an image, runs it comes from), or None.
Typical = Callable[[int, str, str], "tuple[Decimal, int] | None"]


class PriceRule(models.Model):
    """A provider's price for a model from `effective_from` on.

    The deployment's rules (no team) are seeded from published prices; a team's own rule for the
    same model overrides them. A price change is a new rule with a later `effective_from`; saving
    a rule that takes effect in the past has the predictions it covers priced again in the
    background (see `Repricing`). Owners change the team's own rules in the app (see
    `change_price`), and delete one only while it has priced nothing.
    """

    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="price_rules",
        help_text="Empty: the deployment's price, for every team without a rule of its own.",
    )
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=201, help_text="owner/name, as predictions name it.")
    unit = models.CharField(max_length=20, choices=Unit.choices)
    amount = models.DecimalField(
        max_digits=14,
        decimal_places=8,
        validators=[
            MinValueValidator(ZERO),
            MaxValueValidator(
                LARGEST_PRICE,
                f"At most {LARGEST_PRICE:,} a unit: a higher price is a typing mistake.",
            ),
        ],
    )
    currency = models.CharField(max_length=3, default="USD", validators=[currency_code])
    effective_from = models.DateTimeField(default=timezone.now, validators=[check_price_start])
    source = models.TextField(blank=True, help_text="Where the price comes from, and when.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["provider", "model", "team", "-effective_from"]
        indexes = [
            # PriceRule.candidates(): provider = ? AND model = ? AND (team IS NULL OR team = ?).
            models.Index(
                fields=["provider", "model", "team", "-effective_from"],
                name="price_rule_lookup_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gte=0), name="price_rule_amount_not_negative"
            ),
            # Two rules from the same moment would leave the price to chance.
            models.UniqueConstraint(
                fields=["provider", "model", "effective_from"],
                condition=Q(team__isnull=True),
                name="price_rule_unique_deployment_start",
            ),
            models.UniqueConstraint(
                fields=["team", "provider", "model", "effective_from"],
                condition=Q(team__isnull=False),
                name="price_rule_unique_team_start",
            ),
        ]

    def __str__(self) -> str:
        return f"{provider_label(self.provider)} {self.model}: {self.price_text}"

    def save(self, *args, **kwargs) -> None:
        """Save, and if the rule takes effect in the past (or took effect there before this
        edit), record that the predictions it may cover are to be priced again: a worker does it
        after the commit, in the background (`Repricing`). An edit of the source alone prices
        nothing again."""
        with transaction.atomic():
            before = type(self).objects.filter(pk=self.pk).first() if self.pk else None
            super().save(*args, **kwargs)
            if before is None or before.prices_differently(self):
                Repricing.request([rule for rule in (before, self) if rule is not None])

    def prices_differently(self, other: "PriceRule") -> bool:
        return any(getattr(self, name) != getattr(other, name) for name in PRICING_FIELDS)

    @property
    def price_text(self) -> str:
        """ "$0.003 per output image" """
        return f"{money(self.amount, self.currency)} {self.get_unit_display()}"

    def times(self, quantity: Decimal | int) -> Decimal:
        return (self.amount * quantity).quantize(MILLIONTH, ROUND_HALF_UP)

    # --- Which rule ----------------------------------------------------------------------

    @classmethod
    def candidates(cls, provider: str, model: str, team: "Team | int | None") -> list["PriceRule"]:
        """The rules that may price `model` for the team: its own first, then the deployment's,
        each newest first (see `choose`)."""
        rules = cls.objects.filter(Q(team=None) | Q(team=team_id_of(team)))
        rules = rules.filter(provider=provider, model=model)
        return list(rules.order_by(F("team").asc(nulls_last=True), "-effective_from"))

    @staticmethod
    def choose(candidates: list["PriceRule"], at: datetime) -> "PriceRule | None":
        """The rule in force at `at`: the team's latest by then, else the deployment's."""
        return next((rule for rule in candidates if rule.effective_from <= at), None)

    @classmethod
    def in_force(
        cls, provider: str, model: str, team: "Team | int | None", at: datetime
    ) -> "PriceRule | None":
        return cls.choose(cls.candidates(provider, model, team), at)

    # --- Before a run: estimates ---------------------------------------------------------

    @classmethod
    def estimate(
        cls,
        provider: str,
        model: str,
        input: dict[str, Any],
        team: "Team | int",
        at: datetime | None = None,
    ) -> Estimate:
        """What one prediction of `model` with `input` would cost the team if it ran."""
        variation = {"provider": provider, "model": model, "input": input}
        return cls.estimate_all(team, [variation], at)[0]

    @classmethod
    def estimate_all(
        cls, team: "Team | int", variations: Iterable[dict[str, Any]], at: datetime | None = None
    ) -> list[Estimate]:
        """`estimate` for each of a form's variations (dicts with provider, model and input):
        the New images form's estimated cost is outputs × variations × price."""
        at = at or timezone.now()
        team_id = team_id_of(team)
        rules: dict[tuple[str, str], PriceRule | None] = {}
        estimates = []
        for variation in variations:
            key = (variation["provider"], variation["model"])
            if key not in rules:
                rules[key] = cls.in_force(*key, team_id, at)
            rule = rules[key]
            if rule is None:
                estimates.append(Estimate(None, "", no_price(*key)))
            else:
                estimates.append(rule.estimate_for(variation["input"], team_id))
        return estimates

    def estimate_for(
        self,
        input: dict[str, Any],
        team_id: int,
        typical: Typical | None = None,
        images: int | None = None,
    ) -> Estimate:
        """What this rule charges for a run with `input`: `images` (else the requested number)
        times the price, or for a price per second, the team's typical run time."""
        images = images or requested_images(input)
        if self.unit == Unit.PER_IMAGE:
            explanation = f"{plural(images, 'image')} × {self.price_text}"
            return Estimate(self.times(images), self.currency, explanation, self)
        if self.unit == Unit.PER_PREDICTION:
            return Estimate(
                self.times(1), self.currency, f"1 prediction at {self.price_text}", self
            )
        typical = (typical or self.typical_seconds_per_image)(team_id, self.provider, self.model)
        if typical is None:
            explanation = (
                f"{provider_label(self.provider)} charges {self.model} "
                f"{self.get_unit_display()}, and the team has no successful run of it to take a "
                "typical run time from: no estimate."
            )
            return Estimate(None, self.currency, explanation, self)
        per_image, runs = typical
        seconds = per_image * images
        explanation = (
            f"about {seconds_text(seconds)} ({plural(images, 'image')} at "
            f"{seconds_text(per_image)}, the median of the team's last {plural(runs, 'run')}) "
            f"× {self.price_text}"
        )
        return Estimate(self.times(seconds), self.currency, explanation, self)

    @staticmethod
    def typical_seconds_per_image(
        team_id: int, provider: str, model: str
    ) -> tuple[Decimal, int] | None:
        """The median run time an image of the team's latest successful runs of `model`, and
        how many runs it comes from; None if there are none."""
        runs = Prediction.objects.filter(
            team_id=team_id,
            model=model,
            provider=provider,
            status=Status.SUCCEEDED,
            predict_time__gte=0,
        ).values_list("predict_time", "image_count")[:TYPICAL_RUNS]
        per_image = [
            seconds / max(images or 1, 1) for seconds, images in runs if math.isfinite(seconds)
        ]
        if not per_image:
            return None
        return Decimal(str(round(statistics.median(per_image), 3))), len(per_image)

    # --- After a run: charges ------------------------------------------------------------

    def charge(self, prediction: Prediction, typical: Typical | None = None) -> Charge:
        """What this rule charges for `prediction`, which ended and reached the provider."""
        status = prediction.status
        if status in (Status.TIMED_OUT, Status.SUBMIT_UNKNOWN):
            return self.possible_charge(prediction, typical)
        price = self.price_text
        started = prediction.started_at is not None or reported_seconds(prediction) is not None
        ended = prediction.get_status_display()
        if self.unit == Unit.PER_IMAGE:
            images = prediction.image_count
            if images is None:
                images = len(prediction.output_urls)
            if not images:
                return Charge(
                    Kind.FREE, ZERO, f"{ended} with no image, at {price}: nothing to pay."
                )
            return Charge(Kind.CHARGED, self.times(images), f"{plural(images, 'image')} × {price}")
        if self.unit == Unit.PER_SECOND:
            if (seconds := reported_seconds(prediction)) is not None:
                amount = self.times(seconds)
                explanation = f"{seconds_text(seconds)} × {price}"
                return Charge(Kind.CHARGED if amount else Kind.FREE, amount, explanation)
            if status != Status.SUCCEEDED and not started:
                return Charge(Kind.FREE, ZERO, f"{ended} before it started: nothing to pay.")
            explanation = (
                f"The provider reported no run time (predict_time), and {price} needs one."
            )
            return Charge(Kind.UNPRICED, None, explanation)
        if status == Status.SUCCEEDED or started:
            return Charge(Kind.CHARGED, self.times(1), f"1 prediction at {price}")
        return Charge(Kind.FREE, ZERO, f"{ended} before it started: nothing to pay.")

    def possible_charge(self, prediction: Prediction, typical: Typical | None = None) -> Charge:
        """A prediction Darkroom lost track of may have run, and been billed: its estimate."""
        if prediction.status == Status.TIMED_OUT:
            why = "Timed out: Darkroom stopped following it, and the provider may have run it."
        else:
            why = "Submit outcome unknown: the provider may have run it."
        seconds = reported_seconds(prediction)
        if self.unit == Unit.PER_SECOND and seconds is not None:
            explanation = f"{why} It ran {seconds_text(seconds)} × {self.price_text}."
            return Charge(Kind.POSSIBLY_CHARGED, self.times(seconds), explanation)
        estimate = self.estimate_for(
            prediction.input, prediction.team_id, typical, images=prediction.image_count
        )
        if estimate.amount is None:
            return Charge(Kind.POSSIBLY_CHARGED, None, f"{why} {estimate.explanation}")
        return Charge(
            Kind.POSSIBLY_CHARGED, estimate.amount, f"{why} If so: {estimate.explanation}."
        )

    # --- Changed by owners ---------------------------------------------------------------

    def next_rule(self) -> "PriceRule | None":
        """The team's (or deployment's) next rule for the same model: where this one stops."""
        later = PriceRule.objects.filter(
            team=self.team_id,
            provider=self.provider,
            model=self.model,
            effective_from__gt=self.effective_from,
        )
        return later.order_by("effective_from").first()

    def change_start(self, day: date) -> datetime:
        """When a change of this rule's price from `day` (a day of the deployment's TIME_ZONE)
        takes effect: that day's start, or this rule's own if it began later that day. A
        ValidationError if `day` is before this rule began, or once its next rule took over."""
        first = day_of(self.effective_from)
        if day < first:
            raise ValidationError(
                f"This price starts on {day_text(first)}: change it from that day or a later one.",
                code="before_start",
            )
        start = max(start_of_day(day), self.effective_from)
        following = self.next_rule()
        if following is not None and start >= following.effective_from:
            raise ValidationError(
                f"From {day_text(day)} the price is {following.price_text}, from "
                f"{moment_text(following.effective_from)}: change that one instead.",
                code="superseded",
            )
        return start

    def change_price(self, unit: str, amount: Decimal, day: date, source: str = "") -> "PriceRule":
        """This team rule's price changed from `day` on, and the rule that now says so.

        A new rule from that day's start: the predictions submitted before it keep their costs.
        From this rule's own start (the day it began), the rule itself is corrected instead.
        Either way its save has the predictions it covers from then on priced again in the
        background, and the roll-ups follow them (see `save`). A ValidationError if `day` no
        longer fits (see `change_start`) or the rule was deleted meanwhile.
        """
        with transaction.atomic():
            # Two changes of one rule at once (a double click) take turns, and the second is
            # checked against the first's rule. No key lock: a worker pricing a prediction with
            # this rule meanwhile does not wait for it.
            rules = PriceRule.objects.select_for_update(no_key=True).order_by("pk")
            rule = rules.filter(pk=self.pk).first()
            if rule is None:
                raise ValidationError("This price was deleted meanwhile.", code="deleted")
            start = rule.change_start(day)
            if start != rule.effective_from:
                rule = PriceRule(
                    team_id=rule.team_id,
                    provider=rule.provider,
                    model=rule.model,
                    currency=rule.currency,
                    effective_from=start,
                )
            rule.unit, rule.amount = unit, amount
            rule.source = source or rule.source
            try:
                with transaction.atomic():
                    rule.save()
            except IntegrityError:  # another owner added a price from that moment meanwhile
                raise ValidationError(
                    "Another price from that moment was just added: look at the prices again.",
                    code="taken",
                ) from None
        return rule

    def delete_unless_used(self) -> bool | None:
        """Delete this team rule if it priced no prediction; False, and nothing deleted, if it
        did; None if it was deleted already. The team's costs lock is held exclusively, so no
        cost of the team is being priced with the rule meanwhile (a worker reads the rules once
        it holds the lock)."""
        try:
            with transaction.atomic():
                lock_team_costs(self.team_id, exclusive=True)
                deleted, _ = PriceRule.objects.filter(pk=self.pk).delete()
        except RestrictedError:
            return False
        return bool(deleted) or None


# --- What each prediction cost ----------------------------------------------------------------

# The prediction fields a cost is computed from.
COST_INPUTS = [
    "team_id",
    "submitted_by_id",
    "provider",
    "provider_id",
    "model",
    "input",
    "status",
    "output",
    "predict_time",
    "image_count",
    "started_at",
    "submitted_at",
]
# What a cost says, all of it computed: what pricing again rewrites.
COST_FIELDS = [
    "member",
    "provider",
    "model",
    "status",
    "day",
    "kind",
    "amount",
    "currency",
    "rule",
    "explanation",
    "computed_at",
]
# The roll-up a cost counts in, and what it adds there.
BUCKET_FIELDS = ["team_id", "day", "member_id", "provider", "model", "status", "currency"]
SUM_FIELDS = ["count", "amount", "possibly_charged_amount", "unpriced", "possibly_charged"]


def believable(amount: Decimal | None) -> bool:
    return amount is None or (amount.is_finite() and ZERO <= amount <= LARGEST_COST)


def beyond_belief(prediction: Prediction, rule: PriceRule) -> Charge:
    """A prediction whose metrics at `rule`'s price come to more than any prediction is believed
    to cost: unpriced (or possibly charged, without an estimate), and why."""
    metrics = [
        f"{name} {value}"
        for name, value in (
            ("predict_time", prediction.predict_time),
            ("image_count", prediction.image_count),
        )
        if value is not None
    ]
    reported = f"what the provider reported ({', '.join(metrics)})" if metrics else "its request"
    explanation = (
        f"At {rule.price_text}, {reported} comes to more than "
        f"{money(LARGEST_COST, rule.currency)}, which no prediction is believed to cost"
    )
    if prediction.status in (Status.TIMED_OUT, Status.SUBMIT_UNKNOWN):
        return Charge(Kind.POSSIBLY_CHARGED, None, f"{explanation}: no estimate.")
    return Charge(
        Kind.UNPRICED,
        None,
        f"{explanation}: left unpriced rather than trusted. Check the metrics and the price.",
    )


class PredictionCost(models.Model):
    """The cost of one ended prediction, the rule that produced it, and why."""

    prediction = models.OneToOneField(
        Prediction, primary_key=True, on_delete=models.CASCADE, related_name="cost"
    )
    # Copied from the prediction, so the costs page and roll-ups never join it.
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+", db_index=False)
    # Indexed: a deleted user's costs lose their member (SET NULL) among many rows.
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=201)
    status = models.CharField(max_length=20, choices=Status.choices)
    # The deployment's calendar day (TIME_ZONE) of the prediction's `submitted_at`: the day it
    # counts in (see `day_of`).
    day = models.DateField()

    kind = models.CharField(max_length=20, choices=Kind.choices)
    # None: unpriced, or possibly charged without an estimate. Never a stand-in zero.
    amount = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    # RESTRICT: a rule that priced something cannot be deleted (unless its team is).
    rule = models.ForeignKey(
        PriceRule, null=True, blank=True, on_delete=models.RESTRICT, related_name="costs"
    )
    explanation = models.TextField()
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # DailyCost.rebuild(): team = ? AND day >= ?; the costs page's rows of a period.
            models.Index(fields=["team", "day"], name="prediction_cost_day_idx"),
            # The costs page's unpriced predictions of a period, and what makes them so: a few
            # rows among many.
            models.Index(
                fields=["team", "day"],
                condition=Q(kind="unpriced"),
                name="prediction_cost_unpriced_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"Prediction {self.prediction_id}: {self.display}"

    @property
    def display(self) -> str:
        """The cost as a history row or a tile shows it."""
        if self.kind == Kind.FREE:
            return "free"
        if self.kind == Kind.POSSIBLY_CHARGED:
            if self.amount is None:
                return "possibly charged"
            return f"possibly {money(self.amount, self.currency)}"
        return money(self.amount, self.currency)

    @classmethod
    def compute(
        cls, prediction: Prediction, rule: PriceRule | None, typical: Typical | None = None
    ) -> "PredictionCost":
        """The (unsaved) cost of the ended `prediction` under `rule`. Whatever the provider
        reported, it is one the cost columns hold: a cost must never keep a prediction from
        ending."""
        if prediction.status in (Status.FAILED, Status.CANCELED) and not prediction.provider_id:
            # The provider never accepted the create: certain to cost nothing, priced or not.
            charge = Charge(Kind.FREE, ZERO, "Never reached the provider: nothing to pay.")
        elif rule is None:
            charge = Charge(Kind.UNPRICED, None, no_price(prediction.provider, prediction.model))
        else:
            try:
                charge = rule.charge(prediction, typical)
            except InvalidOperation:  # a product beyond a Decimal's 28 digits
                charge = None
            if charge is None or not believable(charge.amount):
                charge = beyond_belief(prediction, rule)
        return cls(
            prediction_id=prediction.pk,
            team_id=prediction.team_id,
            member_id=prediction.submitted_by_id,
            provider=prediction.provider,
            model=prediction.model,
            status=prediction.status,
            day=day_of(prediction.submitted_at),
            kind=charge.kind,
            amount=charge.amount,
            currency=rule.currency if rule else "",
            rule=rule,
            explanation=charge.explanation,
        )

    def same_as(self, other: "PredictionCost") -> bool:
        fields = [*BUCKET_FIELDS, "kind", "amount", "explanation", "rule_id"]
        return all(getattr(self, name) == getattr(other, name) for name in fields)

    def bucket(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The roll-up this cost counts in (its key), and what it adds there."""
        key = {name: getattr(self, name) for name in BUCKET_FIELDS}
        certain = self.kind in (Kind.CHARGED, Kind.FREE)
        possibly = self.kind == Kind.POSSIBLY_CHARGED
        return key, {
            "count": 1,
            "amount": self.amount if certain else ZERO,
            "possibly_charged_amount": (self.amount or ZERO) if possibly else ZERO,
            "unpriced": int(self.kind == Kind.UNPRICED),
            "possibly_charged": int(possibly),
        }

    @classmethod
    def record(cls, prediction: Prediction) -> "PredictionCost | None":
        """Compute and store the cost of `prediction` if it ended, and move the roll-ups by the
        difference; called in the transaction that ended it. Doing it again changes nothing."""
        if prediction.status in RUNNING:
            return None
        with transaction.atomic():
            lock_team_costs(prediction.team_id)
            rule = PriceRule.in_force(
                prediction.provider, prediction.model, prediction.team_id, prediction.submitted_at
            )
            cost = cls.compute(prediction, rule)
            old = cls.objects.select_for_update().filter(pk=prediction.pk).first()
            if old is not None and old.same_as(cost):
                return old
            cost.save(force_insert=old is None, force_update=old is not None)
            DailyCost.move((old, cost))
        return cost

    @classmethod
    def price_again(cls, team_id: int, predictions: QuerySet[Prediction], limit: int) -> "Repriced":
        """Price the first `limit` ended predictions of the team among `predictions` again with
        the rules stored now (and price those without a cost yet), store what changed and move
        the roll-ups by the difference: one batch, in one transaction.

        The team's costs lock is held exclusively, and taken before anything is read: no cost is
        recorded for the team meanwhile, and one recorded before with the rules of then has
        committed by the time this reads it. A batch is short, so workers wait for it briefly.
        """
        typical = functools.cache(PriceRule.typical_seconds_per_image)
        with transaction.atomic():
            lock_team_costs(team_id, exclusive=True)
            batch = list(
                predictions.filter(team_id=team_id)
                .exclude(status__in=RUNNING)
                .only(*COST_INPUTS)[:limit]
            )
            stored = cls.objects.in_bulk([prediction.pk for prediction in batch])
            rules: dict[tuple[str, str], list[PriceRule]] = {}
            changes = []
            for prediction in batch:
                key = (prediction.provider, prediction.model)
                if key not in rules:
                    rules[key] = PriceRule.candidates(*key, team_id)
                rule = PriceRule.choose(rules[key], prediction.submitted_at)
                cost = cls.compute(prediction, rule, typical)
                old = stored.get(prediction.pk)
                if old is None or not old.same_as(cost):
                    changes.append((old, cost))
            cls.objects.bulk_create([new for old, new in changes if old is None], batch_size=BATCH)
            cls.objects.bulk_update(
                [new for old, new in changes if old is not None], COST_FIELDS, batch_size=BATCH
            )
            DailyCost.move(*changes)
        # A cost that moved to another day (TIME_ZONE changed) leaves its old day too.
        days = [cost.day for change in changes for cost in change if cost is not None]
        return Repriced(
            last=batch[-1] if batch else None,
            count=len(batch),
            changed=[new.prediction_id for _old, new in changes],
            first_day=min(days, default=None),
        )

    @classmethod
    def recompute(
        cls, predictions: QuerySet[Prediction], since: datetime | None = None
    ) -> dict[int, date]:
        """Price again the ended predictions among `predictions` submitted from `since` on (and
        price those without a cost yet), team by team in id order and batch by batch, as the
        background repricing does but at once; then rebuild each team's roll-ups from the first
        day a cost moved from or to. Returns {team id: first day rebuilt}."""
        rebuilt = {}
        teams = predictions.values_list("team_id", flat=True).order_by("team_id").distinct()
        for team_id in teams:
            first_day, after, after_id = None, since, 0
            while True:
                batch = cls.price_again(
                    team_id, submitted_from(predictions, after, after_id), BATCH
                )
                Prediction.mark_changed(batch.changed, team_id)
                if batch.first_day is not None:
                    first_day = min(first_day or batch.first_day, batch.first_day)
                if batch.count < BATCH:
                    break
                after, after_id = batch.last.submitted_at, batch.last.pk
            if first_day is not None:
                # The batches moved the roll-ups already: this makes sure they equal the rows.
                DailyCost.rebuild(team_id, since=first_day)
                rebuilt[team_id] = first_day
        return rebuilt


class Repriced(NamedTuple):
    """What one batch of `PredictionCost.price_again` did."""

    # The last prediction it read, where the next batch starts after; None if none was left.
    last: Prediction | None
    count: int
    # The predictions whose cost changed.
    changed: list[int]
    # The earliest day a cost moved from or to.
    first_day: date | None


def submitted_from(
    predictions: QuerySet[Prediction], since: datetime | None, after_id: int = 0
) -> QuerySet[Prediction]:
    """`predictions` submitted from `since` on, oldest first, but for those submitted at `since`
    itself with an id up to `after_id`: where a batch ends, the next begins. A team's history
    indexes (team, [model,] submitted_at, id) serve it."""
    if since is not None:
        predictions = predictions.filter(submitted_at__gte=since).exclude(
            submitted_at=since, pk__lte=after_id
        )
    return predictions.order_by("submitted_at", "pk")


# --- Roll-ups ---------------------------------------------------------------------------------


class DailyCost(models.Model):
    """A team's costs of one day, per member, provider, model, status and currency.

    Kept by `move()` in the transaction of every cost written or deleted, with increments, so
    concurrent workers add up; `rebuild()` recomputes them from the raw rows.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+", db_index=False)
    day = models.DateField()
    # Null: the predictions of no member (a deleted user's spend stays in the team's totals).
    # No index of its own: the pages read a period's rows by (team, day), and only a user's
    # deletion looks rows up by member.
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=201)
    status = models.CharField(max_length=20, choices=Status.choices)
    # Empty for predictions without a rule: no currency is known for them.
    currency = models.CharField(max_length=3, blank=True)

    count = models.IntegerField(default=0)
    # Charged (and free) predictions: what was certainly spent.
    amount = models.DecimalField(max_digits=18, decimal_places=6, default=ZERO)
    # Possibly charged predictions: the sum of their estimates, never mixed into `amount`.
    possibly_charged_amount = models.DecimalField(max_digits=18, decimal_places=6, default=ZERO)
    unpriced = models.IntegerField(default=0)
    possibly_charged = models.IntegerField(default=0)

    class Meta:
        ordering = ["team", "day"]
        indexes = [
            # A period's totals by day, member, model or status, and a month's spend against a
            # budget: team = ? AND day BETWEEN ? AND ? (a day has few rows).
            models.Index(fields=["team", "day"], name="daily_cost_period_idx"),
        ]
        constraints = [
            # One row a bucket; also serves move()'s lookup of it.
            models.UniqueConstraint(
                fields=["team", "day", "member", "provider", "model", "status", "currency"],
                condition=Q(member__isnull=False),
                name="daily_cost_unique_member_bucket",
            ),
            models.UniqueConstraint(
                fields=["team", "day", "provider", "model", "status", "currency"],
                condition=Q(member__isnull=True),
                name="daily_cost_unique_memberless_bucket",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.model} {self.status}: {self.count}"

    @classmethod
    def totals(cls, team: "Team | int", first: date, last: date, *by: str) -> QuerySet:
        """The team's totals from `first` to `last` (inclusive), one dict per group of the
        fields `by` names ("day", "member", "model", "status", "currency", ...); without any,
        one dict for the whole period."""
        rows = cls.objects.filter(team=team_id_of(team), day__gte=first, day__lte=last)
        by = by or ("team",)
        return (
            rows.values(*by)
            .annotate(
                predictions=Sum("count"),
                spent=Sum("amount"),
                possibly_spent=Sum("possibly_charged_amount"),
                unpriced_predictions=Sum("unpriced"),
                possibly_charged_predictions=Sum("possibly_charged"),
            )
            .order_by(*by)
        )

    @classmethod
    def move(cls, *changes: tuple[PredictionCost | None, PredictionCost | None]) -> None:
        """For each (old, new) change, take `old` out of its roll-up and put `new` in its own
        (either may be None); the changes to one roll-up are added up first, so a batch moves
        each once."""
        deltas: dict[tuple, dict[str, Any]] = {}
        for old, new in changes:
            for cost, sign in ((old, -1), (new, 1)):
                if cost is None:
                    continue
                key, values = cost.bucket()
                total = deltas.setdefault(tuple(key.items()), dict.fromkeys(SUM_FIELDS, 0))
                for name, value in values.items():
                    total[name] += sign * value
        for key, values in deltas.items():
            cls.add(dict(key), values)

    @classmethod
    def add(cls, key: dict[str, Any], values: dict[str, Any]) -> None:
        """Add `values` to the bucket `key` with increments; a bucket emptied goes."""
        changes = {name: F(name) + value for name, value in values.items() if value}
        if not changes:
            return
        rows = cls.objects.filter(**key)
        if rows.update(**changes):
            if values["count"] < 0:
                rows.filter(count=0).delete()
            return
        if values["count"] <= 0:
            # Nothing to take from: the team's rows are going with it, or a rebuild is due.
            return
        try:
            with transaction.atomic():
                cls.objects.create(**key, **values)
        except IntegrityError:
            # Another worker created the bucket since: add to theirs.
            rows.update(**changes)

    @classmethod
    def rebuild(cls, team: "Team | int", since: date | None = None) -> int:
        """Recompute the team's roll-ups (from the day `since` on) from its PredictionCost rows;
        the number of rows written."""
        team_id = team_id_of(team)
        with transaction.atomic():
            lock_team_costs(team_id, exclusive=True)
            rows = cls.objects.filter(team_id=team_id)
            costs = PredictionCost.objects.filter(team_id=team_id)
            if since is not None:
                rows, costs = rows.filter(day__gte=since), costs.filter(day__gte=since)
            rows.delete()
            groups = (
                costs.order_by()
                .values(*BUCKET_FIELDS)
                .annotate(
                    n=Count("pk"),
                    certain=Sum("amount", filter=Q(kind__in=[Kind.CHARGED, Kind.FREE])),
                    possibly=Sum("amount", filter=Q(kind=Kind.POSSIBLY_CHARGED)),
                    n_unpriced=Count("pk", filter=Q(kind=Kind.UNPRICED)),
                    n_possibly=Count("pk", filter=Q(kind=Kind.POSSIBLY_CHARGED)),
                )
            )
            written = cls.objects.bulk_create(
                [
                    cls(
                        **{name: group[name] for name in BUCKET_FIELDS},
                        count=group["n"],
                        amount=group["certain"] or ZERO,
                        possibly_charged_amount=group["possibly"] or ZERO,
                        unpriced=group["n_unpriced"],
                        possibly_charged=group["n_possibly"],
                    )
                    for group in groups
                ],
                batch_size=BATCH,
            )
        return len(written)

    @classmethod
    def forget_member(cls, user_id: int) -> None:
        """Before a user is deleted: fold their rows into their teams' rows without a member,
        so what they spent stays in the totals (their costs lose their member the same way)."""
        rows = cls.objects.filter(member_id=user_id)
        # The teams' locks before the rows, as every other writer of roll-ups takes them: a
        # rebuild or a repricing batch holding a lock may be waiting for one of these rows.
        for team_id in rows.values_list("team_id", flat=True).distinct().order_by("team_id"):
            lock_team_costs(team_id)
        for row in rows.select_for_update().order_by("team_id", "pk"):
            key = {name: getattr(row, name) for name in BUCKET_FIELDS}
            cls.add({**key, "member_id": None}, {name: getattr(row, name) for name in SUM_FIELDS})
        cls.objects.filter(member_id=user_id).delete()


# --- Price changes ----------------------------------------------------------------------------

# Seconds a claimed repricing belongs to one worker; each batch renews it (a batch takes well
# under a second, or as long as a worker's cost lock makes it wait).
REPRICING_LEASE = 60
# Seconds one task prices a repricing before it hands the rest to the next sweep, so that a long
# one never keeps a worker from the predictions' polls for minutes.
REPRICING_SLICE = 10
# Most repricings one sweep claims.
REPRICING_CLAIMS = 50


class LostClaim(Exception):
    """Another worker claimed the repricing after this one's lease ran out."""


class Repricing(models.Model):
    """The team's predictions of `provider` `model` submitted from `since` on, to price again
    after a price rule changed.

    Recorded in the transaction that saves the rule, and done by a worker after the commit
    (costs.tasks), batch by batch: each batch prices again, moves the roll-ups and moves `since`
    on in one transaction, so what is done stays done. Claimed like the poller's steps (see
    dashboard/leases.py): a lost wake-up, a dead worker or a lost broker only delays it until
    the sweep or the lease's end.
    """

    # Indexed (the foreign key's own index): the team's pages ask whether one is pending.
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=201)
    # The predictions submitted from this moment on are still to be priced again, but for those
    # submitted at this very moment with an id up to `after_id`: it moves on with each batch.
    since = models.DateTimeField()
    after_id = models.BigIntegerField(default=0)
    # The predictions whose cost the last batch changed, while their pages are still to be told.
    touched = models.JSONField(default=list, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    # When it is due (the end of a worker's lease while one holds it); None once done.
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    claims = models.PositiveIntegerField(default=0)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # Repricing.claim_due(): next_attempt_at <= now among repricings not done.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(next_attempt_at__isnull=False),
                name="repricing_due_idx",
            ),
        ]

    # The claim a worker took this copy with (see take()); None outside workers.
    claim: int | None = None

    def __str__(self) -> str:
        state = f"done {self.done_at:%Y-%m-%d %H:%M}" if self.done_at else "pending"
        return f"{provider_label(self.provider)} {self.model} from {self.since}: {state}"

    @classmethod
    def request(cls, rules: list[PriceRule]) -> list["Repricing"]:
        """Record that the predictions `rules` may price from the earliest of their starts that
        has passed are to be priced again, for each team that has such a prediction (a rule of
        the deployment's may price any team's); a worker is woken once this commits."""
        now = timezone.now()
        covered: dict[tuple[str, str, int | None], datetime] = {}
        for rule in rules:
            if rule.effective_from < now:
                key = (rule.provider, rule.model, rule.team_id)
                covered[key] = min(covered.get(key, rule.effective_from), rule.effective_from)
        repricings = []
        for (provider, model, team_id), since in covered.items():
            # Running predictions count: one that ends meanwhile may be priced with the rules
            # from before this commit.
            covers = Prediction.objects.filter(
                team=OuterRef("pk"), provider=provider, model=model, submitted_at__gte=since
            )
            teams = Team.objects.filter(Exists(covers))
            if team_id is not None:
                teams = teams.filter(pk=team_id)
            repricings += [
                cls(team_id=team, provider=provider, model=model, since=since)
                for team in teams.values_list("pk", flat=True)
            ]
        cls.objects.bulk_create(repricings)
        if repricings:
            from .tasks import wake_repricer  # the tasks module imports this one

            transaction.on_commit(wake_repricer)
        return repricings

    @classmethod
    def pending_since(cls, team: "Team | int", model: str = "") -> date | None:
        """The first day whose costs (of `model`, if named) a repricing still to finish may
        change; None when none is pending."""
        pending = cls.objects.filter(team=team_id_of(team), next_attempt_at__isnull=False)
        if model:
            pending = pending.filter(model=model)
        since = pending.aggregate(since=Min("since"))["since"]
        return day_of(since) if since else None

    # --- Done by workers -------------------------------------------------------------------

    @classmethod
    def claim_due(cls, limit: int = REPRICING_CLAIMS) -> list[tuple[int, int]]:
        """Lease due repricings to one worker; (pk, claim) pairs for `take()`."""
        return leases.claim_due(cls.objects.all(), "next_attempt_at", REPRICING_LEASE, limit)

    @classmethod
    def take(cls, pk: int, claim: int) -> "Repricing | None":
        """The repricing, if `claim` is still its latest; renews the lease for this worker."""
        return leases.take(cls.objects.all(), pk, claim, "next_attempt_at", REPRICING_LEASE)

    def run(self, seconds: float = REPRICING_SLICE, size: int = BATCH) -> bool:
        """Price batches of `size` until none is left or `seconds` have passed; True if this
        worker is done with it (every batch priced, or its claim lost to another), False if it
        stopped with more to do, due again at once."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.tell_pages()
                if self.price_batch(size):
                    # Done only once the last batch's pages are told too.
                    self.tell_pages()
                    self._update(next_attempt_at=None, done_at=timezone.now())
                    return True
                if time.monotonic() >= deadline:
                    self._update(next_attempt_at=timezone.now())
                    return False
        except LostClaim:
            return True

    def remaining(self) -> QuerySet[Prediction]:
        """The predictions still to price again, oldest first."""
        predictions = Prediction.objects.filter(
            team_id=self.team_id, provider=self.provider, model=self.model
        )
        return submitted_from(predictions, self.since, self.after_id)

    def price_batch(self, size: int = BATCH) -> bool:
        """Price the next `size` predictions again, and record how far that got (and whose
        pages to tell) in the same transaction, renewing the lease; True if none is left."""
        with transaction.atomic():
            batch = PredictionCost.price_again(self.team_id, self.remaining(), size)
            fields: dict[str, Any] = {
                "touched": batch.changed,
                "next_attempt_at": timezone.now() + timedelta(seconds=REPRICING_LEASE),
            }
            if batch.last is not None:
                fields.update(since=batch.last.submitted_at, after_id=batch.last.pk)
            self._update(**fields)
        return batch.count < size

    def tell_pages(self) -> None:
        """Touch the predictions whose cost the last batch changed, in a transaction of its own:
        never while holding the team's costs lock, which a worker ending a prediction waits for
        while it holds that prediction."""
        if not self.touched:
            return
        with transaction.atomic():
            Prediction.mark_changed(self.touched, self.team_id)
            self._update(touched=[])

    def _update(self, **fields: Any) -> None:
        """Update this row (and this copy) if, for a worker's copy, its claim is still the
        latest; LostClaim, which rolls back the transaction it is raised in, if not."""
        rows = type(self).objects.filter(pk=self.pk)
        if self.claim is not None:
            rows = rows.filter(claims=self.claim)
        if not rows.update(**fields):
            raise LostClaim(f"repricing {self.pk}: claim {self.claim} is stale")
        for name, value in fields.items():
            setattr(self, name, value)


# --- Budgets ----------------------------------------------------------------------------------


def no_price_in(currency: str) -> str:
    return f"No price of the team is in {currency}: a budget in it would count nothing."


@dataclass(frozen=True)
class BudgetUsage:
    """A budget's calendar month so far, in the deployment's TIME_ZONE."""

    budget: "Budget"
    first_day: date
    # Charged this month.
    spent: Decimal
    # Possibly charged this month, and the estimates of predictions still running.
    possibly: Decimal
    # What the budget cannot count: this month's predictions of unknown cost (unpriced, or
    # running without an estimate)...
    unknown: int = 0
    # ...and what was spent, possibly charged or is running in other currencies: (currency,
    # amount) pairs.
    elsewhere: tuple[tuple[str, Decimal], ...] = ()

    @property
    def committed(self) -> Decimal:
        return self.spent + self.possibly

    @property
    def fraction(self) -> Decimal:
        if not self.budget.amount:
            return Decimal(1)
        return self.committed / self.budget.amount

    @property
    def whose(self) -> str:
        return "your own monthly limit" if self.budget.member_id else "the team's monthly budget"

    def describe(self) -> str:
        """ "$48.20 spent in December 2026, and up to $1.20 possibly charged or still running" """
        currency = self.budget.currency
        text = f"{money(self.spent, currency)} spent in {self.first_day:%B %Y}"
        if self.possibly:
            text += (
                f", and up to {money(self.possibly, currency)} possibly charged or still running"
            )
        return text

    @property
    def uncounted(self) -> str:
        """ "Not counted: 2 predictions of unknown cost, and 3.00 EUR in another currency." """
        parts = []
        if self.unknown:
            parts.append(f"{plural(self.unknown, 'prediction')} of unknown cost")
        if self.elsewhere:
            amounts = " + ".join(money(amount, currency) for currency, amount in self.elsewhere)
            where = "another currency" if len(self.elsewhere) == 1 else "other currencies"
            parts.append(f"{amounts} in {where}")
        return f"Not counted: {', and '.join(parts)}." if parts else ""


class Budget(models.Model):
    """A monthly budget: the team's (no member), or one member's own limit within the team."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="budgets")
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Empty: the whole team's budget.",
    )
    amount = models.DecimalField(
        max_digits=12, decimal_places=2, validators=[MinValueValidator(ZERO)]
    )
    currency = models.CharField(max_length=3, default="USD", validators=[currency_code])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # Budget.applying(): team = ? AND (member IS NULL OR member = ?).
            models.UniqueConstraint(
                fields=["team"], condition=Q(member__isnull=True), name="budget_unique_team"
            ),
            models.UniqueConstraint(
                fields=["team", "member"],
                condition=Q(member__isnull=False),
                name="budget_unique_member",
            ),
        ]

    def __str__(self) -> str:
        whose = f"{self.member}'s limit" if self.member_id else "budget"
        return f"{self.team} {whose}: {money(self.amount, self.currency)} a month"

    def clean(self) -> None:
        if self.team_id and self.currency not in self.currencies(self.team_id):
            raise ValidationError({"currency": no_price_in(self.currency)})

    @staticmethod
    def currencies(team: "Team | int") -> list[str]:
        """The currencies a budget of the team may be in: those its prices use (its own and the
        deployment's), or dollars while there are none. A budget counts what is spent in its
        currency: in another, it would count nothing."""
        rules = PriceRule.objects.filter(Q(team=None) | Q(team=team_id_of(team)))
        used = rules.order_by("currency").values_list("currency", flat=True).distinct()
        return list(used) or ["USD"]

    @classmethod
    def applying(cls, team: "Team | int", member: Member) -> list["Budget"]:
        """The member's own limit (first) and the team's budget, those that exist."""
        budgets = cls.objects.filter(team=team_id_of(team))
        budgets = budgets.filter(Q(member=None) | Q(member=getattr(member, "pk", member)))
        return sorted(budgets, key=lambda budget: budget.member_id is None)

    def usage(self, at: datetime | None = None) -> BudgetUsage:
        """The month so far: what it counts in the budget's currency, and what it cannot."""
        at = at or timezone.now()
        first, last = month_of(at)
        rows = DailyCost.objects.filter(team=self.team_id, day__gte=first, day__lte=last)
        running = Prediction.objects.filter(
            team=self.team_id,
            status__in=RUNNING,
            submitted_at__gte=start_of_day(first),
        )
        if self.member_id:
            rows = rows.filter(member=self.member_id)
            running = running.filter(submitted_by=self.member_id)
        by_currency = (
            rows.order_by()
            .values("currency")
            .annotate(
                spent=Sum("amount"),
                possibly=Sum("possibly_charged_amount"),
                unpriced=Sum("unpriced"),
            )
        )
        spent = possibly = ZERO
        unknown = 0
        elsewhere: dict[str, Decimal] = defaultdict(Decimal)
        for row in by_currency:
            unknown += row["unpriced"]
            if row["currency"] == self.currency:
                spent, possibly = row["spent"], row["possibly"]
            elif row["currency"]:
                elsewhere[row["currency"]] += row["spent"] + row["possibly"]
        in_flight = PriceRule.estimate_all(
            self.team_id, running.values("provider", "model", "input"), at
        )
        for estimate in in_flight:
            if estimate.amount is None:
                unknown += 1
            elif estimate.currency == self.currency:
                possibly += estimate.amount
            else:
                elsewhere[estimate.currency] += estimate.amount
        others = tuple(
            (currency, amount) for currency, amount in sorted(elsewhere.items()) if amount
        )
        return BudgetUsage(self, first, spent, possibly, unknown, others)

    @classmethod
    def usages(
        cls, team: "Team | int", member: Member, at: datetime | None = None
    ) -> list[BudgetUsage]:
        """The member's own limit and the team's budget, each with its month so far: what the
        New images form shows a member."""
        return [budget.usage(at) for budget in cls.applying(team, member)]

    @classmethod
    def refusal(
        cls,
        team: "Team | int",
        member: Member,
        estimates: list[Estimate],
        at: datetime | None = None,
    ) -> str | None:
        """Why the requests `estimates` price may not be sent, if they would take the month's
        spend (with what is possibly charged or still running) past a budget that applies."""
        for usage in cls.usages(team, member, at):
            budget = usage.budget
            known = [
                e.amount
                for e in estimates
                if e.amount is not None and e.currency == budget.currency
            ]
            unknown = [e for e in estimates if e.amount is None or e.currency != budget.currency]
            cost = sum(known, ZERO)
            over = usage.committed + cost > budget.amount
            used_up = usage.committed >= budget.amount
            # What the month spent that the budget cannot count may be anything, as a request of
            # unknown cost may: once what it counts uses the budget up, either refuses.
            if not (over or ((unknown or usage.uncounted) and used_up)):
                continue
            request = plural(len(estimates), "prediction")
            if unknown:
                cost_text = (
                    f"the cost of {request} is not known ({unknown[0].explanation.rstrip('.')})"
                )
            else:
                cost_text = f"{request} would cost about {money(cost, budget.currency)}"
            uncounted = f"{usage.uncounted} " if usage.uncounted else ""
            return (
                f"Not sent: this would go over {usage.whose} of "
                f"{money(budget.amount, budget.currency)}. {usage.describe()}; {cost_text}. "
                f"{uncounted}Owners can raise the budget."
            )
        return None
