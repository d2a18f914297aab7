"""How every page writes dates, times and money: a few formats, the same wherever they show.

- A moment in a list, a table or a sentence (`moment`): "2 Dec, 13:59", with its year when that
  is not this year: "2 Dec 2025, 13:59".
- A moment on its own page, a prediction's submission (`full_moment`): "2 Dec 2026, 13:59:07".
- A time alone, where the day goes without saying (`time_of_day`): "13:59:07", a prediction's
  timeline and polls. To the minute, "13:59", where seconds say nothing: an output's next try
  to be saved, the provider health page's minutes.
- Each of these is a <time> whose `datetime` is the moment in ISO 8601 (as `|date:'c'` writes
  it) and whose title is the moment in full, with its zone: "2 Dec 2026, 13:59:07 UTC".
- A day (`day`): "2 Dec 2026"; a month (`month`): "December 2026". Within one period the costs
  page names above them, its days go without the year: "1 Dec", "Wed 2 Dec".
- A moment written into text that is kept or sent on (an audit event, a prediction's error, a
  message), `moment_text` of dashboard/formats.py: always its year and zone, "2 Dec 2026, 13:59
  UTC".
- An age, "12 minutes ago" (`age`), only where the age is the point, on a page that never
  refreshes itself: a live fragment renders the same markup until its data changes (a refresh
  with nothing new is a 304), which "ago" would spoil every minute. "This year" is fine.
- Money is costs' `money` (costs/models.py; the `money` filter of costs' tags, and the `*_text`
  of the costs pages, which call it): "$0.003", "$48.20", "12.50 EUR". At least two decimals,
  and every further one the amount has (costs are kept to a millionth), so a small amount never
  reads as $0.00; "unpriced", never $0, where no price is known.

Moments are shown in the deployment's time zone (TIME_ZONE), as the template engine hands them
to these filters; "this year" is the year of today there. Strings rather than Django's `date`
filter, as the history shows a moment on every row: one costs a few µs, `date` 20 to 60.
"""

from datetime import date, datetime

from django import template
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince

from dashboard.formats import day_text

register = template.Library()


def time_element(value: datetime, text: str) -> SafeString:
    # Nothing to escape: digits, month names and the zone's abbreviation.
    full = f"{day_text(value)}, {value:%H:%M:%S %Z}"
    return mark_safe(f'<time datetime="{value.isoformat()}" title="{full}">{text}</time>')


@register.filter(expects_localtime=True)
def moment(value: datetime | None) -> str:
    """ "2 Dec, 13:59"; "2 Dec 2025, 13:59" in another year."""
    if value is None:
        return ""
    day = f"{value.day} {value:%b}"
    if value.year != timezone.localdate().year:
        day += f" {value.year}"
    return time_element(value, f"{day}, {value:%H:%M}")


@register.filter(expects_localtime=True)
def full_moment(value: datetime | None) -> str:
    """ "2 Dec 2026, 13:59:07" """
    return "" if value is None else time_element(value, f"{day_text(value)}, {value:%H:%M:%S}")


@register.filter(expects_localtime=True)
def time_of_day(value: datetime | None) -> str:
    """ "13:59:07" """
    return "" if value is None else time_element(value, f"{value:%H:%M:%S}")


@register.filter(expects_localtime=True)
def age(value: datetime | None) -> str:
    """ "12 minutes ago" """
    return "" if value is None else time_element(value, f"{timesince(value)} ago")


@register.filter(expects_localtime=True)
def day(value: date | None) -> str:
    """ "2 Dec 2026", of a date or a moment."""
    return "" if value is None else day_text(value)


@register.filter
def month(value: date | None) -> str:
    """ "December 2026" """
    return "" if value is None else f"{value:%B %Y}"
