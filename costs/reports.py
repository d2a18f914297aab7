"""What the pages say about money: a prediction's cost as a row shows it, the costs page's
figures (read from the daily roll-ups, never from the raw predictions), the CSV of the predictions
behind them, the New images form's estimate and the budget banner.

Amounts are kept per currency and never added across currencies. A figure with nothing charged
in any currency says "—", never $0, unless what it counts was certainly free.
"""

import csv
import itertools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform
from django.urls import reverse
from django.utils import timezone

from accounts.models import Team
from dashboard.formats import day_text
from predictions.forms import PredictionForm
from predictions.models import RUNNING, Prediction, Status

from .models import (
    BATCH,
    WARNING_AT,
    ZERO,
    Budget,
    BudgetUsage,
    DailyCost,
    Estimate,
    Kind,
    PredictionCost,
    PriceRule,
    money,
    month_of,
    plural,
)

# --- One prediction's cost -------------------------------------------------------------------


@dataclass(frozen=True)
class ShownCost:
    """A prediction's cost as a page shows it: `text` in the row, `note` (why) on hover."""

    text: str
    note: str
    kind: str


def cost_of(prediction: Prediction) -> PredictionCost | None:
    try:
        return prediction.cost
    except PredictionCost.DoesNotExist:
        return None


def cost_is_loaded(prediction: Prediction) -> bool:
    """Whether the prediction's cost (or that it has none) was fetched with it: a tile shows a
    cost only then, so a page of tiles that did not fetch costs never queries one per tile."""
    return Prediction.cost.is_cached(prediction)


def shown_cost(prediction: Prediction) -> ShownCost:
    if prediction.status in RUNNING:
        return ShownCost("—", "Priced when it ends.", "pending")
    cost = cost_of(prediction)
    if cost is None:
        return ShownCost("—", "No cost recorded for it yet.", "pending")
    if cost.kind == Kind.POSSIBLY_CHARGED:
        text = "possibly charged"
        if cost.amount is not None:
            text += f" ~{money(cost.amount, cost.currency)}"
        return ShownCost(text, cost.explanation, cost.kind)
    return ShownCost(cost.display, cost.explanation, cost.kind)


# --- Periods and sums --------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """Whole UTC days from `first` to `last`, both included: the days roll-ups are kept by."""

    first: date
    last: date

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def __str__(self) -> str:
        """ "3 – 31 Jan 2026", "2 Nov – 1 Dec 2026", "1 Jan 2026" """
        first, last = self.first, self.last
        if first == last:
            return day_text(first)
        if (first.year, first.month) == (last.year, last.month):
            return f"{first.day} – {day_text(last)}"
        if first.year == last.year:
            return f"{first.day} {first:%b} – {day_text(last)}"
        return f"{day_text(first)} – {day_text(last)}"


def preset_period(name: str, today: date) -> Period:
    """One of the costs page's presets, ending today (or last month)."""
    if name == "last_7":
        return Period(today - timedelta(days=6), today)
    if name == "last_30":
        return Period(today - timedelta(days=29), today)
    if name == "last_month":
        last = today.replace(day=1) - timedelta(days=1)
        return Period(last.replace(day=1), last)
    return Period(today.replace(day=1), today)


@dataclass
class Sums:
    """What some roll-up rows add up to. Money is per currency: "" is the currency of
    predictions no rule prices, which never add money."""

    predictions: int = 0
    spent: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    possibly: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    unpriced: int = 0
    possibly_charged: int = 0

    def add(self, row: dict[str, Any]) -> None:
        """Add one row of `DailyCost.totals(..., "currency")`."""
        self.predictions += row["predictions"]
        self.spent[row["currency"]] += row["spent"] or ZERO
        self.possibly[row["currency"]] += row["possibly_spent"] or ZERO
        self.unpriced += row["unpriced_predictions"]
        self.possibly_charged += row["possibly_charged_predictions"]

    @property
    def certain(self) -> int:
        """How many were charged or were certainly free: everything not in doubt."""
        return self.predictions - self.unpriced - self.possibly_charged

    @property
    def spent_text(self) -> str:
        """ "$1.20", "$1.20 + 3.00 EUR"; "$0.00" only where priced predictions cost nothing;
        "—" where nothing was priced."""
        text = amounts_text(self.spent)
        if text:
            return text
        currencies = sorted(c for c in self.spent if c)
        return money(ZERO, currencies[0]) if currencies and self.certain else "—"

    @property
    def possibly_text(self) -> str:
        if not self.possibly_charged:
            return "—"
        return f"~{amounts_text(self.possibly)}" if amounts_text(self.possibly) else "unknown"

    def main_amount(self, currency: str) -> Decimal:
        return self.spent.get(currency, ZERO)


