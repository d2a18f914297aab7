"""Teams, the people in them, and what an owner may change: members, invites, credentials.

Every prediction (and later output, board, price and budget) belongs to a team. Access is decided
by the signed-in user's membership of the request's team; see `accounts.teams`.
"""

import hashlib
import secrets
from collections.abc import Callable
from datetime import timedelta

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import models, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import salted_hmac

from predictions.client import Provider, ProviderNotConfigured, provider_label


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


# What each role may do, from least to most: a role may do everything the ones before it may.
ROLE_ORDER = [Role.VIEWER, Role.MEMBER, Role.OWNER]


class Team(models.Model):
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def owners(self) -> models.QuerySet:
        return self.memberships.filter(role=Role.OWNER)

    def provider(self, name: str) -> Provider:
        """The provider `name` with this team's key, else the deployment's key for it; the demo
        simulator with the team's own token."""
        if name == "simulator":
            return Provider.named(name, token=self.simulator_token())
        credential = self.credentials.filter(provider=name).first()
        return Provider.named(name, token=credential.secret() if credential else None)

    def simulator_token(self) -> str:
        """The team's token at the demo simulator, which shows each token only the predictions
        it made: with one token for every team, any team could read and cancel the others'.
        Derived from SECRET_KEY, so it is stable and nobody can work out another team's."""
        return (
            "demo-"
            + salted_hmac("darkroom.simulator-token", str(self.pk), algorithm="sha256").hexdigest()
        )

    def default_provider(self) -> str:
        """The provider new predictions start with: the team's own key first."""
        credential = self.credentials.order_by("updated_at").last()
        return credential.provider if credential else settings.DEFAULT_PROVIDER


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="membership_unique_team_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.get_role_display()})"

    def allows(self, role: str) -> bool:
        """True if this membership's role is `role` or above."""
        return ROLE_ORDER.index(self.role) >= ROLE_ORDER.index(role)

    @property
    def can_submit(self) -> bool:
        return self.allows(Role.MEMBER)

    @property
    def is_owner(self) -> bool:
        return self.role == Role.OWNER


def new_invite_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


INVITE_LIFETIME = timedelta(days=7)


def invite_expiry():
    return timezone.now() + INVITE_LIFETIME


class Invite(models.Model):
    """A single-use link that adds whoever opens it, signed in, to a team."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invites")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    # The SHA-256 of the link's token: a leaked database opens no invite. Unique, so its index
    # serves the lookup of an opened link (`find`).
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(default=invite_expiry)
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    # The token in clear, on the instance that made it only: its link is shown once.
    token: str | None = None

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Invite to {self.team} as {self.get_role_display()}"

    def save(self, *args, **kwargs) -> None:
        if not self.token_hash:
            self.token = new_invite_token()
            self.token_hash = hash_token(self.token)
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        if self.token is None:
            raise ValueError("An invite's link is known only to the request that made it.")
        return reverse("accounts:accept_invite", args=[self.token])

    @classmethod
    def find(cls, token: str) -> "Invite | None":
        """The invite whose link holds `token`, used or not; None if there is none."""
        return cls.objects.select_related("team").filter(token_hash=hash_token(token)).first()

    @property
    def is_usable(self) -> bool:
        return self.used_at is None and timezone.now() < self.expires_at

    def accept(self, joiner: Callable[[], AbstractBaseUser]) -> Membership | None:
        """Use the invite once: `joiner()` (the signed-in user, or an account it makes) joins
        with its role, or moves up to it if already in the team with a lower one. None, and
        `joiner` never called, if it was used already or has expired.

        The invite is claimed first, by a conditional update, and the account made after, in
        one transaction: of two people using one link at once, the second waits for the first
        to commit, finds the invite used, and makes no account."""
        with transaction.atomic():
            now = timezone.now()
            unused = Invite.objects.filter(pk=self.pk, used_at=None, expires_at__gt=now)
            if not unused.update(used_at=now):
                return None
            user = joiner()
            Invite.objects.filter(pk=self.pk).update(used_by=user)
            membership, created = Membership.objects.get_or_create(
                team=self.team, user=user, defaults={"role": self.role}
            )
            if created:
                AuditEvent.record(self.team, user, "member_joined", f"{user} joined as {self.role}")
            elif not membership.allows(self.role):
                old, membership.role = membership.role, self.role
                membership.save(update_fields=["role"])
                AuditEvent.record(
                    self.team,
                    user,
                    "role_changed",
                    f"{user} moved from {old} to {self.role} by an invite",
                )
        return membership


def fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in settings.ENCRYPTION_KEYS])


class ProviderCredential(models.Model):
    """A team's key for one provider, encrypted at rest; only its last 4 characters are shown."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="credentials")
    provider = models.CharField(max_length=20)
    secret_encrypted = models.TextField()
    last4 = models.CharField(max_length=4)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team", "provider"], name="credential_unique_team_provider"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider} key …{self.last4} for {self.team}"

    @property
    def provider_label(self) -> str:
        return provider_label(self.provider)

    @property
    def masked(self) -> str:
        return f"••••{self.last4}"

    def set_secret(self, secret: str) -> None:
        self.secret_encrypted = fernet().encrypt(secret.encode()).decode()
        self.last4 = secret[-4:]

    def secret(self) -> str:
        try:
            return fernet().decrypt(self.secret_encrypted.encode()).decode()
        except InvalidToken:
            raise ProviderNotConfigured(
                f"The {self.provider} key of {self.team} cannot be decrypted with the "
                "configured DARKROOM_ENCRYPTION_KEYS."
            ) from None

    def rotate(self) -> None:
        """Re-encrypt with the first configured key (after adding a new key in front)."""
        self.secret_encrypted = fernet().rotate(self.secret_encrypted.encode()).decode()
        self.save(update_fields=["secret_encrypted"])


class AuditEvent(models.Model):
    """Who changed membership, roles or credentials, and when. Never holds a secret."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=40)
    description = models.CharField(max_length=300)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The team's audit page: newest first.
            models.Index(fields=["team", "-created_at"], name="audit_team_recent_idx")
        ]

    def __str__(self) -> str:
        return self.description

    @classmethod
    def record(cls, team: Team, actor, action: str, description: str) -> "AuditEvent":
        return cls.objects.create(
            team=team, actor=actor, action=action, description=description[:300]
        )
