from django.urls import path

from . import views

app_name = "operations"
urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("team/providers/health/", views.provider_health, name="provider_health"),
]
