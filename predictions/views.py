from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import condition, require_POST

from accounts import ratelimit
from accounts.models import Role
from accounts.teams import for_team, team_object_or_404, team_required

from .forms import PredictionForm
from .models import Prediction
from .tasks import wake_dispatcher

RECENT = 50


@team_required()
def index(request, form: PredictionForm | None = None, status: int = 200):
    predictions = for_team(request, Prediction.objects.all())[:RECENT]
    template = "predictions/index.html#rows" if request.htmx else "predictions/index.html"
    context = {
        "form": form or PredictionForm(team=request.membership.team),
        "predictions": predictions,
        "any_running": any(p.is_running for p in predictions),
    }
    return render(request, template, context, status=status)


@team_required(Role.MEMBER)
@require_POST
def submit(request):
    team = request.membership.team
    form = PredictionForm(request.POST, team=team)
    if not form.is_valid():
        return index(request, form)
    key = form.cleaned_data["request_key"]
    replayed = for_team(request, Prediction.objects.filter(request_key=key)).first()
    if replayed:
        return redirect(replayed)
    for scope, subject, limit in (
        ("submit-member", request.user.pk, settings.SUBMIT_RATE_LIMIT_MEMBER),
        ("submit-team", team.pk, settings.SUBMIT_RATE_LIMIT_TEAM),
    ):
        decision = ratelimit.hit(scope, str(subject), limit)
        if not decision.allowed:
            form.add_error(
                None,
                f"Too many submissions: at most {limit[0]} every {limit[1]} seconds "
                f"{'per member' if scope == 'submit-member' else 'for the team'}. "
                f"Try again in {decision.retry_after:.0f} s.",
            )
            return index(request, form, status=429)
    try:
        with transaction.atomic():
            prediction = Prediction.objects.create(
                request_key=key, team=team, submitted_by=request.user, **form.prediction_fields()
            )
    except IntegrityError:
        form.add_error(None, "This form was already used. Reload the page and submit again.")
        return index(request, form, status=409)
    transaction.on_commit(wake_dispatcher)
    return redirect(prediction)


def prediction_etag(request, pk: int) -> str | None:
    updated = for_team(request, Prediction.objects.filter(pk=pk)).values_list(
        "updated_at", flat=True
    )
    updated = updated.first()
    return f"{pk}-{updated.timestamp()}-{int(bool(request.htmx))}" if updated else None


@team_required()
@condition(etag_func=prediction_etag)
def detail(request, pk: int):
    prediction = team_object_or_404(request, Prediction, pk=pk)
    template = "predictions/detail.html#live" if request.htmx else "predictions/detail.html"
    return render(request, template, {"prediction": prediction})


@team_required(Role.MEMBER)
@require_POST
def cancel(request, pk: int):
    prediction = team_object_or_404(request, Prediction, pk=pk)
    if prediction.request_cancel():
        transaction.on_commit(wake_dispatcher)
    return redirect(prediction)


# Stubs, each being written by one person; replace the body, keep the decorators' intent.
@team_required(Role.MEMBER)
def new(request):
    raise Http404("not yet")


@team_required()
def gallery(request):
    raise Http404("not yet")


@team_required()
def logs(request, pk: int):
    raise Http404("not yet")


@team_required(Role.MEMBER)
@require_POST
def rerun(request, pk: int):
    raise Http404("not yet")
