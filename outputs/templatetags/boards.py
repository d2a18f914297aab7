"""What the selection toolbar needs on any page that includes it."""

from django import template

from accounts.teams import for_team
from outputs.models import Board

register = template.Library()


@register.simple_tag(takes_context=True)
def team_boards(context) -> list[Board]:
    """The boards of the request's team, to add a selection to (none on a share page): read
    once a request, for the selection toolbar and the lightbox both list them."""
    request = context["request"]
    if not hasattr(request, "team_boards"):
        request.team_boards = list(for_team(request, Board.objects.only("pk", "name")))
    return request.team_boards
