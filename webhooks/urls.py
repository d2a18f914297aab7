from django.urls import path

from . import views

app_name = "webhooks"

urlpatterns = [
    path("webhooks/predictions/<int:pk>/", views.prediction_webhook, name="prediction"),
]
