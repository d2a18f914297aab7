from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt

from . import pages, views
from .auth import by_method

app_name = "api"
urlpatterns = [
    # The pages, in the app's team settings.
    path("team/api/", pages.index, name="index"),
    path("team/api/tokens/new", pages.create_token, name="create_token"),
    path("team/api/tokens/<int:pk>/created", pages.token_created, name="token_created"),
    path("team/api/tokens/<int:pk>/revoke", pages.revoke_token, name="revoke_token"),
    # Replicate's HTTP API.
    path(
        "api/v1/predictions",
        by_method(GET=views.list_predictions, POST=views.create_prediction),
        name="predictions",
    ),
    path(
        "api/v1/predictions/track",
        by_method(POST=views.track_prediction),
        name="track",
    ),
    path(
        "api/v1/predictions/<int:pk>",
        by_method(GET=views.get_prediction),
        name="prediction",
    ),
    path(
        "api/v1/predictions/<int:pk>/cancel",
        by_method(POST=views.cancel_prediction),
        name="cancel",
    ),
    path(
        "api/v1/models/<str:owner>/<str:name>",
        by_method(GET=views.get_model),
        name="model",
    ),
    path(
        "api/v1/models/<str:owner>/<str:name>/predictions",
        by_method(POST=views.create_prediction),
        name="model_predictions",
    ),
    path(
        "api/v1/models/<str:owner>/<str:name>/versions",
        by_method(GET=views.list_versions),
        name="versions",
    ),
    path(
        "api/v1/models/<str:owner>/<str:name>/versions/<str:version>",
        by_method(GET=views.get_version),
        name="version",
    ),
    path(
        "api/v1/webhooks/default/secret",
        by_method(GET=views.webhook_secret),
        name="webhook_secret",
    ),
    path("api/v1/files/<str:signed>", by_method(GET=views.file), name="file"),
    path("api/v1/openapi.json", by_method(GET=views.document), name="openapi"),
    # Anything else under the API answers in its JSON, not with a page.
    re_path(r"^api/v1/(?P<rest>.*)$", csrf_exempt(views.not_found), name="not_found"),
]
