from django.contrib.auth import views as auth
from django.urls import path, reverse_lazy

from . import views

app_name = "accounts"
urlpatterns = [
    path("sign-in/", views.sign_in, name="login"),
    path("sign-out/", views.sign_out, name="logout"),
    path("demo-banner/dismiss", views.dismiss_demo_banner, name="dismiss_demo_banner"),
    path(
        "account/password/",
        auth.PasswordChangeView.as_view(
            template_name="accounts/password_change.html",
            success_url=reverse_lazy("accounts:password_change_done"),
        ),
        name="password_change",
    ),
    path(
        "account/password/changed/",
        auth.PasswordChangeDoneView.as_view(template_name="accounts/password_change_done.html"),
        name="password_change_done",
    ),
    path(
        "password-reset/",
        views.PasswordResetView.as_view(
            template_name="accounts/password_reset.html",
            email_template_name="accounts/password_reset_email.txt",
            subject_template_name="accounts/password_reset_subject.txt",
            success_url=reverse_lazy("accounts:password_reset_sent"),
        ),
        name="password_reset",
    ),
    path(
        "password-reset/sent/",
        auth.PasswordResetDoneView.as_view(template_name="accounts/password_reset_sent.html"),
        name="password_reset_sent",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        auth.PasswordResetConfirmView.as_view(
            template_name="accounts/password_reset_confirm.html",
            success_url=reverse_lazy("accounts:password_reset_complete"),
        ),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/complete/",
        auth.PasswordResetCompleteView.as_view(
            template_name="accounts/password_reset_complete.html"
        ),
        name="password_reset_complete",
    ),
    path("setup/", views.setup, name="setup"),
    path("no-team/", views.no_team, name="no_team"),
    path("teams/new", views.new_team, name="new_team"),
    path("teams/switch", views.switch, name="switch"),
    path("team/", views.team, name="team"),
    path("team/invites/new", views.create_invite, name="create_invite"),
    path("team/invites/<int:pk>/revoke", views.revoke_invite, name="revoke_invite"),
    path("team/members/<int:pk>/role", views.change_role, name="change_role"),
    path("team/members/<int:pk>/remove", views.remove_member, name="remove_member"),
    path("team/credentials/", views.credentials, name="credentials"),
    path("team/credentials/<int:pk>/delete", views.delete_credential, name="delete_credential"),
    path("team/audit/", views.audit, name="audit"),
    path("invite/<str:token>/", views.accept_invite, name="accept_invite"),
]
