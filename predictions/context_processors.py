from django.conf import settings


def provider(request) -> dict:
    """Whether new predictions of the request's team go to the demo simulator by default.

    A callable, so the query behind it runs only where a template shows the banner (full
    pages), not on every live fragment refresh.
    """

    def demo_provider() -> bool:
        membership = getattr(request, "membership", None)
        default = membership.team.default_provider() if membership else settings.DEFAULT_PROVIDER
        return default == "simulator"

    return {"demo_provider": demo_provider}