def amounts_text(amounts: dict[str, Decimal]) -> str:
    return " + ".join(money(amount, c) for c, amount in sorted(amounts.items()) if c and amount)


# --- The costs page ---------------------------------------------------------------------------


@dataclass
class Figure:
    """One line of a breakdown: its label, its sums, and the history behind it."""

    key: str
    label: str
    sums: Sums
    history: str | None
    share: float = 0.0  # of the breakdown's largest, 0 to 100, for its bar

    @property
    def bar_width(self) -> str:
        """The bar's length out of 100, as an SVG attribute."""
        return f"{self.share:.1f}"


@dataclass
class Reason:
    """What makes some of the period's predictions unpriced."""

    provider: str
    model: str
    explanation: str
    count: int
    history: str


@dataclass
class Report:
    period: Period
    currency: str
    total: Sums
    total_history: str
    days: list[Figure]
    members: list[Figure]
    models: list[Figure]
    statuses: list[Figure]
    reasons: list[Reason]


def history_url(params: dict[str, str], path: str = "") -> str:
    """The history filtered by `params` (its form's names: model, member, status, since,
    until). Roll-up days and the history's dates are both days in TIME_ZONE, so a day's figure
    and its history hold the same predictions. `path`: the history's,
    if already reversed (a year's page links 366 days to it)."""
    query = urlencode([(name, value) for name, value in params.items() if value])
    return f"{path or reverse('predictions:index')}?{query}"


@dataclass
class PeriodSums:
    """A period's sums: in all, by day, and by member (their id), model and status."""

    total: Sums = field(default_factory=Sums)
    days: dict[date, Sums] = field(default_factory=lambda: defaultdict(Sums))
    members: dict[int | None, Sums] = field(default_factory=lambda: defaultdict(Sums))
    models: dict[str, Sums] = field(default_factory=lambda: defaultdict(Sums))
    statuses: dict[str, Sums] = field(default_factory=lambda: defaultdict(Sums))

    @classmethod
    def read(cls, team_id: int, period: Period, filters: dict[str, Any]) -> "PeriodSums":
        """The team's roll-ups from `period`, narrowed by `filters`, in two GROUP BYs: by day,
        and by member, model and status together.

        A year of a busy team is some 35,000 roll-up rows (a row a day for each member, model
        and status used), and summing them is what takes the time: a GROUP BY for each
        breakdown and one for the total took 55 ms at 1,000,000 predictions. The second GROUP
        BY's few rows (one for each member, model, status and currency used) add up in Python
        to the total and the member, model and status breakdowns: 25 ms in all.
        """
        sums = cls()

        def totals(*by: str) -> QuerySet:
            rows = DailyCost.totals(team_id, period.first, period.last, *by, "currency")
            return rows.filter(**filters)

        for row in totals("day"):
            sums.days[row["day"]].add(row)
        for row in totals("member", "model", "status"):
            sums.total.add(row)
            sums.members[row["member"]].add(row)
            sums.models[row["model"]].add(row)
            sums.statuses[row["status"]].add(row)
        return sums


def build_report(
    team_id: int,
    period: Period,
    filters: dict[str, Any],
    history_params: dict[str, str],
    members: set[int],
) -> Report:
    """The costs page for `period`: totals by day, member, model and status, read from the
    roll-ups and narrowed by `filters` (DailyCost field lookups); `history_params` are the same
    filters as the history's query, `members` the ids of the team's current members (the
    history has no filter for anyone else)."""
    base = {"since": period.first.isoformat(), "until": period.last.isoformat(), **history_params}
    path = reverse("predictions:index")
    sums = PeriodSums.read(team_id, period, filters)
    usernames = dict(
        get_user_model()
        .objects.filter(pk__in=[pk for pk in sums.members if pk is not None])
        .values_list("pk", "username")
    )

    def day_figure(day: date) -> Figure:
        history = history_url({**base, "since": day.isoformat(), "until": day.isoformat()}, path)
        return Figure(str(day), f"{day:%a} {day.day} {day:%b}", sums.days.get(day, Sums()), history)

    def member_figure(pk: int | None, sums: Sums) -> Figure:
        username = usernames.get(pk)
        # Only a current member can be picked in the history's filter.
        history = history_url({**base, "member": username}, path) if pk in members else None
        return Figure(str(pk), username or "Deleted members", sums, history)

    currency = main_currency(sums.total)
    status_labels = dict(Status.choices)
    report = Report(
        period=period,
        currency=currency,
        total=sums.total,
        total_history=history_url(base, path),
        days=[day_figure(day) for day in period.days],
        members=[member_figure(pk, member_sums) for pk, member_sums in sums.members.items()],
        models=[
            Figure(model, model, model_sums, history_url({**base, "model": model}, path))
            for model, model_sums in sums.models.items()
        ],
        statuses=[
            Figure(
                status,
                status_labels[status],
                status_sums,
                history_url({**base, "status": status}, path),
            )
            for status, status_sums in sums.statuses.items()
        ],
        reasons=unpriced_reasons(team_id, period, filters, base),
    )
    for figures in (report.members, report.models, report.statuses):
        figures.sort(key=lambda f: (-f.sums.main_amount(currency), -f.sums.predictions, f.label))
        scale(figures, currency)
    return report


