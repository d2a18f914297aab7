from django.urls import path

from . import views

app_name = "timings"
urlpatterns = [
    path("team/timings/", views.index, name="index"),
]
