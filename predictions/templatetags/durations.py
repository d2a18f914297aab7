from datetime import timedelta

from django import template

register = template.Library()


@register.filter
def duration(value: timedelta | None) -> str:
    """A duration as people say it: "450 ms", "2.4 s", "3 min 5 s", "1 h 2 min"."""
    if value is None:
        return ""
    seconds = max(value.total_seconds(), 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@register.filter
def seconds(value: timedelta | None) -> str:
    """A queue or run time in seconds to a tenth, "2.4 s"; "" for None. Rounds half up as
    floatformat:1 does, at a tenth of its cost: every history row shows two."""
    if value is None:
        return ""
    microseconds = value // timedelta(microseconds=1)
    tenths = (abs(microseconds) + 50_000) // 100_000
    sign = "-" if microseconds < 0 and tenths else ""
    return f"{sign}{tenths // 10}.{tenths % 10} s"
