"""Rate limits over Django's cache (Redis, or files under var/ without Redis).

Two kinds. Fixed windows (`hit`) count uses, e.g. submissions a minute: windows are slices of
the clock (with 60 s: each minute), so a counter's cache key names its window and the time to
the next one is the Retry-After. Sign-ins get progressive delays instead (`SignInThrottle`):
failures are free up to a count, then each attempt waits 1 s, 2 s, 4 s ... at most
LOGIN_MAX_DELAY after the failure before it, so no one can lock an account out for longer, and
a right password after the wait signs in.

On Redis add + incr are atomic; the file cache is best effort under concurrent requests. Keys
hold an HMAC of the limited thing, never a username or address in clear.

When the cache cannot be reached, every limit here lets the request through and logs a warning:
a Redis outage must not stop people signing in or keep a form from being sent, and what costs
money is still held by the budgets, which live in the database.
"""

import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.utils.crypto import salted_hmac

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int  # seconds until the window ends, when refused; 0 when allowed


def _key(scope: str, key: str) -> str:
    digest = salted_hmac("darkroom.ratelimit", f"{scope}:{key}", algorithm="sha256").hexdigest()
    return f"ratelimit:{scope}:{digest}"


def _window(scope: str, key: str, seconds: int) -> tuple[str, int]:
    """The counter's cache key for the current window, and the seconds left in it."""
    now = time.time()
    window = int(now // seconds)
    return f"{_key(scope, key)}:{window}", max(1, math.ceil((window + 1) * seconds - now))


def cache_down(scope: str, error: Exception) -> None:
    # One line: while Redis is down, every request says so. The exception's type only: its
    # message may name the Redis URL with its password.
    log.warning(
        "The cache cannot be reached (%s): %s rate limits are not applied",
        type(error).__name__,
        scope,
    )


def hit(scope: str, key: str, limit: tuple[int, int], cost: int = 1) -> Decision:
    """Count `cost` uses of `key`'s budget in `scope`; refused past `count` uses in the window."""
    count, seconds = limit
    cache_key, left = _window(scope, key, seconds)
    try:
        cache.add(cache_key, 0, timeout=left)
        try:
            used = cache.incr(cache_key, cost)
        except ValueError:  # the window ended between add and incr: count in the new one
            return hit(scope, key, limit, cost)
        # Redis's incr keeps the expiry, but the file cache's rewrites it with the default timeout.
        cache.touch(cache_key, left)
    except Exception as error:  # noqa: BLE001 - any cache failure: allowed, see the docstring
        cache_down(scope, error)
        return Decision(True, 0)
    return Decision(used <= count, 0 if used <= count else left)


def peek(scope: str, key: str, limit: tuple[int, int]) -> Decision:
    """Whether one more use would be allowed, without counting it."""
    count, seconds = limit
    cache_key, left = _window(scope, key, seconds)
    used = cache.get(cache_key, 0)
    return Decision(used < count, 0 if used < count else left)


def reset(scope: str, key: str, limit: tuple[int, int]) -> None:
    cache.delete(_window(scope, key, limit[1])[0])


@dataclass
class SignInThrottle:
    """Progressive delays for one username or one client address (`key`) in `scope`.

    `limit` is (free, memory): `free` failures need no wait, and failures are forgotten `memory`
    seconds after the last one. Every attempt is counted when it begins, so parallel guesses
    cannot all slip in before the first failure is recorded; a success gives its count back
    (`succeeded`), so only failures add up. Past the free ones, an attempt may begin only once
    the wait set by the last failure is over, and only one at a time: it claims the wait's key
    (an atomic add), which its failure then sets to the next, doubled, wait.
    """

    scope: str
    key: str
    limit: tuple[int, int]
    number: int = 0  # this attempt's place among the failures not yet forgotten
    claimed: bool = False  # whether it holds the wait's key
    allowed: bool = True
    retry_after: int = 0

    def __post_init__(self) -> None:
        self.attempts_key = f"{_key(self.scope, self.key)}:attempts"
        self.wait_key = f"{_key(self.scope, self.key)}:wait"

    def begin(self) -> "SignInThrottle":
        """Count this attempt, or refuse it (`allowed`, `retry_after`) while the key must wait."""
        free, memory = self.limit
        try:
            cache.add(self.attempts_key, 0, timeout=memory)
            try:
                self.number = cache.incr(self.attempts_key)
            except ValueError:  # forgotten between add and incr: the first attempt again
                cache.set(self.attempts_key, 1, timeout=memory)
                self.number = 1
            if self.number <= free:
                return self
            now = time.time()
            # Held until this attempt ends (then set to the next wait, or removed); a process
            # that dies meanwhile holds it at most LOGIN_MAX_DELAY.
            self.claimed = cache.add(self.wait_key, now + 1, timeout=settings.LOGIN_MAX_DELAY)
            if not self.claimed:
                # Refused attempts are not counted: hammering during a wait makes it no longer.
                cache.decr(self.attempts_key)
                self.allowed = False
                self.retry_after = max(1, math.ceil((cache.get(self.wait_key) or now) - now))
        except Exception as error:  # noqa: BLE001 - any cache failure: allowed, see the docstring
            cache_down(self.scope, error)
            self.allowed, self.number = True, 0
        return self

    def cancel(self) -> None:
        """Another throttle refused the attempt: it was never made."""
        self.guarded(self._give_back)

    def succeeded(self, forget: bool) -> None:
        """The right password: its attempt is given back, or with `forget` every failure too
        (for the username; an address keeps other people's failures)."""
        if forget:
            self.guarded(lambda: cache.delete_many([self.attempts_key, self.wait_key]))
        else:
            self.guarded(self._give_back)

    def failed(self) -> int:
        """Record the failure; the seconds the next attempt must wait (0: none)."""
        free, memory = self.limit
        if self.number == 0:  # not counted: the cache is down
            return 0
        failures_past_free = self.number - free
        wait = 0 if failures_past_free < 0 else min(2**failures_past_free, settings.LOGIN_MAX_DELAY)

        def record() -> None:
            cache.touch(self.attempts_key, memory)
            if wait:
                cache.set(self.wait_key, time.time() + wait, timeout=wait)

        self.guarded(record)
        return wait

    def _give_back(self) -> None:
        if self.number:
            cache.decr(self.attempts_key)
        if self.claimed:
            cache.delete(self.wait_key)

    def guarded(self, change) -> None:
        try:
            change()
        except ValueError:  # decr of a count that was forgotten meanwhile: nothing to give back
            pass
        except Exception as error:  # noqa: BLE001 - any cache failure: allowed, see the docstring
            cache_down(self.scope, error)
