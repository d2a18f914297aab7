"""How many requests a second every worker together may send a provider: a token bucket that all
worker processes share.

On Redis one Lua script refills and takes in a single step, on Redis's own clock, so workers on
several machines draw on one bucket. Without Redis (the embedded defaults, one machine) the
bucket is a small file under var/budget/, read and rewritten under an exclusive lock.

The bucket holds at most BURST_SECONDS' worth of requests and refills at the rest of the rate,
so over any stretch of T seconds the workers send at most refill × T + capacity: within any one
second, never more than 90% of the rate, however the provider counts (a sliding window, a bucket
of its own, or per minute).

If Redis cannot be reached, a worker neither fails nor sends more: its machine counts in its
file bucket at 1/WORKER_MACHINES of the rate until Redis answers again.
"""

import fcntl
import logging
import os
import struct
import time
from pathlib import Path

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

# A small burst: a bucket that has stood idle lets this many seconds' worth go at once.
BURST_SECONDS = 0.2
# The pause after a 429 that names no Retry-After, and the longest one that is believed.
DEFAULT_PAUSE = 1.0
MAX_PAUSE = 300.0
# After Redis failed, a process counts in its file this long before it asks Redis again, so a
# Redis that hangs costs one socket timeout every few seconds, not one per request.
REDIS_RETRY_INTERVAL = 5.0
WARNING_INTERVAL = 60.0

# KEYS[1]: the bucket. ARGV: rate, capacity, tokens wanted, and the seconds to pause (grant
# nothing, after a 429; 0 when taking). Kept in step with `bucket_step` below.
BUCKET_SCRIPT = """
local rate, capacity = tonumber(ARGV[1]), tonumber(ARGV[2])
local wanted, pause = tonumber(ARGV[3]), tonumber(ARGV[4])
local clock = redis.call("TIME")
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local saved = redis.call("HMGET", KEYS[1], "tokens", "stamp", "paused_until")
local tokens = tonumber(saved[1]) or capacity
local stamp = tonumber(saved[2]) or now
local paused_until = tonumber(saved[3]) or 0

local since = math.max(stamp, paused_until)
if now > since then
  tokens = tokens + (now - since) * rate
end
tokens = math.min(tokens, capacity)
local granted = 0
if pause > 0 then
  tokens = 0
  paused_until = math.max(paused_until, now + pause)
else
  granted = math.min(wanted, math.floor(tokens))
  tokens = tokens - granted
end
local wait = 0
if tokens < 1 then
  wait = math.max(paused_until - now, 0) + (1 - tokens) / rate
end

redis.call("HSET", KEYS[1], "tokens", string.format("%.17g", tokens),
  "stamp", string.format("%.17g", now), "paused_until", string.format("%.17g", paused_until))
-- Once full again, the bucket is as good as absent.
redis.call("EXPIRE", KEYS[1], math.ceil(math.max(paused_until - now, 0) + capacity / rate) + 1)
return {granted, string.format("%.6f", wait)}
"""

# The file bucket's state: tokens, stamp and paused_until, as in the script.
FILE_STATE = struct.Struct("ddd")


