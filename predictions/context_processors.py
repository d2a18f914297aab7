from django.conf import settings


def provider(request) -> dict:
    return {"demo_provider": settings.DEFAULT_PROVIDER == "simulator"}
