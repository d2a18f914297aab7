from django.urls import path

from . import views

app_name = "outputs"
urlpatterns = [
    path("gallery/", views.gallery, name="gallery"),
    path("boards/", views.boards, name="boards"),
    path("boards/<int:pk>/", views.board, name="board"),
    path("boards/<int:pk>/rename", views.rename_board, name="rename_board"),
    path("boards/<int:pk>/delete", views.delete_board, name="delete_board"),
    path("boards/<int:pk>/download", views.board_download, name="board_download"),
    path("boards/<int:pk>/share", views.share_board, name="share_board"),
    path("outputs/selection", views.selection, name="selection"),
    # Before `media`, whose variant would match these words too.
    path("outputs/<int:pk>/star", views.star, name="star"),
    path("outputs/<int:pk>/delete", views.delete, name="delete"),
    path("outputs/<int:pk>/<slug:variant>", views.media, name="media"),
    path("shares/", views.shares, name="shares"),
    path("shares/<int:pk>/created", views.share_created_page, name="share_created"),
    path("shares/<int:pk>/revoke", views.revoke_share, name="revoke_share"),
    # Public: the token is the only credential.
    path("s/<slug:token>/", views.shared, name="shared"),
    path("s/<slug:token>/download", views.shared_download, name="shared_download"),
    path("s/<slug:token>/<int:pk>/<slug:variant>", views.shared_media, name="shared_media"),
]
