import json
import logging
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from predictions.client import PREDICTION_ID_RE, ProviderError, ProviderNotConfigured
from predictions.models import Prediction

from . import sends_webhooks
from .models import WebhookDelivery
from .signatures import InvalidWebhook, verify

log = logging.getLogger(__name__)

NOT_FOUND = "Not found."


@csrf_exempt  # the provider has no CSRF token: the signature is what is checked
@require_POST
def prediction_webhook(request: HttpRequest, pk: int) -> HttpResponse:
    """A provider's webhook about prediction `pk`. It is answered quickly, as providers expect:
    a verified webhook is applied in one transaction, and nothing waits on a worker."""
    prediction = Prediction.objects.filter(pk=pk).select_related("team").first()
    if prediction is None or not sends_webhooks(prediction.provider):
        return _answer(404, NOT_FOUND)
    try:
        webhook_id = verify(prediction.get_provider(), request.headers, request.body)
        payload = _prediction_in(request.body)
    except InvalidWebhook as exc:
        log.warning("webhook for prediction %s refused: %s", pk, exc.reason)
        return _answer(exc.status, exc.reason)
    except (ProviderError, ProviderNotConfigured) as exc:
        # Without the provider's secret nothing can be verified; the provider will retry.
        log.warning("webhook for prediction %s not verified: %s", pk, exc)
        return _answer(503, "The webhook cannot be verified now.")
    outcome = WebhookDelivery.receive(pk, webhook_id, payload)
    if outcome == "unknown":
        return _answer(404, NOT_FOUND)
    if outcome == "not_about":
        log.warning("webhook for prediction %s refused: it is about %s", pk, payload["id"])
        return _answer(400, "The webhook is about another prediction.")
    return HttpResponse(status=204)


def _prediction_in(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    prediction_id = payload.get("id") if isinstance(payload, dict) else None
    if not isinstance(prediction_id, str) or not PREDICTION_ID_RE.fullmatch(prediction_id):
        raise InvalidWebhook("The webhook's body is not a prediction.", 400)
    return payload


def _answer(status: int, text: str) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