def main_currency(total: Sums) -> str:
    """The currency the charts draw: the period's largest, else dollars."""
    known = {c: amount for c, amount in total.spent.items() if c}
    return max(known, key=known.get) if known else "USD"


def scale(figures: list[Figure], currency: str) -> None:
    """Each figure's share of the largest, for its bar: by what was spent in `currency` where
    anything was, else by the number of predictions."""
    largest = max((f.sums.main_amount(currency) for f in figures), default=ZERO)
    most = max((f.sums.predictions for f in figures), default=0)
    for figure in figures:
        if largest:
            figure.share = float(figure.sums.main_amount(currency) * 100 / largest)
        elif most:
            figure.share = figure.sums.predictions * 100 / most


def unpriced_reasons(
    team_id: int, period: Period, filters: dict[str, Any], base: dict[str, str]
) -> list[Reason]:
    """The period's unpriced predictions grouped by model and why: a few rows among many,
    read through their partial index."""
    rows = (
        PredictionCost.objects.filter(
            team=team_id,
            day__gte=period.first,
            day__lte=period.last,
            kind=Kind.UNPRICED,
            **filters,
        )
        .values("provider", "model", "explanation")
        .annotate(count=Count("pk"))
        .order_by("-count", "model", "explanation")
    )
    return [
        Reason(
            row["provider"],
            row["model"],
            row["explanation"],
            row["count"],
            history_url({**base, "model": row["model"]}),
        )
        for row in rows[:50]
    ]


# --- Prices ----------------------------------------------------------------------------------


@dataclass
class PricedModel:
    """A model's rules as the team sees them: its own first, then the deployment's, each newest
    first; `in_force` is the one that prices a prediction submitted now."""

    provider: str
    model: str
    rules: list[PriceRule]
    in_force: PriceRule | None


def price_list(team_id: int, at) -> list[PricedModel]:
    """The team's and the deployment's rules by model; each of the team's says whether it
    `priced` any prediction (such a rule cannot be deleted)."""
    rules = list(
        PriceRule.objects.filter(Q(team=None) | Q(team=team_id)).order_by(
            "provider", "model", F("team").asc(nulls_last=True), "-effective_from"
        )
    )
    for rule in rules:
        # One probe a team rule, its id written out: PostgreSQL then knows how many costs it
        # priced (none: the index answers at once; many: the first row read is one). As a
        # correlated EXISTS it planned for the average rule and read every cost of a rule that
        # priced none: 450 ms at 1,000,000 predictions.
        rule.priced = rule.team_id is None or PredictionCost.objects.filter(rule=rule).exists()
    return [
        PricedModel(provider, model, group, PriceRule.choose(group, at))
        for (provider, model), group in (
            (key, list(group))
            for key, group in itertools.groupby(rules, key=lambda r: (r.provider, r.model))
        )
    ]


# --- The CSV export ---------------------------------------------------------------------------

CSV_HEADER = [
    "submitted_at",
    "member",
    "provider",
    "model",
    "status",
    "kind",
    "amount",
    "currency",
    "prediction",
    "prompt",
]
# A spreadsheet runs a cell that starts with one of these as a formula.
# Spreadsheets also read past leading blanks, and take the full-width forms of these signs.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "＝", "＋", "－", "＠")


class Echo:
    """A file that hands back what is written: csv.writer's rows, one at a time, to stream."""

    def write(self, value: str) -> str:
        return value


def neutralised(cell: Any) -> Any:
    """Text a spreadsheet would run as a formula, made plain text with a leading quote."""
    if isinstance(cell, str) and (
        cell.startswith(FORMULA_STARTS) or cell.lstrip().startswith(FORMULA_STARTS)
    ):
        return f"'{cell}"
    return cell


def csv_lines(team_id: int, period: Period, filters: dict[str, Any]) -> Iterator[str]:
    """The predictions behind the costs page's figures, one CSV line each, oldest first,
    read in batches with a server-side cursor where the database has one."""
    rows = (
        PredictionCost.objects.filter(
            team=team_id, day__gte=period.first, day__lte=period.last, **filters
        )
        .order_by("day", "prediction_id")
        .values_list(
            "prediction__submitted_at",
            "member__username",
            "provider",
            "model",
            "status",
            "kind",
            "amount",
            "currency",
            "prediction_id",
            KeyTextTransform("prompt", "prediction__input"),
        )
    )
    writer = csv.writer(Echo())
    yield writer.writerow(CSV_HEADER)
    for submitted_at, member, *fields, amount, currency, pk, prompt in rows.iterator(BATCH):
        cells = [
            submitted_at.isoformat(),
            member or "",
            *fields,
            "" if amount is None else f"{amount.normalize():f}",
            currency,
            pk,
            prompt or "",
        ]
        yield writer.writerow([neutralised(cell) for cell in cells])


