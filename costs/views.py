from collections import defaultdict

from django.conf import settings
from django.contrib import messages
from django.http import StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_POST

from accounts.models import AuditEvent, Role
from accounts.teams import team_required
from predictions.filters import team_members

from .charts import day_columns
from .forms import BudgetForm, CostFilterForm, PriceRuleForm
from .models import Budget, DailyCost, Repricing, month_of
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
    form = PriceRuleForm(team=request.membership.team) if request.membership.is_owner else None
    return prices_page(request, form)


def prices_page(request, form: PriceRuleForm | None, status: int = 200):
    team_id = request.membership.team_id
    context = {
        "models": price_list(team_id, timezone.now()),
        "form": form,
        "time_zone": settings.TIME_ZONE,
        "repricing_since": Repricing.pending_since(team_id),
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
    start = timezone.localtime(rule.effective_from, timezone.get_default_timezone())
    AuditEvent.record(
        team,
        request.user,
        "price_rule_added",
        f"{request.user} priced {rule} from {start:%Y-%m-%d %H:%M} {settings.TIME_ZONE}",
    )
    messages.success(request, f"Added the price {rule}.")
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
