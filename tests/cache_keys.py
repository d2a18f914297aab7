"""Cache keys in the running test's own namespace, which `fresh_cache` (tests/conftest.py)
renews for each test: no count or marker of one test is another's, and no test needs a cache
backend of its own (each new one opened a Redis connection pool that outlived its test)."""

namespace = "session"


def make_key(key: str, key_prefix: str, version: int) -> str:
    return f"{key_prefix}:{namespace}:{version}:{key}"
