"""Sessions read from the cache and written through to the database, that outlive the cache.

Django's cached_db store already falls back to the database when the cache cannot be read, but
not when it cannot be written: with Redis down, every signed-in page would fail. Here every
cache call is guarded, so a dead cache costs one session query a request, never an error.
"""

import logging

from django.contrib.sessions.backends import cached_db

log = logging.getLogger(__name__)


class GuardedCache:
    """The session cache's calls, each answering as a miss if the cache fails."""

    def __init__(self, cache) -> None:
        self.cache = cache

    def get(self, key, default=None):
        return self.guarded("read", self.cache.get, key, default) or default

    def set(self, key, value, timeout=None) -> None:
        self.guarded("write", self.cache.set, key, value, timeout)

    def delete(self, key) -> None:
        self.guarded("delete", self.cache.delete, key)

    def __contains__(self, key) -> bool:
        return bool(self.guarded("read", self.cache.has_key, key))

    def guarded(self, what: str, call, *args):
        try:
            return call(*args)
        except Exception:  # noqa: BLE001 - the database holds every session anyway
            log.warning("Could not %s a session in the cache; using the database", what)
            return None


class SessionStore(cached_db.SessionStore):
    def __init__(self, session_key=None) -> None:
        super().__init__(session_key)
        self._cache = GuardedCache(self._cache)
