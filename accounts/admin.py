from django.contrib import admin

from .forms import AdminSignInForm
from .models import AuditEvent, Invite, Membership, ProviderCredential, Team

# The admin's sign-in goes through the same delays as the sign-in page's.
admin.site.login_form = AdminSignInForm


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "member_count", "created_at"]
    search_fields = ["name", "memberships__user__username"]
    inlines = [MembershipInline]

    @admin.display(description="Members")
    def member_count(self, team: Team) -> int:
        return team.memberships.count()


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role", "joined_at"]
    list_filter = ["role", "team"]
    search_fields = ["user__username", "team__name"]
    list_select_related = ["user", "team"]


@admin.register(Invite)
class InviteAdmin(admin.ModelAdmin):
    """Invites are made on the Team page, which shows a new one's link once: only its hash is
    stored, so none is made here and none can be opened from here."""

    list_display = ["team", "role", "created_by", "created_at", "expires_at", "used_at"]
    list_filter = ["role", "team"]
    exclude = ["token_hash"]
    view_on_site = False

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(admin.ModelAdmin):
    """Shows which keys exist, never their values."""

    list_display = ["team", "provider", "masked", "updated_by", "updated_at"]
    list_filter = ["provider"]
    fields = ["team", "provider", "masked", "updated_by", "updated_at"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "team", "actor", "action", "description"]
    list_filter = ["action", "team"]
    search_fields = ["description"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False
