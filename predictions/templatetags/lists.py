"""What the rows of a long list show, at a fraction of the cost of Django's general tags and
filters: the history renders 50 rows a page and the gallery 40 tiles, and at 1,000,000
predictions rendering them was most of each page's time (a row's markup is a few µs; a
`{% url %}` 30, a `truncatechars` or a `date` 20 to 60). Their moments are written by
formats.py's `moment`."""

from django import template
from django.template.defaultfilters import truncatechars

from dashboard.paths import path_to

register = template.Library()

# `{% path 'predictions:detail' prediction.pk %}`: `{% url %}`, reversed once a view rather
# than once a row (dashboard/paths.py).
register.simple_tag(path_to, name="path")


@register.filter(is_safe=True)
def excerpt(text: str, length: int) -> str:
    """`text|truncatechars:length`, without its cost for an ASCII text that fits (truncatechars
    normalizes any other first)."""
    if text.isascii() and len(text) <= length:
        return text
    return truncatechars(text, length)
