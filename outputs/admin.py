from django.contrib import admin

from .models import Board, Output, ShareLink


@admin.register(Output)
class OutputAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "prediction", "index", "state", "content_type", "bytes"]
    list_filter = ["state", "content_type", "team"]
    raw_id_fields = ["team", "prediction"]
    readonly_fields = ["claims", "sha256", "archived_at"]


@admin.register(Board)
class BoardAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "name", "created_by", "created_at"]
    raw_id_fields = ["team", "created_by"]


@admin.register(ShareLink)
class ShareLinkAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "title", "expires_at", "revoked_at", "views"]
    raw_id_fields = ["team", "created_by", "board", "outputs"]
    exclude = ["token_hash"]
