"""How a worker gets a row's next step to itself: a lease on the row's due time, and a claim
counter that says which worker holds it.

A row is due when its due column (`next_poll_at`, `next_attempt_at`) has passed. A dispatcher
claims due rows by moving that column forward by the lease and bumping `claims`; the worker whose
message carries the latest claim may act, and every write it makes is bound to that claim. A lost
message or a dead worker only delays the step until the lease runs out.
"""

from datetime import timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone


def claim_due(rows: QuerySet, due: str, lease: float, limit: int) -> list[tuple[int, int]]:
    """Lease up to `limit` of `rows` whose `due` time has passed; (pk, claim) pairs for `take`.

    PostgreSQL skips rows another dispatcher has locked; on SQLite the transaction takes the
    write lock up front (IMMEDIATE mode), and the claim counter check covers both.
    """
    now = timezone.now()
    lease_until = now + timedelta(seconds=lease)
    with transaction.atomic():
        candidates = (
            rows.filter(**{f"{due}__lte": now})
            .order_by(due)
            .select_for_update(skip_locked=True)
            .values_list("pk", "claims")[:limit]
        )
        claimed = []
        for pk, claim in list(candidates):
            if rows.filter(pk=pk, claims=claim).update(**{due: lease_until, "claims": claim + 1}):
                claimed.append((pk, claim + 1))
    return claimed


def take(rows: QuerySet, pk: int, claim: int, due: str, lease: float):
    """The row, if `claim` is still its latest, with its lease renewed for this worker (the
    message may have waited in a queue); None for a stale claim."""
    lease_until = timezone.now() + timedelta(seconds=lease)
    if not rows.filter(pk=pk, claims=claim).update(**{due: lease_until}):
        return None
    row = rows.get(pk=pk)
    row.claim = claim
    return row
