import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.functions import Length
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import condition, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import reswap, retarget

from accounts.models import Role
from accounts.teams import for_team, team_object_or_404, team_required
from api.shapes import api_root

from .catalog import CATALOG
from .client import ProviderNotConfigured
from .filters import HistoryFilterForm
from .forms import (
    CompareForm,
    LogCursorForm,
    NewImagesQuery,
    PredictionForm,
    RerunForm,
    TrackForm,
)
from .logs import TAIL, read_log
from .models import RUNNING, Prediction
from .studio import StudioResults
from .submissions import Refused, save_predictions, submitted_with
from .tasks import wake_dispatcher


def filter_form(request, form_class: type[HistoryFilterForm]) -> HistoryFilterForm:
    """The list page's filter form, built and validated once per request: the ETag check and
    the view share it."""
    if not hasattr(request, "filter_form"):
        request.filter_form = form_class(request.GET, request=request)
    return request.filter_form


@team_required()
@cache_control(no_cache=True)
@vary_on_headers("HX-Request")
@condition(etag_func=lambda request: filter_form(request, HistoryFilterForm).version())
def index(request):
    form = filter_form(request, HistoryFilterForm)
    return render_chunk(request, form, "predictions/history.html", "rows")


@team_required(Role.MEMBER)
@require_POST
def submit(request):
    team = request.membership.team
    form = PredictionForm(request.POST, team=team)
    if not form.is_valid():
        return new_images_page(request, form, status=400 if request.htmx else 200)
    key = form.cleaned_data["request_key"]
    variations = form.prediction_fields()
    if sent := submitted_with(team, key):
        if [(p.provider, p.model, p.input) for p in sent] == [
            (v["provider"], v["model"], v["input"]) for v in variations
        ]:
            return submitted(request, sent)
        # Not a double click: the form was sent before with other inputs (the back button).
        form = PredictionForm({**request.POST.dict(), "request_key": uuid.uuid4()}, team=team)
        form.is_valid()
        form.add_error(
            None,
            "This form was already sent with other inputs, so these were not sent yet. "
            "Press Generate to send them as new predictions.",
        )
        return new_images_page(request, form, status=409)
    try:
        predictions = save_predictions(team, request.user, key, variations)
    except Refused as refused:
        form.add_error(None, refused.why)
        return new_images_page(request, form, status=refused.status)
    if not predictions:
        form.add_error(None, "This form was already used. Reload the page and submit again.")
        return new_images_page(request, form, status=409)
    return submitted(request, predictions)


def submitted(request, predictions: list[Prediction]):
    """After a submit: in the studio (htmx), its results with them on top, and a fresh key for
    the next Generate; otherwise their page, or the history for several."""
    if request.htmx:
        sent = f"Submitted {len(predictions)} predictions." if len(predictions) > 1 else ""
        context = {"results": StudioResults.of(request, sent=sent), "next_key": uuid.uuid4()}
        return render(request, "predictions/new.html#results", context)
    return redirect_to_submitted(request, predictions)


def redirect_to_submitted(request, predictions: list[Prediction]):
    """One prediction's page; for several, the history, where they all show at once, under a
    message saying how many were sent."""
    if len(predictions) == 1:
        return redirect(predictions[0])
    messages.success(request, f"Submitted {len(predictions)} predictions.")
    return redirect("predictions:index")


def prediction_etag(request, pk: int) -> str | None:
    """The live fragment's version. The full page has none: each one carries a fresh CSRF
    token, CSP nonce and run-again key."""
    if not request.htmx:
        return None
    updated = for_team(request, Prediction.objects.filter(pk=pk)).values_list(
        "updated_at", flat=True
    )
    updated = updated.first()
    # The role decides which actions show; a change to an output bumps `updated_at` too.
    return f"{pk}-{updated.timestamp()}-{request.membership.role}" if updated else None


@team_required()
@cache_control(private=True, no_cache=True)
@vary_on_headers("HX-Request")
@condition(etag_func=prediction_etag)
def detail(request, pk: int):
    """A prediction's page, its outputs a page at a time (`?page=`); for htmx, its live part."""
    queryset = Prediction.objects.select_related("submitted_by")
    prediction = team_object_or_404(request, queryset, pk=pk)
    context = {
        "prediction": prediction,
        "outputs_page": prediction.output_page(request.GET.get("page")),
    }
    if request.htmx:
        return render(request, "predictions/detail.html#live", context)
    # The snippets of a create through Darkroom's own API name its root as this browser sees it.
    api = api_root(request)
    context |= {
        "log": read_log(prediction.logs),
        "rerun_form": RerunForm() if request.membership.can_submit else None,
        "curl": prediction.as_curl(api),
        "python": prediction.as_python(api),
    }
    return render(request, "predictions/detail.html", context)


