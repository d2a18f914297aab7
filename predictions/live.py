"""The team-wide change marker: what a list left open asks about, once a second, to learn
whether anything in the team changed since it last looked.

Every write that changes what a list shows of a prediction (a new one, a provider's answer, an
end, an output saved or starred, a cost repriced, a deletion) calls `team_changed()`, which,
once the transaction commits, stores a fresh random token in the cache. An unchanged list then
costs one cache read and answers 304 before anything is queried or rendered.

The token only says "something changed", never what: the database stays the truth. A token is
set after the commit, so a reader that sees it also sees the change; two writers racing each
set their own token, and either differs from what a reader saw before both. A lost token (the
cache flushed or restarted) is replaced on the next read: every list then refreshes once. A
change whose token never made it (the process died right after its commit) shows at the next
change or, at the latest, when the marker's minute turns.
"""

import logging
import secrets
import time
from functools import partial

from django.core.cache import cache
from django.db import transaction

log = logging.getLogger(__name__)

# Longer than any tab stays open unchanged: a marker that expires only costs one refresh.
MARKER_TTL = 7 * 24 * 3600
# A list refreshes at least this often even if no token reached the cache.
SAFETY_INTERVAL = 60


def marker_key(team_id: int) -> str:
    return f"team-changed:{team_id}"


def team_changed(*team_ids: int | None) -> None:
    """Mark the teams changed once the current transaction commits (at once outside one)."""
    for team_id in set(team_ids) - {None}:
        transaction.on_commit(partial(new_marker, team_id), robust=True)


def new_marker(team_id: int) -> None:
    cache.set(marker_key(team_id), secrets.token_hex(8), MARKER_TTL)


def team_marker(team_id: int) -> str | None:
    """The team's current marker with the safety interval's number; None if the cache cannot
    be read (the list then renders every time, as it would without a marker)."""
    key = marker_key(team_id)
    try:
        marker = cache.get(key)
        if marker is None:
            cache.add(key, secrets.token_hex(8), MARKER_TTL)
            marker = cache.get(key)
    except Exception:  # noqa: BLE001 - any cache failure only costs the 304
        log.warning("The team change marker could not be read", exc_info=True)
        return None
    if marker is None:
        return None
    return f"{marker}-{int(time.time() // SAFETY_INTERVAL)}"
