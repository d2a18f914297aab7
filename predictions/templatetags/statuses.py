from django import template

register = template.Library()

# A status as an icon (its name always says the same in words): a lookup, not an include, as a
# status shows on every row of a page.
ICONS = {
    "succeeded": "✓",
    "failed": "✕",
    "timed_out": "◷",
    "submit_unknown": "?",
    "canceled": "⊘",
    "aborted": "■",
}
RUNNING_ICON = "◌"


@register.filter
def status_icon(status: str) -> str:
    return ICONS.get(status, RUNNING_ICON)
