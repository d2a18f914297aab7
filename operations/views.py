import hmac

from django.conf import settings
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from accounts.models import Role
from accounts.teams import for_team, team_required
from outputs.models import Output
from predictions.models import Prediction

from . import health, metrics
from .models import UnknownOutcome
from .provider_health import month_spend, provider_panels, team_trouble


@never_cache
def healthz(request):
    """200 when everything works, else 503 with the reasons: for load balancers and monitors,
    without sign-in; it tells no team's data."""
    checks = health.checks()
    failing = [check.reason for check in checks if not check.ok]
    body = {
        "status": "failing" if failing else "ok",
        "reasons": failing,
        "checks": {check.name: {"ok": check.ok, **check.figures} for check in checks},
    }
    response = JsonResponse(body, status=503 if failing else 200)
    health.health_log.note(checks)
    # Django logs every response of 500 and more on django.request as an ERROR
    # (django.utils.log.log_response), unless it is marked as logged: health_log has said what
    # a probe found.
    response._has_been_logged = True
    return response


@never_cache
def metrics_view(request):
    """Prometheus's text format, for a scraper holding METRICS_TOKEN; not there without one."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("Metrics are off: set METRICS_TOKEN to turn them on.")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        response = HttpResponse(
            "A metrics token is needed.\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(metrics.registry()), content_type=CONTENT_TYPE_LATEST)


@team_required(Role.OWNER)
def provider_health(request):
    """How the team's providers answered over the last hour, the request budget every team
    shares, the team's spend against its monthly budget, and the team's predictions and outputs
    that need a look."""
    now = timezone.now()
    context = {
        "checks": health.checks(),
        "panels": provider_panels(request.membership.team, now),
        "spend": month_spend(request.membership.team, now),
        "trouble": team_trouble(
            for_team(request, Prediction.objects.all()),
            for_team(request, Output.objects.all()),
            for_team(request, UnknownOutcome.objects.all()),
            now,
        ),
    }
    return render(request, "operations/provider_health.html", context)