# --- Before Generate: the estimate and the member's own limit -----------------------------------


@dataclass
class FormEstimate:
    """What the New images form would cost if sent now, and where that leaves the member."""

    estimates: list[Estimate]
    # The member's own limit this month, if the team set one.
    own_limit: BudgetUsage | None
    # Why Generate would be refused, if it would.
    refusal: str | None

    @property
    def warning(self) -> str:
        """The refusal Generate would meet, said before it is pressed."""
        return f"Generate would be refused: {self.refusal.removeprefix('Not sent: ')}"

    @property
    def text(self) -> str:
        """ "$0.006", or "unknown": never $0 for a price nobody knows."""
        amounts: dict[str, Decimal] = defaultdict(Decimal)
        for estimate in self.estimates:
            if estimate.amount is None:
                return "unknown"
            amounts[estimate.currency] += estimate.amount
        return amounts_text(amounts) or money(ZERO, self.estimates[0].currency)

    @property
    def explanation(self) -> str:
        unknown = next((e for e in self.estimates if e.amount is None), None)
        if unknown is not None:
            return unknown.explanation
        first = self.estimates[0].explanation
        if len(self.estimates) == 1:
            return first
        return f"{plural(len(self.estimates), 'prediction')}, each {first}"


def form_data(form: PredictionForm) -> dict[str, Any]:
    """What a New images form holds: what was sent, or what it starts with."""
    if form.is_bound:
        return form.data.dict() if hasattr(form.data, "dict") else dict(form.data)
    return {field.html_name: field.value() for field in form if field.value() not in (None, "")}


def estimate_request(data: dict[str, Any], team: Team, member) -> FormEstimate | None:
    """What the New images form holding `data` would cost, read by the form's own rules, with
    the member's own limit; None while the inputs make no request (Generate says why)."""
    # The prompt changes no price: the estimate shows before one is typed.
    data = {**data, "prompt": data.get("prompt") or "an estimate", "request_key": "0" * 32}
    form = PredictionForm(data, team=team)
    if not form.is_valid():
        return None
    estimates = PriceRule.estimate_all(team, form.prediction_fields())
    usages = Budget.usages(team, member)
    own = next((usage for usage in usages if usage.budget.member_id), None)
    return FormEstimate(estimates, own, Budget.refusal(team, member, estimates))


# --- The banner --------------------------------------------------------------------------------


def budget_warning(team_id: int, member_id: int, at=None) -> str | None:
    """The banner once the member's own limit or the team's budget is 80% used this month. It
    counts what ended, charged and possibly charged; the refusal at Generate also counts what
    is still running.

    Every full page asks, so a team without a budget costs one short query. Only one with
    budgets sums the month's roll-ups, by member and currency, in a second query: as one query
    with a subquery per sum, it took 2 to 3 ms of the ORM's time to write on every page, budget
    or not."""
    budgets = [
        budget
        for budget in Budget.objects.filter(team=team_id)
        if budget.member_id in (None, member_id)
    ]
    if not budgets:
        return None
    first, last = month_of(at or timezone.now())
    month = DailyCost.objects.filter(
        team=team_id,
        day__gte=first,
        day__lte=last,
        currency__in={budget.currency for budget in budgets},
    )
    sums = list(
        month.values("member", "currency")
        .annotate(spent=Sum("amount"), possibly=Sum("possibly_charged_amount"))
        .order_by()
    )
    worst = None
    for budget in budgets:
        # The team's budget (no member) counts every row, a member's limit only theirs.
        counted = [
            row
            for row in sums
            if row["currency"] == budget.currency and budget.member_id in (None, row["member"])
        ]
        spent = sum((row["spent"] or ZERO for row in counted), ZERO)
        possibly = sum((row["possibly"] or ZERO for row in counted), ZERO)
        usage = BudgetUsage(budget, first, spent, possibly)
        if usage.fraction >= WARNING_AT and (worst is None or usage.fraction > worst.fraction):
            worst = usage
    if worst is None:
        return None
    budget = worst.budget
    spent = f"{money(worst.spent, budget.currency)} spent in {first:%B %Y}"
    if worst.possibly:
        spent += f" and up to {money(worst.possibly, budget.currency)} possibly charged"
    return (
        f"{int(worst.fraction * 100)}% of {worst.whose} of {money(budget.amount, budget.currency)}"
        f" is used: {spent}. At 100% new images are refused."
    )