@team_required(Role.MEMBER)
@require_POST
def cancel(request, pk: int):
    prediction = team_object_or_404(request, Prediction, pk=pk)
    if prediction.request_cancel():
        transaction.on_commit(wake_dispatcher)
    return redirect(prediction)


@team_required(Role.MEMBER)
@vary_on_headers("HX-Request")
def new(request):
    """The New images form: `?model=` picks the model, `?from=<pk>` tweaks a prediction.

    For htmx (the model picker) only the model's inputs are rendered.
    """
    team = request.membership.team
    query = NewImagesQuery(request.GET)
    query.is_valid()
    if pk := query.cleaned_data.get("from"):
        form = PredictionForm.tweaking(team_object_or_404(request, Prediction, pk=pk), team=team)
    else:
        # The picker sends the inputs on screen along: the new model keeps those it takes.
        values = request.GET.dict()
        form = PredictionForm.switching(query.cleaned_data.get("model"), values, team=team)
    part = "#inputs" if request.htmx and not request.htmx.history_restore_request else ""
    return new_images_page(request, form, part=part)


def new_images_page(request, form: PredictionForm, status: int = 200, part: str = ""):
    """The studio: the form, and beside it the member's latest predictions, live. A form the
    studio sent (htmx) and that was refused comes back alone, in place, with why."""
    context = {"form": form, "catalog": CATALOG.values()}
    if request.htmx and request.method == "POST":
        response = render(request, "predictions/new.html#studio-form", context, status=status)
        return reswap(retarget(response, "#studio-form"), "outerHTML")
    if part != "#inputs":
        context["results"] = StudioResults.of(request)
    return render(request, f"predictions/new.html{part}", context, status=status)


def studio_etag(request) -> str | None:
    """The results' last changes (their progress included), read in one short query."""
    if not request.htmx:
        return None
    return f"{request.user.pk}-{request.membership.role}-{StudioResults.version(request)}"


@team_required(Role.MEMBER)
@cache_control(private=True, no_cache=True)
@vary_on_headers("HX-Request")
@condition(etag_func=studio_etag)
def studio_results(request):
    """The studio's results, refreshed while one of them runs: unchanged, a 304 read from the
    team's change marker."""
    return render(request, "predictions/new.html#results", {"results": StudioResults.of(request)})


def render_chunk(request, form: HistoryFilterForm, template: str, chunk_partial: str):
    """A list page, or for htmx one part of it: `arrivals` to answer the list's question about
    new predictions (the URL has `after`), `chunk_partial` to refresh a chunk on screen (the
    URL has `through`), `page` (the chunk and its older link) to append the next one."""
    if not form.is_valid():
        return render(request, template, {"form": form}, status=400)
    if request.htmx and form.cleaned_data["after"]:
        return render_arrivals(request, form, template)
    if request.htmx:
        template += f"#{chunk_partial}" if form.cleaned_data["through"] else "#page"
        return render(request, template, {"form": form, "chunk": form.chunk()})
    chunk = form.chunk()
    context = {"form": form, "chunk": chunk}
    if not chunk.before:
        context["arrivals"] = form.first_arrivals(chunk)
    return render(request, template, context)


def render_arrivals(request, form: HistoryFilterForm, template: str):
    """The list's arrivals: counted in its "N new" bar, or, for a reader at the top of a list
    without filters, put into its newest chunk at once (sent along out of band)."""
    arrivals = form.arrivals()
    chunk = None
    if arrivals.count and arrivals.shown_at_once:
        chunk = form.chunk()
        if len(chunk.predictions) > form.longest_chunk:
            # A tab left open on a busy team: its newest chunk stops growing.
            arrivals, chunk = form.arrivals(held=True), None
    context = {"form": form, "arrivals": arrivals, "chunk": chunk}
    return render(request, f"{template}#arrivals", context)


