from django.contrib import admin

from .models import ModelTiming


@admin.register(ModelTiming)
class ModelTimingAdmin(admin.ModelAdmin):
    """Learned by the workers from ended predictions; deleting a row makes it learn afresh."""

    list_display = ["provider", "model", "samples", "updated_at"]
    list_filter = ["provider"]
    search_fields = ["model"]
    readonly_fields = ["provider", "model", "samples", "queue", "run", "total", "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False
