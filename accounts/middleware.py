from .teams import current_membership


class TeamMiddleware:
    """Sets `request.membership`: the signed-in user's membership of the team they act for,
    or None when signed out or in no team."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.membership = current_membership(request)
        return self.get_response(request)
