from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login, logout
from django.contrib.auth import views as auth
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.db import IntegrityError, transaction
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from dashboard.clients import client_address

from . import ratelimit
from .forms import (
    AccountForm,
    CredentialForm,
    InviteForm,
    RoleForm,
    SetupForm,
    SignInForm,
    SwitchTeamForm,
    TeamForm,
    wait_text,
)
from .models import AuditEvent, Invite, Membership, ProviderCredential, Role, Team
from .teams import SESSION_KEY, for_team, switch_team, team_object_or_404, team_required

User = get_user_model()

# Set once the demo banner is dismissed; templates/base.html leaves the banner out while it is.
DEMO_BANNER_DISMISSED = "demo_banner_dismissed"

sign_in_view = LoginView.as_view(
    template_name="accounts/sign_in.html",
    authentication_form=SignInForm,
    redirect_authenticated_user=True,
)


def sign_in(request):
    """Django's sign-in, except on a fresh install, which first needs its first owner."""
    if not User.objects.exists():
        return redirect("accounts:setup")
    return sign_in_view(request)


@require_POST
def sign_out(request):
    logout(request)
    # After logout() flushed the session: the message travels in its own cookie.
    messages.success(request, "You are signed out.")
    return redirect(settings.LOGOUT_REDIRECT_URL)


@require_POST
def dismiss_demo_banner(request):
    """Hide the demo banner for the rest of the session. Without JavaScript the form posts here
    and comes back to its page; with htmx the banner is removed in place."""
    request.session[DEMO_BANNER_DISMISSED] = True
    if request.htmx:
        return HttpResponse()
    back = request.POST.get("next", "")
    # A path of this site: anything else (`abc`) is read by redirect() as a URL's name.
    if not back.startswith("/") or not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = "predictions:index"
    return redirect(back)


def create_team(user, name: str) -> Team:
    team = Team.objects.create(name=name)
    Membership.objects.create(team=team, user=user, role=Role.OWNER)
    AuditEvent.record(team, user, "team_created", f"{user} created the team {name}")
    return team


@sensitive_post_parameters("password1", "password2")
def setup(request):
    """First run: create the first owner and their team. Gone once anyone has an account."""
    if User.objects.exists():
        raise Http404("Darkroom is already set up.")
    form = SetupForm(request.POST or None)
    if form.is_valid():
        with transaction.atomic():
            user = form.save()
            create_team(user, form.cleaned_data["team_name"])
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("predictions:index")
    return render(request, "accounts/setup.html", {"form": form})


@login_required
def no_team(request):
    if request.membership is not None:
        return redirect("predictions:index")
    return render(request, "accounts/no_team.html", {"form": TeamForm()})


@login_required
@require_POST
def new_team(request):
    form = TeamForm(request.POST)
    if not form.is_valid():
        return render(request, "accounts/no_team.html", {"form": form}, status=400)
    team = create_team(request.user, form.cleaned_data["name"])
    request.session[SESSION_KEY] = team.pk
    messages.success(request, f"You created {team.name}. Invite people from the team page.")
    return redirect("accounts:team")


@login_required
@require_POST
def switch(request):
    form = SwitchTeamForm(request.POST)
    if not form.is_valid() or not switch_team(request, form.cleaned_data["team"]):
        raise Http404("No such team.")
    return redirect("predictions:index")


# Hands a new invite's token to the team page, which shows its link once: only its hash is
# stored. A signed cookie for that page alone, spent by it; a reload then sends no form again.
NEW_INVITE_COOKIE = "new_invite"
NEW_INVITE_COOKIE_AGE = 300


@team_required()
def team(request):
    team = request.membership.team
    context = {
        "team": team,
        "memberships": team.memberships.select_related("user"),
        "invite_form": InviteForm(),
        "role_choices": Role.choices,
    }
    if request.membership.is_owner:
        invites = Invite.objects.filter(used_at=None).select_related("created_by")
        context["invites"] = for_team(request, invites)
        context["new_invite_url"] = new_invite_url(request)
    response = render(request, "accounts/team.html", context)
    if NEW_INVITE_COOKIE in request.COOKIES:
        response.delete_cookie(NEW_INVITE_COOKIE, path=request.path, samesite="Strict")
        # The page holds a link that lets anyone in: keep it out of caches and Referer headers.
        response["Cache-Control"] = "no-store"
        response["Referrer-Policy"] = "no-referrer"
    return response


def new_invite_url(request) -> str | None:
    """The link of the invite just made, if this request brings its token; else None."""
    token = request.get_signed_cookie(
        NEW_INVITE_COOKIE, default=None, salt=NEW_INVITE_COOKIE, max_age=NEW_INVITE_COOKIE_AGE
    )
    if not token:
        return None
    invite = Invite.find(token)
    if invite is None or invite.team_id != request.membership.team_id or not invite.is_usable:
        return None
    return request.build_absolute_uri(reverse("accounts:accept_invite", args=[token]))


@team_required(Role.OWNER)
@require_POST
def create_invite(request):
    form = InviteForm(request.POST)
    response = redirect("accounts:team")
    if form.is_valid():
        invite = Invite.objects.create(
            team=request.membership.team, role=form.cleaned_data["role"], created_by=request.user
        )
        AuditEvent.record(
            invite.team, request.user, "invite_created", f"{request.user} invited a {invite.role}"
        )
        response.set_signed_cookie(
            NEW_INVITE_COOKIE,
            invite.token,
            salt=NEW_INVITE_COOKIE,
            max_age=NEW_INVITE_COOKIE_AGE,
            path=reverse("accounts:team"),
            secure=request.is_secure(),
            httponly=True,
            samesite="Strict",
        )
    return response


