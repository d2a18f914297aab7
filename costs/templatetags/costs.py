"""Costs on the pages of other apps: a prediction's cost in a row, a tile and the lightbox, the
New images form's estimate, and the budget banner of every full page."""

from collections.abc import Sequence
from decimal import Decimal

from django import template
from django.db.models import prefetch_related_objects
from django.utils.html import format_html

from costs.models import BudgetUsage, money
from costs.reports import (
    ShownCost,
    budget_warning,
    cost_is_loaded,
    estimate_request,
    form_data,
    shown_cost,
)
from predictions.client import provider_label
from predictions.models import Prediction

register = template.Library()


@register.simple_tag
def priced(predictions: Sequence[Prediction]) -> Sequence[Prediction]:
    """`predictions` with their costs, fetched in one query for them all: a list page's chunk
    costs one query more, whatever its length."""
    prefetch_related_objects(predictions, "cost")
    return predictions


@register.simple_tag
def cost(prediction: Prediction, note: bool = False) -> str:
    """The prediction's cost as a row shows it, its reason on hover (and after it, `note`). A
    string rather than an included template: every row of the history shows it twice."""
    shown = shown_cost(prediction)
    html = format_html(
        '<span class="cost cost-{}" title="{}">{}</span>', shown.kind, shown.note, shown.text
    )
    if note:
        html += format_html(' <span class="help cost-note">{}</span>', shown.note)
    return html


@register.filter
def loaded_cost(prediction: Prediction) -> ShownCost | None:
    """The cost, if the page fetched it with the prediction (see `priced`); else None, so a
    page of tiles that did not never makes a query per tile."""
    return shown_cost(prediction) if cost_is_loaded(prediction) else None


@register.inclusion_tag("costs/_estimate.html", takes_context=True)
def cost_estimate(context, form) -> dict:
    """The New images form's estimated cost, and the member's spend against their own limit."""
    request = context["request"]
    return {
        "request": request,
        "estimate": estimate_request(form_data(form), form.team, request.user),
    }


@register.simple_tag(takes_context=True)
def budget_banner(context) -> str | None:
    """The 80% warning for the request's team and member, or None; base.html asks once, on
    full pages only."""
    request = context.get("request")
    membership = getattr(request, "membership", None)
    if membership is None:
        return None
    return budget_warning(membership.team_id, request.user.pk)


@register.filter(name="money")
def money_filter(amount: Decimal | None, currency: str) -> str:
    return money(amount, currency)


@register.filter
def usage_percent(usage: BudgetUsage) -> int:
    return int(usage.fraction * 100)


@register.filter
def usage_fraction(usage: BudgetUsage) -> str:
    """For a <meter> from 0 to 1: a dot whatever the locale."""
    return f"{min(usage.fraction, Decimal(1)):.3f}"


@register.filter(name="provider_label")
def provider_label_filter(name: str) -> str:
    return provider_label(name)
