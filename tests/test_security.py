"""Cross-cutting web security: the Content Security Policy, production settings, rate limits.

Production settings are read by fresh processes started with a production environment, as a
deployment starts; the limiter runs against whichever cache the settings configure (Redis when
REDIS_URL is set, else files), and CI runs the suite with both.
"""

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.cache import cache, caches
from django.test import Client

from accounts import ratelimit

from . import cache_keys
from .conftest import make_prediction

BASE_DIR = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("REDIS_URL", "").strip()


# --- Content Security Policy -----------------------------------------------------------------


def policy_of(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    return {name: values for name, *values in (d.split() for d in header.split(";"))}


def assert_strict_csp_with_matching_nonce(response) -> None:
    """The page's scripts all carry the nonce its header allows, and nothing inline or eval'd."""
    script_src = policy_of(response)["script-src"]
    assert "'unsafe-inline'" not in script_src
    assert "'unsafe-eval'" not in script_src
    nonces = [value for value in script_src if value.startswith("'nonce-")]
    assert len(nonces) == 1, script_src
    nonce = nonces[0].removeprefix("'nonce-").removesuffix("'")
    scripts = re.findall(r"<script\b[^>]*>", response.content.decode())
    assert scripts, "expected the htmx script tag"
    for tag in scripts:
        assert f'nonce="{nonce}"' in tag, tag


def test_every_page_sends_a_strict_csp_whose_nonce_is_the_one_on_its_scripts(client):
    prediction = make_prediction(status="succeeded", output=["https://replicate.delivery/a.webp"])
    pages = ["/", prediction.get_absolute_url()]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response["Content-Type"].startswith("text/html")
        assert_strict_csp_with_matching_nonce(response)

    signed_out = Client().get("/sign-in/")
    assert signed_out.status_code == 200
    assert_strict_csp_with_matching_nonce(signed_out)


def test_each_response_gets_a_nonce_of_its_own(client):
    first = policy_of(client.get("/"))["script-src"]
    second = policy_of(client.get("/"))["script-src"]
    assert first != second


def test_the_policy_allows_only_our_own_origin_and_the_provider_image_hosts(client, settings):
    policy = policy_of(client.get("/"))
    assert policy["default-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["form-action"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["img-src"] == ["'self'", "data:", *settings.CSP_IMG_SOURCES]


def test_htmx_fragments_and_redirects_carry_the_policy_too(client):
    fragment = client.get("/", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.content.decode()
    assert policy_of(fragment)["frame-ancestors"] == ["'none'"]

    redirect = Client().get("/")
    assert redirect.status_code == 302
    assert policy_of(redirect)["script-src"] == ["'self'"]


def test_pages_refuse_framing_sniffing_and_cross_origin_referrers(client):
    response = client.get("/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


# --- Production settings ---------------------------------------------------------------------


def production_env(**overrides: str) -> dict[str, str]:
    """A production environment as in the README, and nothing else from this test run."""
    kept = {
        name: os.environ[name]
        for name in ("PATH", "DARKROOM_VAR_DIR", "DATABASE_URL", "REDIS_URL")
        if name in os.environ
    }
    env = {
        **kept,
        "DARKROOM_PRODUCTION": "true",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DARKROOM_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "darkroom.example.com",
        **overrides,
    }
    return {name: value for name, value in env.items() if value is not None}


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_in(env: dict[str, str], *names: str) -> dict:
    """The named settings as a process started with `env` sees them."""
    script = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n, None) for n in {names!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=BASE_DIR,
        env={**env, "DJANGO_SETTINGS_MODULE": "dashboard.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_deploy_check_finds_nothing_to_fix_in_production():
    result = manage(production_env(), "check", "--deploy")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "System check identified no issues (0 silenced).\n"
    assert result.stderr == ""


def test_production_does_not_start_without_an_encryption_key():
    result = manage(production_env(DARKROOM_ENCRYPTION_KEYS=None), "check")
    assert result.returncode != 0
    assert "DARKROOM_ENCRYPTION_KEYS must be set when DARKROOM_PRODUCTION is on" in result.stderr
    assert "Fernet.generate_key().decode()" in result.stderr


def test_production_does_not_start_without_a_secret_key():
    result = manage(production_env(SECRET_KEY=None), "check")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DARKROOM_PRODUCTION is on" in result.stderr


def test_a_malformed_encryption_key_stops_start_up_without_being_printed():
    bad = f"not-a-fernet-key-{secrets.token_hex(8)}"
    keys = f"{Fernet.generate_key().decode()},{bad}"
    result = manage(production_env(DARKROOM_ENCRYPTION_KEYS=keys), "check")
    assert result.returncode != 0
    assert "DARKROOM_ENCRYPTION_KEYS: key 2 of 2 is not a Fernet key" in result.stderr
    assert bad not in result.stderr + result.stdout


def test_production_turns_on_secure_cookies_hsts_and_the_https_redirect():
    values = settings_in(
        production_env(),
        "DEBUG",
        "SECURE_SSL_REDIRECT",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SESSION_COOKIE_HTTPONLY",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "SECURE_PROXY_SSL_HEADER",
    )
    assert values == {
        "DEBUG": False,
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SECURE_HSTS_SECONDS": 365 * 24 * 3600,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        # Trusting X-Forwarded-Proto without a proxy would let any client claim HTTPS.
        "SECURE_PROXY_SSL_HEADER": None,
    }


def test_a_proxy_is_trusted_for_https_and_origins_only_when_configured():
    values = settings_in(
        production_env(
            TRUST_X_FORWARDED_PROTO="true",
            CSRF_TRUSTED_ORIGINS="https://darkroom.example.com, https://*.example.com",
            SECURE_SSL_REDIRECT="false",
        ),
        "SECURE_PROXY_SSL_HEADER",
        "CSRF_TRUSTED_ORIGINS",
        "SECURE_SSL_REDIRECT",
    )
    assert values == {
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "CSRF_TRUSTED_ORIGINS": ["https://darkroom.example.com", "https://*.example.com"],
        "SECURE_SSL_REDIRECT": False,
    }


def test_encryption_keys_rotate_with_the_first_one_encrypting():
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env = production_env(DARKROOM_ENCRYPTION_KEYS=f"{new}, {old}")
    assert settings_in(env, "ENCRYPTION_KEYS") == {"ENCRYPTION_KEYS": [new, old]}


def test_development_derives_one_stable_encryption_key_from_the_secret_key():
    def development_key(secret_key: str) -> list[str]:
        env = production_env(
            DARKROOM_PRODUCTION="false", SECRET_KEY=secret_key, DARKROOM_ENCRYPTION_KEYS=None
        )
        return settings_in(env, "ENCRYPTION_KEYS")["ENCRYPTION_KEYS"]

    first = development_key("one development key")
    assert len(first) == 1
    Fernet(first[0])
    assert development_key("one development key") == first
    assert development_key("another development key") != first


def test_rate_limits_are_read_as_count_per_seconds_and_malformed_ones_stop_start_up():
    env = production_env(SUBMIT_RATE_LIMIT_MEMBER="10/30")
    defaults = settings_in(
        env,
        "LOGIN_RATE_LIMIT",
        "LOGIN_RATE_LIMIT_IP",
        "SUBMIT_RATE_LIMIT_MEMBER",
        "SUBMIT_RATE_LIMIT_TEAM",
    )
    assert defaults == {
        "LOGIN_RATE_LIMIT": [5, 900],
        "LOGIN_RATE_LIMIT_IP": [20, 900],
        "SUBMIT_RATE_LIMIT_MEMBER": [10, 30],
        "SUBMIT_RATE_LIMIT_TEAM": [120, 60],
    }

    result = manage(production_env(SUBMIT_RATE_LIMIT_TEAM="120 a minute"), "check")
    assert result.returncode != 0
    assert "SUBMIT_RATE_LIMIT_TEAM must be count/seconds like 30/60" in result.stderr


def test_images_may_come_from_the_simulator_and_replicate_delivery_by_default():
    env = production_env(SIMULATOR_URL="http://simulator.internal:8765/v1")
    img_src = settings_in(env, "SECURE_CSP")["SECURE_CSP"]["img-src"]
    assert img_src == [
        "'self'",
        "data:",
        "http://simulator.internal:8765",
        "https://replicate.delivery",
        "https://*.replicate.delivery",
    ]


def test_configured_image_sources_replace_the_defaults_and_cannot_inject_directives():
    env = production_env(CSP_IMG_SOURCES="https://images.example.com,http://[::1]:8765")
    img_src = settings_in(env, "SECURE_CSP")["SECURE_CSP"]["img-src"]
    assert img_src == ["'self'", "data:", "https://images.example.com", "http://[::1]:8765"]

    injected = production_env(CSP_IMG_SOURCES="https://images.example.com; script-src *")
    result = manage(injected, "check")
    assert result.returncode != 0
    assert "CSP_IMG_SOURCES entries must be origins" in result.stderr


def test_mail_is_printed_in_development_and_sent_by_smtp_in_production():
    development = production_env(DARKROOM_PRODUCTION="false", SECRET_KEY=None)
    assert settings_in(development, "MAILERS")["MAILERS"] == {
        "default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}
    }

    production = settings_in(production_env(), "MAILERS")["MAILERS"]["default"]
    assert production["BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"
    assert production["OPTIONS"]["host"] == "localhost"

    smtp = production_env(
        EMAIL_HOST="smtp.example.com",
        EMAIL_HOST_USER="darkroom",
        EMAIL_HOST_PASSWORD="hunter2",
        DEFAULT_FROM_EMAIL="team@example.com",
    )
    values = settings_in(smtp, "MAILERS", "DEFAULT_FROM_EMAIL")
    assert values["MAILERS"]["default"]["OPTIONS"] == {
        "host": "smtp.example.com",
        "port": 587,
        "username": "darkroom",
        "password": "hunter2",
        "use_tls": True,
        "timeout": 10,
    }
    assert values["DEFAULT_FROM_EMAIL"] == "team@example.com"


# --- Rate limits -----------------------------------------------------------------------------

# Each test counts in a cache namespace of its own (the fresh_cache fixture in conftest.py).
# Windows are aligned to the clock; one this long does not end in the middle of a test.
DAY = 24 * 3600


def test_the_cache_is_redis_when_there_is_one_else_files_shared_by_processes(settings):
    expected = "RedisCache" if REDIS_URL else "FileBasedCache"
    assert settings.CACHES["default"]["BACKEND"].endswith(expected)
    assert type(caches["default"]).__name__ == expected


def test_the_limiter_allows_count_hits_per_window_then_refuses_with_a_retry_after():
    decisions = [ratelimit.hit("submit-member", "7", (3, DAY)) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.retry_after for d in decisions[:3]] == [0, 0, 0]
    assert 0 < decisions[3].retry_after <= DAY


def test_two_keys_and_two_scopes_do_not_share_a_budget():
    for _ in range(2):
        ratelimit.hit("login-user", "alice", (2, DAY))
    assert not ratelimit.hit("login-user", "alice", (2, DAY)).allowed
    assert ratelimit.hit("login-user", "bob", (2, DAY)).allowed
    assert ratelimit.hit("login-ip", "alice", (2, DAY)).allowed


def test_peek_does_not_count_and_reset_gives_the_budget_back():
    limit = (2, DAY)
    for _ in range(5):
        assert ratelimit.peek("login-user", "carol", limit).allowed
    ratelimit.hit("login-user", "carol", limit)
    ratelimit.hit("login-user", "carol", limit)
    refused = ratelimit.peek("login-user", "carol", limit)
    assert not refused.allowed
    assert 0 < refused.retry_after <= DAY

    ratelimit.reset("login-user", "carol", limit)
    assert ratelimit.peek("login-user", "carol", limit).allowed


def test_a_new_window_brings_a_new_budget():
    limit = (1, 2)
    time.sleep(2 - time.time() % 2)  # start at the beginning of a window
    assert ratelimit.hit("submit-team", "3", limit).allowed
    refused = ratelimit.hit("submit-team", "3", limit)
    assert not refused.allowed
    assert refused.retry_after in (1, 2)
    time.sleep(refused.retry_after)
    assert ratelimit.hit("submit-team", "3", limit).allowed


@pytest.mark.skipif(not REDIS_URL, reason="the file cache does not promise atomic counters")
def test_concurrent_hits_on_redis_never_exceed_the_budget():
    allowed = []

    def burst() -> None:
        for _ in range(10):
            allowed.append(ratelimit.hit("submit-team", "9", (25, DAY)).allowed)

    threads = [threading.Thread(target=burst) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 80
    assert allowed.count(True) == 25


@pytest.mark.skipif(not REDIS_URL, reason="the file cache names its files by a hash anyway")
def test_cache_keys_name_no_username_or_address_in_clear(settings):
    ratelimit.hit("login-user", "dora@example.com", (5, DAY))
    ratelimit.hit("login-ip", "203.0.113.9", (5, DAY))
    client = cache._cache.get_client(write=False)
    prefix = f"{settings.CACHES['default']['KEY_PREFIX']}:{cache_keys.namespace}:"  # this test's
    keys = [key.decode() for key in client.keys(f"{prefix}*")]
    assert len(keys) == 2
    assert not any("dora" in key or "203.0.113" in key for key in keys)
