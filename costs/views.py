from collections import defaultdict

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_POST

from accounts.models import AuditEvent, Role
from accounts.teams import team_object_or_404, team_required
from dashboard.formats import moment_text
from predictions.client import provider_label
from predictions.filters import team_members

from .charts import day_columns
from .forms import BudgetForm, CostFilterForm, PriceChangeForm, PriceRuleForm
from .models import Budget, DailyCost, PriceRule, Repricing, month_of
from .reports import Sums, build_report, csv_lines, estimate_request, price_list


@team_required()
def index(request):
    """The team's costs for a period: totals by day, member, model and status, from the
    roll-ups; each figure links to the history behind it."""
    form = CostFilterForm(request.GET, request=request)
    if not form.is_valid():
        return render(request, "costs/index.html", {"form": form}, status=400)
    members = set(form.fields["member"].queryset.values_list("pk", flat=True))
    team_id = request.membership.team_id
    report = build_report(
        team_id,
        form.chosen_period,
        form.filters(),
        form.history_params(),
        members,
    )
    # A price change still being applied may move this period's figures.
    repricing_since = Repricing.pending_since(team_id, form.filters().get("model", ""))
    if repricing_since and repricing_since > report.period.last:
        repricing_since = None
    context = {
        "form": form,
        "report": report,
        "chart": day_columns(report.days, report.currency),
        "time_zone": settings.TIME_ZONE,
        "repricing_since": repricing_since,
    }
    return render(request, "costs/index.html", context)


@team_required()
@cache_control(private=True, no_store=True)
def export(request):
    """The predictions behind the costs page's figures, as CSV, streamed as it is read."""
    form = CostFilterForm(request.GET, request=request)
    if not form.is_valid():
        return render(request, "costs/index.html", {"form": form}, status=400)
    period = form.chosen_period
    lines = csv_lines(request.membership.team_id, period, form.filters())
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    filename = f"darkroom-costs-{period.first}-to-{period.last}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@team_required(Role.MEMBER)
def estimate(request):
    """The New images form's estimate for the inputs it holds now (its `body` partial)."""
    team = request.membership.team
    context = {"estimate": estimate_request(request.GET.dict(), team, request.user)}
    return render(request, "costs/_estimate.html#body", context)


# --- Prices -----------------------------------------------------------------------------------


@team_required()
def prices(request):
    return prices_page(request)


def prices_page(
    request,
    form: PriceRuleForm | None = None,
    status: int = 200,
    change: PriceChangeForm | None = None,
):
    """The price rules the team sees. Owners also get the form to add one, and on each of the
    team's own rules, its change form and (while it has priced nothing) a delete button; `form`
    and `change` are forms sent back with their errors."""
    membership = request.membership
    models = price_list(membership.team_id, timezone.now())
    if membership.is_owner:
        if form is None:
            form = PriceRuleForm(team=membership.team)
        for rule in (rule for entry in models for rule in entry.rules if rule.team_id):
            sent_back = change is not None and change.rule.pk == rule.pk
            rule.change_form = change if sent_back else PriceChangeForm(rule=rule)
    context = {
        "models": models,
        "form": form,
        "editable": membership.is_owner,
        "time_zone": settings.TIME_ZONE,
        "repricing_since": Repricing.pending_since(membership.team_id),
    }
    return render(request, "costs/prices.html", context, status=status)


@team_required(Role.OWNER)
@require_POST
def add_price(request):
    """A new team rule: prices change by new rules, so what was spent before stays as it was.
    One dated in the past has the costs it covers priced again in the background."""
    team = request.membership.team
    form = PriceRuleForm(request.POST, team=team)
    if not form.is_valid():
        return prices_page(request, form, status=400)
    rule = form.save()
    AuditEvent.record(
        team,
        request.user,
        "price_rule_added",
        f"{request.user} priced {rule} from {moment_text(rule.effective_from)}",
    )
    messages.success(request, f"Added the price {rule}.")
    return redirect("costs:prices")


