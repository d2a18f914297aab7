from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("accounts.urls")),
    path("", include("predictions.urls")),
    path("", include("outputs.urls")),
    path("", include("costs.urls")),
    path("", include("timings.urls")),
    path("", include("webhooks.urls")),
    path("", include("api.urls")),
    path("", include("operations.urls")),
]
