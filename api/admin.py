from django.contrib import admin

from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Which tokens exist and whose they are; never their hashes. Revoke one by setting its
    revoked time."""

    list_display = ["name", "hint", "member", "team", "created_at", "last_used_at", "expires_at"]
    list_filter = ["team"]
    search_fields = ["name", "member__username", "team__name"]
    list_select_related = ["member", "team"]
    exclude = ["token_hash"]
    readonly_fields = ["team", "member", "hint", "created_at", "last_used_at", "revoked_by"]
