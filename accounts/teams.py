"""Which team a request acts for, and the one scoping function every query goes through.

Every view, HTMX partial, download and (later) API call reads team data only through
`for_team()` / `team_object_or_404()`, so another team's object answers 404, never 403: its
existence is not revealed.
"""

from collections.abc import Callable
from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, resolve_url
from django_htmx.http import HttpResponseClientRedirect

from .models import Membership, Role

SESSION_KEY = "team_id"


def memberships_of(request: HttpRequest) -> list[Membership]:
    """The signed-in user's memberships, teams included, in one query."""
    if not request.user.is_authenticated:
        return []
    return list(Membership.objects.filter(user=request.user).select_related("team"))


def current_membership(request: HttpRequest, memberships: list[Membership]) -> Membership | None:
    """The membership of the team chosen in the session, else the first one."""
    chosen = request.session.get(SESSION_KEY)
    for membership in memberships:
        if membership.team_id == chosen:
            return membership
    return memberships[0] if memberships else None


def switch_team(request: HttpRequest, team_id: int) -> bool:
    if not Membership.objects.filter(user=request.user, team_id=team_id).exists():
        return False
    request.session[SESSION_KEY] = team_id
    return True


def for_team(request: HttpRequest, queryset: QuerySet) -> QuerySet:
    """`queryset` narrowed to the request's team; empty for a request without one."""
    membership = request.membership
    if membership is None:
        return queryset.none()
    return queryset.filter(team_id=membership.team_id)


def team_object_or_404(request: HttpRequest, queryset: QuerySet | type[Model], **lookup):
    if not isinstance(queryset, QuerySet):
        queryset = queryset._default_manager.all()
    return get_object_or_404(for_team(request, queryset), **lookup)


def team_required(role: str = Role.VIEWER) -> Callable:
    """Sign-in, a team, and at least `role` in it; a lower role gets 403 (it is their team)."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                if request.htmx:
                    # A fragment must not swap a sign-in page into itself: reload the page instead.
                    return HttpResponseClientRedirect(
                        f"{resolve_url(settings.LOGIN_URL)}?"
                        + urlencode({"next": request.get_full_path()})
                    )
                return redirect_to_login(request.get_full_path())
            if request.membership is None:
                return redirect("accounts:no_team")
            if not request.membership.allows(role):
                raise PermissionDenied(f"This needs the {Role(role).label.lower()} role.")
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