@team_required(Role.OWNER)
@require_POST
def revoke_invite(request, pk: int):
    invite = team_object_or_404(request, Invite, pk=pk, used_at=None)
    invite.delete()
    AuditEvent.record(
        invite.team, request.user, "invite_revoked", f"{request.user} revoked an invite"
    )
    return redirect("accounts:team")


def is_last_owner(membership: Membership) -> bool:
    """Locks the team's owners until the transaction ends, so two owners demoting each other at
    once cannot leave the team without one."""
    owners = list(membership.team.owners().select_for_update().values_list("pk", flat=True))
    return owners == [membership.pk]


@team_required(Role.OWNER)
@require_POST
@transaction.atomic
def change_role(request, pk: int):
    membership = team_object_or_404(request, Membership.objects.select_related("user"), pk=pk)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose owner, member or viewer.")
    elif is_last_owner(membership) and form.cleaned_data["role"] != Role.OWNER:
        messages.error(request, "A team needs an owner: make someone else owner first.")
    elif membership.role != form.cleaned_data["role"]:
        old, membership.role = membership.role, form.cleaned_data["role"]
        membership.save(update_fields=["role"])
        AuditEvent.record(
            membership.team,
            request.user,
            "role_changed",
            f"{request.user} changed {membership.user} from {old} to {membership.role}",
        )
    return redirect("accounts:team")


@team_required(Role.OWNER)
@require_POST
@transaction.atomic
def remove_member(request, pk: int):
    membership = team_object_or_404(request, Membership.objects.select_related("user"), pk=pk)
    if is_last_owner(membership):
        messages.error(request, "A team needs an owner: make someone else owner first.")
        return redirect("accounts:team")
    membership.delete()
    AuditEvent.record(
        membership.team, request.user, "member_removed", f"{request.user} removed {membership.user}"
    )
    return redirect("accounts:team" if membership.user != request.user else "predictions:index")


@sensitive_variables("secret")
@sensitive_post_parameters("secret")
@team_required(Role.OWNER)
def credentials(request):
    team = request.membership.team
    form = CredentialForm(request.POST or None)
    if form.is_valid():
        provider, secret = form.cleaned_data["provider"], form.cleaned_data["secret"]
        credential = ProviderCredential.objects.filter(team=team, provider=provider).first()
        credential = credential or ProviderCredential(team=team, provider=provider)
        credential.set_secret(secret)
        credential.updated_by = request.user
        credential.save()
        AuditEvent.record(
            team,
            request.user,
            "credential_set",
            f"{request.user} set the {credential.provider_label} key ending {credential.last4}",
        )
        messages.success(
            request,
            f"Saved. New {credential.provider_label} predictions use the key ending "
            f"{credential.last4}.",
        )
        return redirect("accounts:credentials")
    return render(
        request,
        "accounts/credentials.html",
        {"form": form, "credentials": for_team(request, ProviderCredential.objects.all())},
    )


@team_required(Role.OWNER)
@require_POST
def delete_credential(request, pk: int):
    credential = team_object_or_404(request, ProviderCredential, pk=pk)
    credential.delete()
    AuditEvent.record(
        credential.team,
        request.user,
        "credential_deleted",
        f"{request.user} removed the {credential.provider_label} key ending {credential.last4}",
    )
    return redirect("accounts:credentials")


@team_required(Role.OWNER)
def audit(request):
    events = for_team(request, AuditEvent.objects.select_related("actor"))[:200]
    return render(request, "accounts/audit.html", {"events": events})


@sensitive_post_parameters("password1", "password2")
def accept_invite(request, token: str):
    invite = Invite.find(token)
    if invite is None:
        raise Http404("No such invite.")
    if not invite.is_usable:
        return render(request, "accounts/invite.html", {"invite": invite}, status=410)
    form = None
    if not request.user.is_authenticated:
        form = AccountForm(request.POST or None)
    if request.method == "POST" and (form is None or form.is_valid()):
        try:
            membership = invite.accept(lambda: request.user if form is None else form.save())
        except IntegrityError:  # the username was taken since the form checked it
            if form is None:
                raise
            form.add_error("username", "That username was just taken: choose another.")
            return render(request, "accounts/invite.html", {"invite": invite, "form": form})
        if membership is None:
            return render(request, "accounts/invite.html", {"invite": invite}, status=410)
        if form is not None:
            login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
        request.session[SESSION_KEY] = membership.team_id
        messages.success(request, f"Welcome to {membership.team.name}.")
        return redirect("predictions:index")
    return render(request, "accounts/invite.html", {"invite": invite, "form": form})


class PasswordResetView(auth.PasswordResetView):
    """Django's reset form, limited per client address (refused, with a message) and per email
    (the same answer as ever, with no mail sent), so it never tells whether an account has the
    email, and cannot be used to flood anyone's mailbox."""

    def form_valid(self, form):
        address = client_address(self.request.META)
        by_address = ratelimit.hit("reset-ip", address, settings.PASSWORD_RESET_RATE_LIMIT)
        if not by_address.allowed:
            form.add_error(
                None,
                "Too many password reset requests from your address: try again in "
                f"{wait_text(by_address.retry_after)}.",
            )
            return self.render_to_response(self.get_context_data(form=form), status=429)
        email = form.cleaned_data["email"].strip().lower()
        by_email = ratelimit.hit("reset-email", email, settings.PASSWORD_RESET_RATE_LIMIT_EMAIL)
        if not by_email.allowed:
            return redirect(self.get_success_url())
        return super().form_valid(form)
