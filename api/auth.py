"""Who an API request acts for, and the API's errors.

Every API view goes through `api_view`: the bearer token names a member and a team, and the
request then carries them as a signed-in page's does (`request.user`, `request.membership`), so
team data is read through the same scoping seam (`accounts.teams.for_team`) and another team's
prediction answers 404. The role is the member's role in the team now. No session, no CSRF:
the token is the credential. Errors are Replicate's problem details.
"""

from collections.abc import Callable
from functools import wraps
from http import HTTPStatus
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.models import Role

from .models import TOKEN_PREFIX, ApiToken


class ApiError(Exception):
    """An answer other than success, in Replicate's error format."""

    def __init__(
        self,
        status: int,
        detail: str,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> JsonResponse:
        body = {"title": self.title, "detail": self.detail, "status": self.status, **self.extra}
        response = JsonResponse(body, status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def unauthenticated(detail: str) -> ApiError:
    return ApiError(401, detail, headers={"WWW-Authenticate": 'Bearer realm="Darkroom API"'})


def authenticate(request: HttpRequest) -> None:
    """Set the request's token, user and membership from its bearer token; ApiError 401 if
    there is none that works."""
    scheme, _, secret = request.headers.get("Authorization", "").strip().partition(" ")
    if not scheme:
        raise unauthenticated(
            "Authentication required: send your Darkroom API token as "
            "`Authorization: Bearer <token>` (create one on the API page)."
        )
    secret = secret.strip()
    if scheme.lower() not in ("bearer", "token") or not secret.startswith(TOKEN_PREFIX):
        raise unauthenticated(
            f"Malformed Authorization header: expected `Bearer {TOKEN_PREFIX}…`, a Darkroom API "
            "token (not a provider's key)."
        )
    token = ApiToken.find(secret)
    if token is None:
        raise unauthenticated("Invalid token: no Darkroom API token has this value.")
    if token.status != "active":
        raise unauthenticated(f"This API token was {token.status}: create a new one.")
    membership = token.membership()
    if membership is None:
        raise unauthenticated("This API token's member is no longer in its team.")
    token.record_use()
    request.api_token = token
    request.user = membership.user
    request.membership = membership


def api_view(role: str = Role.VIEWER) -> Callable:
    """An API endpoint for tokens of `role` and above: 401 without a working token, 403 for a
    lower role, and every error (404s included) in Replicate's JSON format."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                authenticate(request)
                if not request.membership.allows(role):
                    raise ApiError(
                        403,
                        f"This needs the {Role(role).label.lower()} role: a "
                        f"{request.membership.get_role_display().lower()}'s token may read the "
                        "team's predictions but not create or cancel them.",
                    )
                return view(request, *args, **kwargs)
            except ApiError as error:
                return error.response()
            except Http404:
                return ApiError(404, "Not found.").response()

        return wrapper

    return decorator


def by_method(**views: Callable) -> Callable:
    """One URL's views by HTTP method (`GET=...`, `POST=...`); any other method is a 405."""

    @csrf_exempt
    def dispatch(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        view = views.get(request.method)
        if view is None:
            allowed = ", ".join(views)
            error = ApiError(405, f"Use {allowed} here.", headers={"Allow": allowed})
            return error.response()
        return view(request, *args, **kwargs)

    return dispatch
