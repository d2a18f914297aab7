from django.contrib import admin

from .models import Prediction


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "model", "status", "provider", "submitted_by", "submitted_at"]
    list_filter = ["status", "provider", "team", "submitted_at"]
    list_select_related = ["team", "submitted_by"]
    search_fields = ["provider_id", "model", "input__prompt", "submitted_by__username"]
    readonly_fields = ["request_key", "claims", "polls", "last_polled_at", "updated_at"]
    date_hierarchy = "submitted_at"
    raw_id_fields = ["team", "submitted_by"]
