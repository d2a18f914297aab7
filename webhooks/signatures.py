"""Standard Webhooks signatures, as Replicate signs its webhooks: checked on providers' webhooks
with the provider's secret, and made for Darkroom's own (webhooks.outgoing) with the team's.

A webhook carries `webhook-id`, `webhook-timestamp` and `webhook-signature`: "v1,<base64>", or
several separated by spaces, each an HMAC-SHA256 of "{id}.{timestamp}.{body}" keyed with the
base64-decoded part of the account's secret after "whsec_". The provider hands out the secret at
`GET /webhooks/default/secret`, and it is the same for every webhook of the account.
"""

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from cryptography.fernet import InvalidToken
from django.core.cache import cache

from accounts.models import fernet
from predictions.client import Provider, shared_client

# Seconds a webhook's timestamp may be off Darkroom's clock either way: an older one may be a
# replay of a webhook that was overheard.
TOLERANCE = 5 * 60
# How long a provider's secret is kept: it changes only when the account rotates it...
SECRET_TTL = 3600
# ...and then the first webhook that fails to verify fetches it again, at most this often per
# account, so that forged webhooks cannot spend the provider's rate limit.
REFETCH_INTERVAL = 60
MAX_WEBHOOK_ID = 200


class InvalidWebhook(Exception):
    """A webhook that must not be applied; `status` is the answer it gets."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def verify(
    provider: Provider, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> str:
    """The webhook's id if `body` is signed with `provider`'s secret at a time within
    TOLERANCE of `now`; InvalidWebhook if not, ProviderError if the secret cannot be fetched."""
    webhook_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (webhook_id and timestamp and signatures) or len(webhook_id) > MAX_WEBHOOK_ID:
        raise InvalidWebhook(
            "A webhook needs webhook-id, webhook-timestamp and webhook-signature headers.", 400
        )
    now = time.time() if now is None else now
    if not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE:
        raise InvalidWebhook("The webhook's timestamp is more than five minutes from now.")
    secret = provider_secret(provider)
    if signed_with(secret, webhook_id, timestamp, signatures, body):
        return webhook_id
    # The account may have rotated its secret since Darkroom fetched it.
    fresh = provider_secret(provider, refresh=True)
    if fresh != secret and signed_with(fresh, webhook_id, timestamp, signatures, body):
        return webhook_id
    raise InvalidWebhook("The webhook's signature does not match.")


def signed_with(secret: str, webhook_id: str, timestamp: str, signatures: str, body: bytes) -> bool:
    try:
        expected = sign(secret, webhook_id, timestamp, body).encode()
    except binascii.Error:
        return False
    return any(
        hmac.compare_digest(expected, candidate.encode())
        for candidate in signatures.split()
        if candidate.startswith("v1,")
    )


def sign(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The `webhook-signature` of `body`: "v1," and the base64 HMAC-SHA256 of "id.timestamp.body"
    keyed with the secret's base64 part; binascii.Error for a secret that is not base64."""
    key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def provider_secret(provider: Provider, refresh: bool = False) -> str:
    """The provider account's webhook secret, from the cache for an hour. `refresh` fetches it
    again, unless that was done in the last REFETCH_INTERVAL seconds."""
    account = hashlib.sha256(f"{provider.name}\n{provider.token}".encode()).hexdigest()
    key = f"webhook-secret:{account}"
    cached = _decrypted(cache.get(key))
    if cached and not (refresh and cache.add(f"{key}:refetched", True, REFETCH_INTERVAL)):
        return cached
    secret = shared_client().webhook_secret(provider)
    # Encrypted like the keys it is fetched with: the cache may be a Redis many things share.
    cache.set(key, fernet().encrypt(secret.encode()), SECRET_TTL)
    return secret


def _decrypted(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return fernet().decrypt(value).decode()
    except InvalidToken:  # DARKROOM_ENCRYPTION_KEYS changed since: fetch it again
        return None
