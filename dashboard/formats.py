"""Days and moments as text, for what Python writes: messages, audit events, errors, help texts.
Pages write theirs with the filters of predictions/templatetags/formats.py, which use these."""

from datetime import date, datetime

from django.utils import timezone


def day_text(value: date) -> str:
    """ "2 Dec 2026" """
    return f"{value.day} {value:%b %Y}"


def moment_text(value: datetime) -> str:
    """ "2 Dec 2026, 13:59 UTC", in the deployment's time zone whatever the request's: text that
    is kept or sent on always says its year and zone."""
    local = timezone.localtime(value, timezone.get_default_timezone())
    return f"{day_text(local)}, {local:%H:%M %Z}"
