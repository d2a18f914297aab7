"""What the selection toolbar needs on any page that includes it."""

from django import template

from accounts.teams import for_team
from outputs.models import Board

register = template.Library()


@register.simple_tag(takes_context=True)
def team_boards(context) -> list[Board]:
    """The boards of the request's team, to add a selection to (none on a share page)."""
    return list(for_team(context["request"], Board.objects.only("pk", "name")))
