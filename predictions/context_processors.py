from django.conf import settings


def provider(request) -> dict:
    """Whether new predictions of the request's team go to the demo simulator by default."""
    membership = getattr(request, "membership", None)
    default = membership.team.default_provider() if membership else settings.DEFAULT_PROVIDER
    return {"demo_provider": default == "simulator"}
