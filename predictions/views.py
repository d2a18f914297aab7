from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import condition, require_POST

from .forms import PredictionForm
from .models import Prediction
from .tasks import wake_dispatcher

RECENT = 50


def index(request, form: PredictionForm | None = None):
    predictions = Prediction.objects.all()[:RECENT]
    template = "predictions/index.html#rows" if request.htmx else "predictions/index.html"
    return render(
        request,
        template,
        {
            "form": form or PredictionForm(),
            "predictions": predictions,
            "any_running": any(p.is_running for p in predictions),
        },
    )


@require_POST
def submit(request):
    form = PredictionForm(request.POST)
    if not form.is_valid():
        return index(request, form)
    prediction, created = Prediction.objects.get_or_create(
        request_key=form.cleaned_data["request_key"],
        defaults={
            **form.prediction_fields(),
            "submitted_by": request.user if request.user.is_authenticated else None,
        },
    )
    if created:
        transaction.on_commit(wake_dispatcher)
    return redirect(prediction)


def prediction_etag(request, pk: int) -> str | None:
    updated = Prediction.objects.filter(pk=pk).values_list("updated_at", flat=True).first()
    return f"{pk}-{updated.timestamp()}-{int(bool(request.htmx))}" if updated else None


@condition(etag_func=prediction_etag)
def detail(request, pk: int):
    prediction = get_object_or_404(Prediction, pk=pk)
    template = "predictions/detail.html#live" if request.htmx else "predictions/detail.html"
    return render(request, template, {"prediction": prediction})


@require_POST
def cancel(request, pk: int):
    prediction = get_object_or_404(Prediction, pk=pk)
    if prediction.request_cancel():
        transaction.on_commit(wake_dispatcher)
    return redirect(prediction)
