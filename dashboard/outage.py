"""While the database cannot be reached, requests answer 503 with a page that keeps what was
typed, rather than a 500 that loses it.

The database is the truth: without it nothing is saved, so nothing is sent to a provider (a
create is only ever sent for a saved prediction). A form sent during an outage comes back with
its values in a form that posts them to the same address again, its request key included, so
trying again once the database is back sends it at most once. Passwords and keys are never
written back into a page.

A form sent through htmx (the studio's Generate) gets the message alone, to put at the top of
the form that sent it: that form, still on screen, keeps every value as typed, the inputs of
its model included, which this page could not draw without the database.
"""

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse

from .middleware import is_api

log = logging.getLogger(__name__)

# What a lost or refused connection raises (Django's wrappers of the driver's errors).
OUTAGES = (OperationalError, InterfaceError)
RETRY_AFTER = 10
SECRET_FIELDS = {
    "password",
    "password1",
    "password2",
    "old_password",
    "new_password1",
    "new_password2",
    "secret",
}
# Fields that were hidden in the form sent: they go back hidden.
HIDDEN_FIELDS = {"request_key", "next"}


class DatabaseOutageMiddleware:
    """Placed before the first middleware that reads the database (TeamMiddleware)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            # The signed-in user (session, then user) is what nearly every request reads from
            # the database first, for TeamMiddleware: loaded here, an outage is caught here.
            request.user.get_username()
        except OUTAGES as error:
            if request.path == reverse("operations:healthz"):
                # The probe needs no user, and says what fails as JSON to a signed-in browser
                # as to a load balancer. Imported here: operations imports this module.
                from operations.views import healthz

                return healthz(request)
            return unavailable(request, error)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, OUTAGES):
            return unavailable(request, exception)
        return None


def unavailable(request: HttpRequest, error: Exception) -> HttpResponse:
    log.error(
        "The database is unavailable (%s: %s); %s %s answered 503",
        type(error).__name__,
        str(error).strip(),
        request.method,
        request.path,
    )
    if request.method != "POST":
        message = "The database is unavailable. Try again in a moment."
    elif request.path == reverse("predictions:submit"):
        message = "The database is unavailable; nothing was sent. Try again."
    else:
        message = "The database is unavailable; nothing was saved. Try again."
    if is_api(request):
        response = JsonResponse(
            {"title": "Service Unavailable", "detail": message, "status": 503}, status=503
        )
    elif request.method == "POST" and request.headers.get("HX-Request") == "true":
        # htmx swaps no 5xx by itself: a page that shows this one says so in its own script
        # (static/js/studio.js). Placed first in the sending element, not over it.
        response = render(request, "503.html#notice", {"message": message}, status=503)
        response["HX-Retarget"] = "this"
        response["HX-Reswap"] = "afterbegin"
    else:
        context = {"message": message, "kept": kept_fields(request)}
        response = render(request, "503.html", context, status=503)
    response["Retry-After"] = str(RETRY_AFTER)
    return response


def kept_fields(request: HttpRequest) -> list[dict]:
    """The posted fields to send again, but the CSRF token (the page has its own) and secrets."""
    if request.method != "POST":
        return []
    return [
        {
            "name": name,
            "label": name.replace("_", " ").capitalize(),
            "value": value,
            "hidden": name in HIDDEN_FIELDS,
            "long": "\n" in value or len(value) > 80,
        }
        for name, values in request.POST.lists()
        if name != "csrfmiddlewaretoken" and name not in SECRET_FIELDS
        for value in values
    ]
