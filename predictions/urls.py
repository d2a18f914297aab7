from django.urls import path

from . import views

app_name = "predictions"
urlpatterns = [
    path("", views.index, name="index"),
    path("new/", views.new, name="new"),
    path("new/results", views.studio_results, name="studio_results"),
    path("predictions/new", views.submit, name="submit"),
    path("predictions/<int:pk>/", views.detail, name="detail"),
    path("predictions/<int:pk>/logs", views.logs, name="logs"),
    path("predictions/<int:pk>/cancel", views.cancel, name="cancel"),
    path("predictions/<int:pk>/again", views.rerun, name="rerun"),
    path("predictions/<int:pk>/delete", views.delete, name="delete"),
    path("compare/", views.compare, name="compare"),
    path("predictions/track", views.track, name="track"),
]
