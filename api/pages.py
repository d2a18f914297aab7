"""The API page in the app: the member's base URL, examples, and their API tokens.

Every member manages their own tokens; owners see and may revoke every token of the team. A
new token is shown once, on a page of its own, from a short-lived signed cookie: a reload sends
no form again, and the token is never stored.
"""

from django.contrib import messages
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.teams import for_team, team_required
from predictions.catalog import DEFAULT_MODEL

from .forms import TokenForm
from .models import ApiToken, hash_token
from .shapes import api_root

NEW_TOKEN_COOKIE = "darkroom_new_api_token"
NEW_TOKEN_COOKIE_AGE = 300


def tokens_for(request) -> QuerySet:
    """The tokens this visitor may see and revoke: all of the team's for an owner, else their
    own."""
    tokens = for_team(request, ApiToken.objects.select_related("member"))
    return tokens if request.membership.is_owner else tokens.filter(member=request.user)


def api_page(request, form: TokenForm, status: int = 200):
    api = api_root(request)
    context = {
        "form": form,
        "tokens": tokens_for(request),
        "base_url": api,
        # replicate-python puts /v1 in front of its paths itself.
        "python_base_url": api.removesuffix("/v1"),
        "model": DEFAULT_MODEL,
    }
    return render(request, "api/index.html", context, status=status)


@team_required()
def index(request):
    return api_page(request, TokenForm())


@team_required()
@require_POST
def create_token(request):
    form = TokenForm(request.POST)
    if not form.is_valid():
        return api_page(request, form, status=400)
    token, secret = ApiToken.create(
        request.membership.team, request.user, form.cleaned_data["name"], form.expires_at()
    )
    response = redirect("api:token_created", token.pk)
    response.set_signed_cookie(
        NEW_TOKEN_COOKIE,
        secret,
        salt=f"api-token-{token.pk}",
        max_age=NEW_TOKEN_COOKIE_AGE,
        path=reverse("api:token_created", args=[token.pk]),
        secure=request.is_secure(),
        httponly=True,
        samesite="Strict",
    )
    return response


@team_required()
def token_created(request, pk: int):
    """The new token, shown once to its member: the cookie is spent by this page."""
    own = for_team(request, ApiToken.objects.filter(member=request.user))
    token = get_object_or_404(own, pk=pk)
    secret = request.get_signed_cookie(
        NEW_TOKEN_COOKIE, default=None, salt=f"api-token-{pk}", max_age=NEW_TOKEN_COOKIE_AGE
    )
    if not secret or hash_token(secret) != token.token_hash:
        secret = None
    context = {"token": token, "secret": secret, "base_url": api_root(request)}
    response = render(request, "api/token_created.html", context)
    response.delete_cookie(NEW_TOKEN_COOKIE, path=request.path, samesite="Strict")
    # The page holds the token: keep it out of caches and other sites' Referer headers.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


@team_required()
@require_POST
def revoke_token(request, pk: int):
    token = get_object_or_404(tokens_for(request), pk=pk)
    if token.revoke(request.user):
        messages.success(request, f"Revoked “{token.name}”: it no longer opens the API.")
    return redirect("api:index")
