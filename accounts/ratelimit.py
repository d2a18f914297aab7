"""Fixed-window rate limits over Django's cache (Redis, or files under var/ without Redis).

Windows are slices of the clock (with 60 s: each minute), so a counter's cache key names its
window and the time to the next one is the Retry-After. On Redis add + incr is atomic; the file
cache is best effort under concurrent requests. Keys hold an HMAC of the limited thing, never a
username or address in clear.
"""

import math
import time
from dataclasses import dataclass

from django.core.cache import cache
from django.utils.crypto import salted_hmac


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int  # seconds until the window ends, when refused; 0 when allowed


def _window(scope: str, key: str, seconds: int) -> tuple[str, int]:
    """The counter's cache key for the current window, and the seconds left in it."""
    now = time.time()
    window = int(now // seconds)
    digest = salted_hmac("darkroom.ratelimit", f"{scope}:{key}", algorithm="sha256").hexdigest()
    return f"ratelimit:{scope}:{digest}:{window}", max(1, math.ceil((window + 1) * seconds - now))


def hit(scope: str, key: str, limit: tuple[int, int], cost: int = 1) -> Decision:
    """Count `cost` uses of `key`'s budget in `scope`; refused past `count` uses in the window."""
    count, seconds = limit
    cache_key, left = _window(scope, key, seconds)
    cache.add(cache_key, 0, timeout=left)
    try:
        used = cache.incr(cache_key, cost)
    except ValueError:  # the window ended between add and incr: count in the new one
        return hit(scope, key, limit, cost)
    # Redis's incr keeps the expiry, but the file cache's rewrites it with the default timeout.
    cache.touch(cache_key, left)
    return Decision(used <= count, 0 if used <= count else left)


def peek(scope: str, key: str, limit: tuple[int, int]) -> Decision:
    """Whether one more use would be allowed, without counting it."""
    count, seconds = limit
    cache_key, left = _window(scope, key, seconds)
    used = cache.get(cache_key, 0)
    return Decision(used < count, 0 if used < count else left)


def reset(scope: str, key: str, limit: tuple[int, int]) -> None:
    cache.delete(_window(scope, key, limit[1])[0])