@team_required(Role.OWNER)
@require_POST
def change_price(request, pk: int):
    """A team rule's new price from a day on: a new rule from that day, so the costs of the
    predictions submitted before it stay as they were (or, from the rule's first day, the rule
    corrected). Those it covers are priced again in the background. The deployment's rules are
    not the team's to change: a team adds a price of its own instead."""
    rule = team_object_or_404(request, PriceRule, pk=pk)
    before = str(rule)
    form = PriceChangeForm(request.POST, rule=rule)
    changed = None
    if form.is_valid():
        try:
            changed = form.save()
        except ValidationError as refusal:  # another owner's change or deletion came first
            if refusal.code == "deleted":  # no form of its own to say so on any more
                messages.error(request, refusal.message)
                return redirect("costs:prices")
            form.add_error(None, refusal)
    if changed is None:
        return prices_page(request, status=400, change=form)
    start = moment_text(changed.effective_from)
    AuditEvent.record(
        request.membership.team,
        request.user,
        "price_rule_changed",
        f"{request.user} changed {before} to {changed.price_text} from {start}",
    )
    messages.success(
        request,
        f"Changed the price of {provider_label(changed.provider)} {changed.model} to "
        f"{changed.price_text} from {start}.",
    )
    return redirect("costs:prices")


@team_required(Role.OWNER)
@require_POST
def delete_price(request, pk: int):
    """Deletes a team rule caught as a mistake before it priced anything; one that priced
    predictions stays, as their costs say what they were priced with."""
    rule = team_object_or_404(request, PriceRule, pk=pk)
    deleted = rule.delete_unless_used()
    if deleted is None:  # another owner's delete came first
        messages.info(request, f"The price {rule} was already deleted.")
        return redirect("costs:prices")
    if not deleted:
        messages.error(
            request,
            f"The price {rule} has priced predictions, so it stays: "
            "change its price from a day instead.",
        )
        return redirect("costs:prices")
    AuditEvent.record(
        request.membership.team,
        request.user,
        "price_rule_deleted",
        f"{request.user} deleted the price {rule} from {moment_text(rule.effective_from)}",
    )
    messages.success(request, f"Deleted the price {rule}.")
    return redirect("costs:prices")


# --- Budgets ----------------------------------------------------------------------------------


@team_required()
def budgets(request):
    return budgets_page(request)


def budgets_page(request, form: BudgetForm | None = None, status: int = 200):
    """The team's budget for everyone; owners see every member's limit and spend and set them,
    a member sees their own."""
    membership = request.membership
    team = membership.team
    first, last = month_of(timezone.now())
    budgets = {budget.member_id: budget for budget in Budget.objects.filter(team=team)}
    team_budget = budgets.pop(None, None)
    if membership.is_owner:
        people = list(team_members(request))
    elif membership.can_submit:
        people = [request.user]
    else:
        people = []
    spent: dict[int, Sums] = defaultdict(Sums)
    if people:
        rows = DailyCost.totals(team, first, last, "member", "currency")
        for row in rows.filter(member__in=people):
            spent[row["member"]].add(row)
    limits = [
        {
            "member": person,
            "usage": budgets[person.pk].usage() if person.pk in budgets else None,
            "spent": spent[person.pk],
        }
        for person in people
    ]
    context = {
        "month": first,
        "time_zone": settings.TIME_ZONE,
        "team_usage": team_budget.usage() if team_budget else None,
        "limits": limits,
        "form": form,
        "team_form": None,
        "limit_form": None,
    }
    if membership.is_owner:
        initial = None
        if team_budget:
            initial = {"amount": team_budget.amount, "currency": team_budget.currency}
        context["team_form"] = BudgetForm(initial=initial, request=request, for_member=False)
        context["limit_form"] = BudgetForm(request=request, for_member=True)
        if form is not None:
            context["limit_form" if form.prefix == "limit" else "team_form"] = form
    return render(request, "costs/budgets.html", context, status=status)


@team_required(Role.OWNER)
@require_POST
def save_budget(request):
    """Sets (or removes) the team's monthly budget, or one member's own limit."""
    for_member = "limit-member" in request.POST
    form = BudgetForm(request.POST, request=request, for_member=for_member)
    if not form.is_valid():
        return budgets_page(request, form, status=400)
    team = request.membership.team
    _budget, change = form.save(team)
    AuditEvent.record(team, request.user, "budget_set", f"{request.user}: {change}")
    messages.success(request, change)
    return redirect("costs:budgets")
