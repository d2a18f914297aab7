from django import template
from django.utils.html import format_html

from predictions.models import Prediction, Status

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
# A lookup too: get_status_display() builds a dict of the choices each time.
LABELS = dict(Status.choices)


@register.filter
def status_icon(status: str) -> str:
    return ICONS.get(status, RUNNING_ICON)


@register.simple_tag(takes_context=True)
def status(context, prediction: Prediction) -> str:
    """A prediction's status, icon and name. The reader's own carry data-mine (and data-ended
    once ended), which the tab's badge counts while the tab is hidden (static/js/badge.js). A
    string rather than an included template: every row of the history shows one."""
    request = context.get("request")
    mine = ""
    if prediction.submitted_by_id and request and prediction.submitted_by_id == request.user.pk:
        ended = "" if prediction.is_running else " data-ended"
        mine = format_html(' data-mine="{}"{}', prediction.pk, ended)
    return format_html(
        '<span class="status status-{}"{}><span aria-hidden="true">{}</span> {}</span>',
        prediction.status,
        mine,
        status_icon(prediction.status),
        LABELS.get(prediction.status, prediction.status),
    )
