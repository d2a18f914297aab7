from django.contrib import admin

from .models import Budget, DailyCost, PredictionCost, PriceRule, Repricing


@admin.register(PriceRule)
class PriceRuleAdmin(admin.ModelAdmin):
    list_display = ["provider", "model", "team", "unit", "amount", "currency", "effective_from"]
    list_filter = ["provider", "unit", "currency"]
    search_fields = ["model", "source"]
    raw_id_fields = ["team"]

    def get_readonly_fields(self, request, obj=None):
        # A price change is a new rule with a later start, so the costs it made stay as they were.
        if obj is None:
            return []
        return ["team", "provider", "model", "unit", "amount", "currency", "effective_from"]


@admin.register(Repricing)
class RepricingAdmin(admin.ModelAdmin):
    """Price changes being applied, and those done: saving a rule records them, workers do them."""

    list_display = ["team", "provider", "model", "since", "requested_at", "done_at"]
    list_filter = ["provider"]
    raw_id_fields = ["team"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(PredictionCost)
class PredictionCostAdmin(admin.ModelAdmin):
    list_display = ["prediction", "team", "model", "status", "kind", "amount", "currency", "day"]
    list_filter = ["kind", "status", "currency"]
    raw_id_fields = ["prediction", "team", "member", "rule"]
    date_hierarchy = "day"

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DailyCost)
class DailyCostAdmin(admin.ModelAdmin):
    list_display = ["team", "day", "member", "model", "status", "count", "amount", "currency"]
    list_filter = ["status", "currency"]
    raw_id_fields = ["team", "member"]
    date_hierarchy = "day"

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ["team", "member", "amount", "currency", "updated_at"]
    raw_id_fields = ["team", "member"]