class RequestBudget:
    """Requests a second a provider allows for one kind of call: "query" (read or cancel a
    prediction) or "create"."""

    def __init__(self, name: str, rate: float) -> None:
        self.name = name
        self.rate = rate
        self.capacity = max(1.0, rate * BURST_SECONDS)
        # What the burst may spend is not refilled within the same second, and a tenth is
        # kept back for requests that arrive at the provider a little closer together than
        # they left.
        self.refill = max(rate * 0.9 - self.capacity, rate / 2)

    @classmethod
    def of(cls, provider: str, kind: str) -> "RequestBudget":
        """The budget for `kind` calls to `provider`, at the rate its settings give."""
        return cls(f"{provider}:{kind}", settings.PROVIDERS[provider][f"{kind}_rate"])

    def __repr__(self) -> str:
        return f"<RequestBudget {self.name} {self.rate:g}/s>"

    def take(self, wanted: int = 1) -> tuple[int, float]:
        """Take up to `wanted` requests now, never waiting: how many were granted (0 to
        `wanted`) and the seconds until the next one could be."""
        return self._draw(wanted, pause=0.0)

    def throttled(self, retry_after: float | None = None) -> None:
        """A 429 arrived: every worker sends nothing more for `retry_after` seconds (a second
        when the provider named none), then the bucket refills at the full rate from empty."""
        pause = retry_after if retry_after is not None and retry_after > 0 else DEFAULT_PAUSE
        self._draw(0, pause=min(pause, MAX_PAUSE))

    def _draw(self, wanted: int, pause: float) -> tuple[int, float]:
        if not settings.REDIS_URL:
            return self._draw_from_file(wanted, pause)
        shared = RedisBuckets.of_this_process(settings.REDIS_URL)
        if time.monotonic() >= shared.down_until:
            try:
                granted, wait = shared.script(
                    keys=[f"darkroom:budget:{self.name}"],
                    args=[self.refill, self.capacity, wanted, pause],
                )
                return int(granted), float(wait)
            except redis.RedisError as exc:
                shared.failed(exc)
        share = RequestBudget(self.name, self.rate / settings.WORKER_MACHINES)
        return share._draw_from_file(wanted, pause)

    def _draw_from_file(self, wanted: int, pause: float) -> tuple[int, float]:
        path = Path(settings.VAR_DIR) / "budget" / self.name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Held for a read and a write of 24 bytes; closing the file releases it.
            fcntl.flock(fd, fcntl.LOCK_EX)
            saved = os.pread(fd, FILE_STATE.size, 0)
            state = FILE_STATE.unpack(saved) if len(saved) == FILE_STATE.size else None
            state, granted, wait = bucket_step(
                state, time.time(), self.refill, self.capacity, wanted, pause
            )
            os.pwrite(fd, FILE_STATE.pack(*state), 0)
        finally:
            os.close(fd)
        return granted, wait


def bucket_step(
    state: tuple[float, float, float] | None,
    now: float,
    rate: float,
    capacity: float,
    wanted: int,
    pause: float,
) -> tuple[tuple[float, float, float], int, float]:
    """BUCKET_SCRIPT's step in Python: the new (tokens, stamp, paused_until), the requests
    granted and the seconds until the next one. No state is a full bucket."""
    tokens, stamp, paused_until = state or (capacity, now, 0.0)
    # A clock that went back refills nothing this once, and then counts from its new time.
    since = max(stamp, paused_until)
    if now > since:
        tokens += (now - since) * rate
    tokens = min(tokens, capacity)
    granted = 0
    if pause > 0:
        tokens = 0.0
        paused_until = max(paused_until, now + pause)
    else:
        granted = min(wanted, int(tokens))
        tokens -= granted
    wait = 0.0 if tokens >= 1 else max(paused_until - now, 0.0) + (1 - tokens) / rate
    return (tokens, now, paused_until), granted, wait


class RedisBuckets:
    """This process's Redis client for the buckets, and whether that Redis failed lately."""

    _current: "RedisBuckets | None" = None

    def __init__(self, url: str) -> None:
        self.pid = os.getpid()
        self.url = url
        client = redis.Redis.from_url(
            url,
            socket_timeout=1,
            socket_connect_timeout=1,
            # redis-py retries ten times by default: a dead Redis would hold take() for seconds.
            retry=Retry(NoBackoff(), 0),
        )
        self.script = client.register_script(BUCKET_SCRIPT)
        # After a failure the buckets are counted in files until then.
        self.down_until = 0.0
        self.warned_at = -WARNING_INTERVAL

    @classmethod
    def of_this_process(cls, url: str) -> "RedisBuckets":
        """One client a process: a forked worker makes its own rather than share sockets."""
        current = cls._current
        if current is None or (current.pid, current.url) != (os.getpid(), url):
            current = cls._current = cls(url)
        return current

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self.down_until = now + REDIS_RETRY_INTERVAL
        if now - self.warned_at >= WARNING_INTERVAL:
            self.warned_at = now
            # The exception's type only: its message may name the Redis URL with its password.
            log.warning(
                "Redis cannot be reached (%s): until it answers, each machine counts its "
                "provider requests on its own, at 1/%d of each rate (WORKER_MACHINES)",
                type(exc).__name__,
                settings.WORKER_MACHINES,
            )