@team_required()
@cache_control(private=True, no_cache=True)
@vary_on_headers("HX-Request")
def logs(request, pk: int):
    """A prediction's log: for htmx, the viewer's update from `cursor` on; otherwise the raw
    text after `cursor` (all of it without one).

    An update appends the lines after the cursor to `#log-lines` and swaps out of band the bar
    they may continue, the line still being written, the new cursor, when the provider was
    last and will next be checked and, once the prediction has finished, the poller, which
    then stops. Nothing new while running (no more text, no poll since `polled`) is a 204,
    answered before the log is read. A cursor past the end (the log shrank) or too far behind
    for one update re-renders the whole viewer.
    """
    form = LogCursorForm(request.GET)
    if not form.is_valid():
        message = " ".join(error for errors in form.errors.values() for error in errors)
        return HttpResponseBadRequest(message, content_type="text/plain")
    cursor = form.cleaned_data["cursor"]
    seen = for_team(request, Prediction.objects.filter(pk=pk)).values_list(
        "status", Length("logs"), "last_polled_at"
    )
    status, length, polled = get_object_or_404(seen)
    unchanged = cursor == length and form.cleaned_data["polled"] == polled
    if request.htmx and unchanged and status in RUNNING:
        return HttpResponse(status=204)
    prediction = team_object_or_404(request, Prediction, pk=pk)
    text = prediction.logs
    if not request.htmx:
        return raw_log(prediction, cursor)
    if cursor is None or cursor > len(text) or len(text) - cursor > TAIL:
        # A new viewer, a log that shrank, or more than a first load shows: start afresh.
        context = {"prediction": prediction, "log": read_log(text)}
        response = render(request, "predictions/detail.html#log-viewer", context)
        return reswap(retarget(response, "#log-viewer"), "outerHTML")
    context = {
        "prediction": prediction,
        "log": read_log(text, cursor, form.cleaned_data["bar"]),
        "was_empty": cursor == 0,
    }
    return render(request, "predictions/detail.html#log-update", context)


def raw_log(prediction: Prediction, cursor: int | None) -> HttpResponse:
    """The log as text, after `cursor` unless the log is shorter (it shrank)."""
    text = prediction.logs
    if cursor is not None and cursor <= len(text):
        text = text[cursor:]
    response = HttpResponse(text, content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'inline; filename="prediction-{prediction.pk}-log.txt"'
    return response


@team_required(Role.MEMBER)
@require_POST
def rerun(request, pk: int):
    """A new prediction with the same provider, model and input; then its page."""
    original = team_object_or_404(request, Prediction, pk=pk)
    form = RerunForm(request.POST)
    key = (form.is_valid() and form.cleaned_data["request_key"]) or uuid.uuid4()
    team = request.membership.team
    if sent := submitted_with(team, key):
        return submitted(request, sent)
    try:
        team.provider(original.provider)
    except ProviderNotConfigured as exc:
        return rerun_refused(request, original, str(exc))
    fields = {"provider": original.provider, "model": original.model, "input": original.input}
    try:
        predictions = save_predictions(team, request.user, key, [fields])
    except Refused as refused:
        return rerun_refused(request, original, refused.why)
    return submitted(request, predictions or [original])


def rerun_refused(request, original: Prediction, why: str):
    """Run again refused: said above the studio's results, or on the prediction's page."""
    if request.htmx:
        context = {"results": StudioResults.of(request, error=why)}
        return render(request, "predictions/new.html#results", context)
    messages.error(request, why)
    return redirect(original)


@team_required(Role.MEMBER)
@require_POST
def delete(request, pk: int):
    """Deletes a finished prediction with its outputs, whose stored files go too unless another
    output shares them. A running one is refused: the provider would still run (and bill) it."""
    prediction = team_object_or_404(request, Prediction, pk=pk)
    if prediction.status in RUNNING:
        messages.error(request, "This prediction is still running: cancel it first.")
        return redirect(prediction)
    prediction.delete()
    messages.success(request, "Deleted the prediction and its images.")
    return redirect("predictions:index")


@team_required()
def compare(request):
    """Two to four predictions side by side (`?p=12&p=15`, bookmarkable): their images at one
    size, what was asked of each with the differences marked, and how each went."""
    form = CompareForm(request.GET)
    if not form.is_valid():
        return render(request, "predictions/compare.html", {"form": form}, status=400)
    queryset = Prediction.objects.select_related("submitted_by").prefetch_related("outputs")
    comparison = form.comparison(for_team(request, queryset))
    if comparison is None:
        raise Http404("A prediction to compare does not exist, or belongs to another team.")
    return render(request, "predictions/compare.html", {"form": form, "comparison": comparison})


@team_required(Role.MEMBER)
def track(request):
    """Track a prediction made elsewhere by its provider id: the form, and on a POST the
    prediction's page (the team's own if it already has that id)."""
    team = request.membership.team
    form = TrackForm(request.POST if request.method == "POST" else None, team=team)
    if form.is_valid():
        data = form.cleaned_data
        try:
            prediction = Prediction.track(team, request.user, data["provider"], data["remote_id"])
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return redirect(prediction)
    status = 400 if form.errors else 200
    return render(request, "predictions/track.html", {"form": form}, status=status)
