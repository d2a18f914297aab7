from django.urls import path

from . import views

app_name = "predictions"
urlpatterns = [
    path("", views.index, name="index"),
    path("predictions/new", views.submit, name="submit"),
    path("predictions/<int:pk>/", views.detail, name="detail"),
    path("predictions/<int:pk>/cancel", views.cancel, name="cancel"),
]
