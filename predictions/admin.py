from django.contrib import admin

from .models import Prediction


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ["id", "model", "status", "provider", "submitted_by", "submitted_at", "polls"]
    list_filter = ["status", "provider", "model"]
    search_fields = ["provider_id", "model", "input__prompt"]
    readonly_fields = ["request_key", "claims", "polls", "last_polled_at", "updated_at"]
    date_hierarchy = "submitted_at"
