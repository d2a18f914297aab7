from django.apps import AppConfig


class TimingsConfig(AppConfig):
    name = "timings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (connects the receiver)
