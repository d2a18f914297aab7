from .teams import current_membership, memberships_of


class TeamMiddleware:
    """Sets `request.memberships` (the signed-in user's teams) and `request.membership`: the
    one they act for, or None when signed out or in no team."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.memberships = memberships_of(request)
        request.membership = current_membership(request, request.memberships)
        return self.get_response(request)
