"""API tokens: personal, for one team each, shown once and stored only as a hash.

A token acts for its member in its team with the role the member has there now: a member who
becomes a viewer, or leaves, takes their tokens' rights along at once.
"""

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import AuditEvent, Membership

# What a token looks like: a prefix that says whose it is (secret scanners and people recognise
# it), then 256 bits from `secrets` as url-safe base64.
TOKEN_PREFIX = "drk_"
TOKEN_RE = re.compile(rf"{TOKEN_PREFIX}[A-Za-z0-9_-]{{43}}")
# A token's last use is written at most this often: not one write per request.
LAST_USED_PRECISION = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(models.Model):
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="api_tokens")
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    # The SHA-256 of the token: a leaked database opens no API.
    token_hash = models.CharField(max_length=64, unique=True)
    # The prefix and the token's first characters, so people can tell their tokens apart.
    hint = models.CharField(max_length=12)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The API page: the team's tokens (an owner's view) newest first.
            models.Index(fields=["team", "-created_at"], name="apitoken_team_recent_idx")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @classmethod
    def create(cls, team, member, name: str, expires_at=None) -> tuple["ApiToken", str]:
        """A new token and its secret, which is shown once and never stored."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            team=team,
            member=member,
            name=name,
            token_hash=hash_token(secret),
            hint=secret[: len(TOKEN_PREFIX) + 4],
            expires_at=expires_at,
        )
        AuditEvent.record(
            team, member, "api_token_created", f"{member} created the API token “{name}”"
        )
        return token, secret

    @classmethod
    def find(cls, secret: str) -> "ApiToken | None":
        """The token whose secret this is, active or not; None for any other string."""
        if not TOKEN_RE.fullmatch(secret):
            return None
        digest = hash_token(secret)
        token = cls.objects.select_related("team", "member").filter(token_hash=digest).first()
        # The lookup is by a hash of the secret, so its timing tells nothing of the stored one;
        # the comparison is constant-time all the same.
        if token is None or not hmac.compare_digest(token.token_hash, digest):
            return None
        return token

    @property
    def status(self) -> str:
        """active, expired or revoked (a revoked token stays revoked once it also expires)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"

    def membership(self) -> Membership | None:
        """The member's membership of the token's team, as it is now; None once they left."""
        return (
            Membership.objects.select_related("team", "user")
            .filter(team_id=self.team_id, user_id=self.member_id)
            .first()
        )

    def record_use(self) -> None:
        """Note the token's use, unless that was done less than a minute ago (as this copy
        tells, then as the row does: two requests at once write it once)."""
        now = timezone.now()
        if self.last_used_at and now - self.last_used_at < LAST_USED_PRECISION:
            return
        type(self).objects.filter(
            Q(last_used_at=None) | Q(last_used_at__lt=now - LAST_USED_PRECISION), pk=self.pk
        ).update(last_used_at=now)

    def revoke(self, by) -> bool:
        """Revoke the token now; False if it already was."""
        now = timezone.now()
        revoked = (
            type(self)
            .objects.filter(pk=self.pk, revoked_at=None)
            .update(revoked_at=now, revoked_by=by)
        )
        if revoked:
            self.revoked_at, self.revoked_by = now, by
            whose = "their" if by.pk == self.member_id else f"{self.member}'s"
            AuditEvent.record(
                self.team, by, "api_token_revoked", f"{by} revoked {whose} API token “{self.name}”"
            )
        return bool(revoked)
