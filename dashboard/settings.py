"""Darkroom settings: one module, driven by environment variables with working defaults.

Every variable is listed in the README's configuration table. A malformed value stops start-up
with a message naming the variable, rather than running with a silently different setting.
"""

import base64
import hashlib
import ipaddress
import os
import re
import zoneinfo
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("DARKROOM_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name).lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_float(name: str, default: float) -> float:
    value = env_str(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None
    if number < 0:
        raise ImproperlyConfigured(f"{name} must not be negative, not {value!r}")
    return number


def env_int(name: str, default: int) -> int:
    number = env_float(name, default)
    if number != int(number):
        raise ImproperlyConfigured(f"{name} must be a whole number, not {number!r}")
    return int(number)


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_seconds_by_model(name: str) -> dict[str, float]:
    """Seconds per model, written as "owner/name=seconds,owner/name=seconds"."""
    values = {}
    for item in env_list(name):
        model, _, seconds = (part.strip() for part in item.partition("="))
        try:
            number = float(seconds)
        except ValueError:
            number = 0.0
        if "/" not in model or not 0 < number < float("inf"):
            raise ImproperlyConfigured(
                f"{name} must be owner/name=seconds pairs separated by commas, not {item!r}"
            )
        values[model] = number
    return values


def env_rate(name: str, default: str) -> tuple[int, int]:
    """A rate limit written as "count/seconds", e.g. "30/60" for 30 a minute."""
    value = env_str(name, default)
    count, _, seconds = value.partition("/")
    if not (count.isdigit() and seconds.isdigit() and int(count) > 0 and int(seconds) > 0):
        raise ImproperlyConfigured(f"{name} must be count/seconds like 30/60, not {value!r}")
    return int(count), int(seconds)


def env_url(name: str) -> str:
    """An http or https URL, without a trailing slash; empty when unset."""
    value = env_str(name)
    if not value:
        return ""
    try:
        parts = urlsplit(value)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number
        valid = False
    if not valid or parts.query or parts.fragment:
        raise ImproperlyConfigured(
            f"{name} must be an http or https URL like https://darkroom.example.com, not {value!r}"
        )
    return value.rstrip("/")


PRODUCTION = env_bool("DARKROOM_PRODUCTION", False)
DEBUG = env_bool("DEBUG", not PRODUCTION)
SECRET_KEY = env_str("SECRET_KEY") or ("" if PRODUCTION else "darkroom-development-only-key")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DARKROOM_PRODUCTION is on")
ALLOWED_HOSTS = env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

# Provider credentials are stored encrypted with Fernet. The first key encrypts, every key
# decrypts, so a new key is put first and an old one dropped once nothing uses it any more.
ENCRYPTION_KEYS = env_list("DARKROOM_ENCRYPTION_KEYS")
if not ENCRYPTION_KEYS and PRODUCTION:
    raise ImproperlyConfigured(
        "DARKROOM_ENCRYPTION_KEYS must be set when DARKROOM_PRODUCTION is on; generate a key with: "
        'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
    )
if not ENCRYPTION_KEYS:
    # Development only: stable across restarts, and changes (unreadable secrets) with SECRET_KEY.
    derived = hashlib.sha256(f"darkroom-encryption:{SECRET_KEY}".encode()).digest()
    ENCRYPTION_KEYS = [base64.urlsafe_b64encode(derived).decode()]
for position, key in enumerate(ENCRYPTION_KEYS, start=1):
    try:
        Fernet(key)
    except ValueError:
        # The key itself is never part of the message: start-up errors end up in logs.
        raise ImproperlyConfigured(
            f"DARKROOM_ENCRYPTION_KEYS: key {position} of {len(ENCRYPTION_KEYS)} is not a "
            "Fernet key (32 url-safe base64-encoded bytes)"
        ) from None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "accounts",
    "predictions",
    "outputs",
    "costs",
    "timings",
    "webhooks",
    "api",
    "operations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Early, so responses made by the middleware below (CSRF failures, redirects) carry it too.
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    # Before anything reads the URL: no URL of Darkroom's holds a NUL (dashboard/middleware.py).
    "dashboard.middleware.NullCharacterMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.TeamMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Innermost: the page it makes goes out through every middleware above (session, CSRF
    # cookie, messages, Vary), as a view's would.
    "dashboard.middleware.MethodNotAllowedPageMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "predictions.context_processors.provider",
            ],
        },
    },
]

# SQLite under var/ unless DATABASE_URL names another database (PostgreSQL in production).
try:
    DATABASES = {
        "default": dj_database_url.parse(
            env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'darkroom.sqlite3'}",
            conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
            # A kept connection is checked before a request reuses it: one cut by a database
            # restart or failover is replaced, rather than failing that thread's next request.
            conn_health_checks=True,
        )
    }
except ValueError as exc:  # dj_database_url's UnknownSchemeError is one
    raise ImproperlyConfigured(
        f"DATABASE_URL must be a database URL such as postgres://user@host:5432/name ({exc})"
    ) from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE takes the write lock when a transaction starts, so two workers claiming
        # due predictions queue up instead of failing with "database is locked".
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so worker processes started by the tests share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-darkroom.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A server that stopped answering (a host gone, a firewall dropping packets) is given up on
    # in seconds, not the system's TCP timeout of minutes: a request, a probe or a worker's poll
    # fails fast and says why. A URL's own ?connect_timeout= wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5)
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "predictions:index"
LOGOUT_REDIRECT_URL = "accounts:login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
if TIME_ZONE not in zoneinfo.available_timezones():
    raise ImproperlyConfigured(
        f"TIME_ZONE must be an IANA zone such as Europe/Paris, not {TIME_ZONE!r}"
    )
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"

# --- Archived outputs ------------------------------------------------------------------------
# Darkroom's copies of outputs and their thumbnails: files under var/media/ by default, served
# only through team-checked views (never as public media), or any S3-compatible bucket, whose
# own signed URLs the views then redirect to.
MEDIA_ROOT = Path(env_str("DARKROOM_MEDIA_DIR") or VAR_DIR / "media")
S3_BUCKET = env_str("S3_BUCKET")
S3_URL_EXPIRY = env_int("S3_URL_EXPIRY", 300)
if S3_BUCKET:
    default_storage_config = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env_str("S3_ENDPOINT_URL") or None,
            "region_name": env_str("S3_REGION") or None,
            "access_key": env_str("S3_ACCESS_KEY_ID") or None,
            "secret_key": env_str("S3_SECRET_ACCESS_KEY") or None,
            # Private objects, reached only through URLs signed for a few minutes.
            "default_acl": "private",
            "querystring_auth": True,
            "querystring_expire": S3_URL_EXPIRY,
            "file_overwrite": True,
        },
    }
else:
    default_storage_config = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    }
STORAGES = {
    "default": default_storage_config,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Whether the storage hands out signed URLs of its own (S3) rather than files to stream.
ARCHIVE_SIGNED_URLS = bool(S3_BUCKET)
if PRODUCTION:
    # gunicorn serves the collected, hashed static files itself: no CDN, no extra web server.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")
    STORAGES["staticfiles"] = {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}

# The downloader (outputs/download.py): only these hosts (a leading "*." for subdomains), over
# https, at public addresses; the simulator's own origin is trusted for its outputs in demo mode.
OUTPUT_ALLOWED_HOSTS = env_list("OUTPUT_ALLOWED_HOSTS", "replicate.delivery,*.replicate.delivery")
OUTPUT_MAX_BYTES = env_int("OUTPUT_MAX_BYTES", 50 * 1024 * 1024)
OUTPUT_MAX_PIXELS = env_int("OUTPUT_MAX_PIXELS", 64_000_000)
OUTPUT_CONNECT_TIMEOUT = env_float("OUTPUT_CONNECT_TIMEOUT", 5.0)
OUTPUT_READ_TIMEOUT = env_float("OUTPUT_READ_TIMEOUT", 30.0)
OUTPUT_DOWNLOAD_DEADLINE = env_float("OUTPUT_DOWNLOAD_DEADLINE", 120.0)
OUTPUT_MAX_REDIRECTS = env_int("OUTPUT_MAX_REDIRECTS", 3)
# The archive's retries: 5 s, 10 s, 20 s ... at most 10 minutes apart, 13 tries in all: about
# the hour a provider keeps the file.
ARCHIVE_RETRY_DELAY = env_float("ARCHIVE_RETRY_DELAY", 5.0)
ARCHIVE_MAX_RETRY_DELAY = env_float("ARCHIVE_MAX_RETRY_DELAY", 600.0)
ARCHIVE_MAX_ATTEMPTS = env_int("ARCHIVE_MAX_ATTEMPTS", 13)
ARCHIVE_LEASE = env_float("ARCHIVE_LEASE", OUTPUT_CONNECT_TIMEOUT + OUTPUT_DOWNLOAD_DEADLINE + 30)
ARCHIVE_BATCH = env_int("ARCHIVE_BATCH", 50)
ARCHIVE_SWEEP_INTERVAL = env_float("ARCHIVE_SWEEP_INTERVAL", 5.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {
        "hide_share_tokens": {"()": "dashboard.logging.HideShareTokens"},
        "one_line_refusals": {"()": "dashboard.logging.OneLineRefusals"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["hide_share_tokens"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # runserver's request lines, through the handler above (Django's own has no filter).
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.request": {"filters": ["one_line_refusals"]},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # One line per task and per beat tick (every second) drowns everything else.
        "celery.app.trace": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.beat": {"level": "WARNING"},
    },
}

# --- Providers -------------------------------------------------------------------------------
# Each provider speaks the Replicate prediction API under its own base URL. The simulator is the
# built-in demo provider: `make run` starts it, and the tests start their own on a free port.
COMETAPI_KEY = env_str("COMETAPI_KEY")
REPLICATE_API_TOKEN = env_str("REPLICATE_API_TOKEN")
PROVIDERS = {
    "cometapi": {
        "label": "CometAPI",
        "base_url": env_str("COMETAPI_BASE_URL", "https://api.cometapi.com/replicate/v1"),
        "token": COMETAPI_KEY,
        "key_variable": "COMETAPI_KEY",
        # CometAPI's Replicate route sends no webhooks.
        "webhooks": False,
        # Nor does it list an account's predictions (it documents create and query only): a
        # create whose outcome is unknown cannot be looked for there.
        "lists": False,
        "query_rate": env_float("COMETAPI_QUERY_RATE", 50.0),
        "create_rate": env_float("COMETAPI_CREATE_RATE", 10.0),
    },
    "replicate": {
        "label": "Replicate",
        "base_url": env_str("REPLICATE_BASE_URL", "https://api.replicate.com/v1"),
        "token": REPLICATE_API_TOKEN,
        "key_variable": "REPLICATE_API_TOKEN",
        "webhooks": True,
        # `GET /predictions` lists the account's predictions: an unknown outcome is looked for.
        "lists": True,
        "query_rate": env_float("REPLICATE_QUERY_RATE", 50.0),
        "create_rate": env_float("REPLICATE_CREATE_RATE", 10.0),
    },
    "simulator": {
        "label": "Demo (simulator)",
        "base_url": env_str("SIMULATOR_URL", "http://127.0.0.1:8765/v1"),
        # Where browsers reach it, if not at SIMULATOR_URL (its output URLs name this address).
        "public_url": env_str("SIMULATOR_PUBLIC_URL"),
        "token": "demo",
        "key_variable": "",
        "webhooks": True,
        "lists": True,
        "query_rate": env_float("SIMULATOR_QUERY_RATE", 50.0),
        "create_rate": env_float("SIMULATOR_CREATE_RATE", 10.0),
    },
}
# Requests a second that every worker together may send (predictions/budget.py): "query" for
# reading and canceling a prediction, "create" for starting one. The defaults are Replicate's
# published limits, 3,000 and 600 a minute per account.
for name, provider in PROVIDERS.items():
    for kind in ("query", "create"):
        if not 0 < provider[f"{kind}_rate"] < float("inf"):
            raise ImproperlyConfigured(
                f"{name.upper()}_{kind.upper()}_RATE must be a number of requests a second "
                f"above 0, not {provider[f'{kind}_rate']!r}"
            )
# While Redis cannot be reached, each machine that runs workers counts its provider requests on
# its own, at this share of every rate, so that together they still keep within it.
WORKER_MACHINES = env_int("WORKER_MACHINES", 1)
if WORKER_MACHINES < 1:
    raise ImproperlyConfigured(f"WORKER_MACHINES must be 1 or more, not {WORKER_MACHINES}")
DEFAULT_PROVIDER = env_str("DARKROOM_PROVIDER") or (
    "cometapi" if COMETAPI_KEY else "replicate" if REPLICATE_API_TOKEN else "simulator"
)
if DEFAULT_PROVIDER not in PROVIDERS:
    raise ImproperlyConfigured(
        f"DARKROOM_PROVIDER must be one of {', '.join(PROVIDERS)}, not {DEFAULT_PROVIDER!r}"
    )
if not PROVIDERS[DEFAULT_PROVIDER]["token"]:
    raise ImproperlyConfigured(
        f"DARKROOM_PROVIDER is {DEFAULT_PROVIDER} but "
        f"{PROVIDERS[DEFAULT_PROVIDER]['key_variable']} is not set"
    )

# Where providers reach this deployment, e.g. https://darkroom.example.com. With it, creates on a
# provider that sends webhooks ask for them (webhooks/), and a prediction moves on as soon as
# its provider says so instead of at its next poll.
DARKROOM_PUBLIC_URL = env_url("DARKROOM_PUBLIC_URL")

# A query has been seen taking over 45 s, so reads wait a minute; connecting is quick or dead.
PROVIDER_CONNECT_TIMEOUT = env_float("PROVIDER_CONNECT_TIMEOUT", 5.0)
PROVIDER_READ_TIMEOUT = env_float("PROVIDER_READ_TIMEOUT", 60.0)

# --- Poller ----------------------------------------------------------------------------------
# Where a prediction's end is likely (predictions.schedule), polls come this often...
POLL_DENSE_INTERVAL = env_float("POLL_DENSE_INTERVAL", 0.5)
# ...and elsewhere each waits until this share of the predictions still running would have ended.
POLL_SKIP_MASS = env_float("POLL_SKIP_MASS", 0.02)
# Never longer apart than this; past the 99th percentile, this fraction of the time overdue.
POLL_MAX_INTERVAL = env_float("POLL_MAX_INTERVAL", 30.0)
POLL_AGE_FACTOR = env_float("POLL_AGE_FACTOR", 0.25)
# A prediction whose provider sends webhooks is only polled this often, as a safety net.
POLL_WEBHOOK_INTERVAL = env_float("POLL_WEBHOOK_INTERVAL", 30.0)
# The first retry after a failed request; each next one waits twice as long.
POLL_FIRST_INTERVAL = env_float("POLL_FIRST_INTERVAL", 1.0)
# A prediction still running this long after the provider accepted it is timed out and canceled;
# a model known to run longer gets its own deadline.
POLL_DEADLINE = env_float("POLL_DEADLINE", 30 * 60.0)
POLL_DEADLINES = env_seconds_by_model("POLL_DEADLINES")
# How long a claimed prediction belongs to one poller without news from it: its poller renews
# the lease every third of it, so a dead worker's predictions are polled again within it.
POLL_LEASE = env_float("POLL_LEASE", 10.0)
# Each poller claims what is due this far ahead, and sends each request when it is due.
POLL_LOOKAHEAD = env_float("POLL_LOOKAHEAD", 1.0)
POLL_BATCH = env_int("POLL_BATCH", 200)
# Requests one poller has on their way at once (a stalled one holds a thread), and predictions
# it holds in all.
POLL_THREADS = env_int("POLL_THREADS", 8)
POLL_CAPACITY = env_int("POLL_CAPACITY", 2000)
SUBMIT_MAX_ATTEMPTS = env_int("SUBMIT_MAX_ATTEMPTS", 5)

# --- Celery ----------------------------------------------------------------------------------
# Redis when REDIS_URL is set; otherwise Celery's filesystem broker under var/, no server needed.
REDIS_URL = env_str("REDIS_URL")
BROKER_DIR = VAR_DIR / "broker"
# The filesystem broker needs no host; naming one keeps kombu from warning that none was given.
CELERY_BROKER_URL = REDIS_URL or "filesystem://localhost//"
if not REDIS_URL:
    CELERY_BROKER_TRANSPORT = "dashboard.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # How often workers look for new message files; listing a folder is cheap.
        "polling_interval": 0.2,
    }
CELERY_TASK_IGNORE_RESULT = True
# Downloads take seconds to minutes, and polls must never wait behind them: archive attempts go
# to a queue of their own, served by a worker of its own (`make run` and compose start one).
CELERY_TASK_DEFAULT_QUEUE = "celery"
ARCHIVE_QUEUE = "archive"
CELERY_TASK_ROUTES = {"outputs.tasks.archive": {"queue": ARCHIVE_QUEUE}}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat keeps its schedule in memory: it needs no writable file, and any number of beats may run
# (every sweep takes leases). Polling needs no beat at all: every worker process has a poller.
CELERY_BEAT_SCHEDULER = "celery.beat:Scheduler"
CELERY_BEAT_SCHEDULE = {
    "archive-due-outputs": {
        "task": "outputs.tasks.archive_due",
        "schedule": ARCHIVE_SWEEP_INTERVAL,
        "options": {"expires": ARCHIVE_SWEEP_INTERVAL * 5},
    },
    # Saving a price rule wakes the repricer itself: this sweep is for lost wake-ups and for
    # workers that died mid-repricing (their lease, costs.models.REPRICING_LEASE, runs out).
    "reprice-due-costs": {
        "task": "costs.tasks.reprice_due",
        "schedule": 10.0,
        "options": {"expires": 50.0},
    },
    # Folds the samples of ended predictions into their models' learned timings (timings/).
    "learn-model-timings": {
        "task": "timings.tasks.learn",
        "schedule": 10.0,
        "options": {"expires": 50.0},
    },
    "forget-old-webhook-deliveries": {
        "task": "webhooks.tasks.forget_old_deliveries",
        "schedule": 3600.0,
        "options": {"expires": 600.0},
    },
}

# --- Webhooks to API clients (webhooks/outgoing.py) ------------------------------------------
# Whether API clients' webhooks may go to private, loopback, link-local and other non-public
# addresses: only for a deployment whose clients are on its own network, and tests.
WEBHOOKS_ALLOW_PRIVATE = env_bool("WEBHOOKS_ALLOW_PRIVATE", False)
# Seconds between the scheduler's sweeps that send due webhooks and look for running
# predictions' progress (a poll that only brings more logs tells no one by itself).
WEBHOOKS_SWEEP_INTERVAL = env_float("WEBHOOKS_SWEEP_INTERVAL", 1.0)
CELERY_BEAT_SCHEDULE["send-due-webhooks"] = {
    "task": "webhooks.tasks.send_due",
    "schedule": WEBHOOKS_SWEEP_INTERVAL,
    "options": {"expires": WEBHOOKS_SWEEP_INTERVAL * 5},
}
CELERY_BEAT_SCHEDULE["forget-old-outgoing-webhooks"] = {
    "task": "webhooks.tasks.forget_old_outgoing_webhooks",
    "schedule": 3600.0,
    "options": {"expires": 600.0},
}

# --- The API (api/) ----------------------------------------------------------------------------
# The longest a create may hold its answer for `Prefer: wait` (Replicate's limit is 60 s). A
# waiting request holds its web worker's thread, but no database connection between its looks.
API_MAX_WAIT = env_int("API_MAX_WAIT", 60)
# How many requests of one web process may wait at once: beyond it a create answers at once, as
# without `Prefer: wait`, so that a few waiting clients never take every thread (gunicorn runs 16
# a process in the Dockerfile and docker-compose.yml).
API_MAX_WAITING = env_int("API_MAX_WAITING", 8)
# Seconds an output's signed link in an API answer opens the archived file, like the hour a
# provider keeps its own; asking for the prediction again gives fresh links.
API_FILE_URL_EXPIRY = env_int("API_FILE_URL_EXPIRY", 3600)

# --- Web security ----------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Sessions are read from the cache and written through to the database: a live list's
# once-a-second question costs no session query, and a flushed or dead cache signs nobody out
# (dashboard/sessions.py).
SESSION_ENGINE = "dashboard.sessions"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 365 * 24 * 3600
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    # Only behind a proxy that sets this header itself: otherwise any client could claim HTTPS.
    if env_bool("TRUST_X_FORWARDED_PROTO", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Until an output is archived, browsers load it straight from the provider, so those hosts are
# image sources: the simulator, and replicate.delivery (Replicate's outputs, and CometAPI's,
# which are Replicate's). With a bucket, archived copies load from its signed URLs.
simulator_url = urlsplit(PROVIDERS["simulator"]["base_url"])
bucket_origin = ""
if S3_BUCKET:
    bucket_url = urlsplit(env_str("S3_ENDPOINT_URL") or "https://*.amazonaws.com")
    bucket_origin = f",{bucket_url.scheme}://{bucket_url.netloc}"
CSP_IMG_SOURCES = env_list(
    "CSP_IMG_SOURCES",
    f"{simulator_url.scheme}://{simulator_url.netloc},https://replicate.delivery,"
    f"https://*.replicate.delivery{bucket_origin}",
)
for source in CSP_IMG_SOURCES:
    # Anything else (a quote, a ";") would change the policy rather than add a host to it.
    if not re.fullmatch(r"https?://(\[[0-9a-fA-F:]+\]|[\w.*-]+)(:(\d+|\*))?", source):
        raise ImproperlyConfigured(
            f"CSP_IMG_SOURCES entries must be origins like https://images.example.com, "
            f"not {source!r}"
        )
# Scripts only from our own static files, and only from tags this response rendered: htmx runs
# with allowEval off and never executes scripts found in swapped HTML (templates/base.html).
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:", *CSP_IMG_SOURCES],
    "media-src": [CSP.SELF, *CSP_IMG_SOURCES],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

# --- Email -----------------------------------------------------------------------------------
# Mail (password resets) goes out by SMTP when EMAIL_HOST is set. Without it development prints
# mail to the console, and production hands it to a mail server on localhost:25, Django's own
# default: a console mailer in production loses mail, and Django's deploy check refuses it.
# Django 6.1's MAILERS replaces the EMAIL_* settings, so none of those is defined here.
email_host = env_str("EMAIL_HOST")
if email_host or PRODUCTION:
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": email_host or "localhost",
                "port": env_int("EMAIL_PORT", 587 if email_host else 25),
                "username": env_str("EMAIL_HOST_USER"),
                "password": env_str("EMAIL_HOST_PASSWORD"),
                "use_tls": env_bool("EMAIL_USE_TLS", bool(email_host)),
                # Mail is sent inside a web request: a dead server must not hold it forever.
                "timeout": 10,
            },
        }
    }
else:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Darkroom <darkroom@localhost>")

# --- Cache and rate limits -------------------------------------------------------------------
# The cache holds the rate-limit counters, so every web process must see the same one: Redis
# when there is one, else files under var/ (shared by the processes of one machine, which
# locmem is not). The prefix keeps cache keys apart from Celery's in a shared Redis database.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "darkroom",
            # A dead Redis answers at once rather than holding a request.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
            # Past MAX_ENTRIES the file cache deletes random entries, counters included; the
            # default of 300 would let a burst of new usernames wipe everyone's counters.
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        }
    }
# (count, seconds): failed sign-ins per username and per client address; submissions per
# member and per team.
LOGIN_RATE_LIMIT = env_rate("LOGIN_RATE_LIMIT", "5/900")
LOGIN_RATE_LIMIT_IP = env_rate("LOGIN_RATE_LIMIT_IP", "20/900")
SUBMIT_RATE_LIMIT_MEMBER = env_rate("SUBMIT_RATE_LIMIT_MEMBER", "30/60")
SUBMIT_RATE_LIMIT_TEAM = env_rate("SUBMIT_RATE_LIMIT_TEAM", "120/60")

# --- Inputs (predictions/forms.py) -----------------------------------------------------------
# What one prediction's input may hold, on the New images form and the API alike, checked
# before anything is saved: its size as UTF-8 JSON, how deeply objects and lists nest in it (the
# input object itself is the first level), and its longest text. The database keeps the input
# and its page shows it as JSON and as a Python snippet: neither should meet what no model takes.
INPUT_MAX_BYTES = env_int("INPUT_MAX_BYTES", 256 * 1024)
INPUT_MAX_DEPTH = env_int("INPUT_MAX_DEPTH", 16)
INPUT_MAX_STRING = env_int("INPUT_MAX_STRING", 65_536)
# Past its free failures a username or an address waits 1 s, 2 s, 4 s ... at most this long
# before each next attempt; nothing locks an account for longer (accounts/ratelimit.py).
LOGIN_MAX_DELAY = env_int("LOGIN_MAX_DELAY", 60)
if LOGIN_MAX_DELAY < 1:
    raise ImproperlyConfigured(f"LOGIN_MAX_DELAY must be 1 second or more, not {LOGIN_MAX_DELAY}")
# Password-reset requests per client address, and mails per email address (counted whether or
# not an account has it, so the limit tells nothing about who has an account).
PASSWORD_RESET_RATE_LIMIT = env_rate("PASSWORD_RESET_RATE_LIMIT", "5/3600")
PASSWORD_RESET_RATE_LIMIT_EMAIL = env_rate("PASSWORD_RESET_RATE_LIMIT_EMAIL", "3/3600")

# --- Proxies -----------------------------------------------------------------------------------
# Proxies whose X-Forwarded-For is believed (dashboard/clients.py): without them, every request
# behind a proxy would share the proxy's address, and one person's failed sign-ins would delay
# everyone; trusted blindly, a client could name any address it likes.
TRUSTED_PROXIES = []
for network in env_list("TRUSTED_PROXIES"):
    try:
        TRUSTED_PROXIES.append(ipaddress.ip_network(network, strict=False))
    except ValueError:
        raise ImproperlyConfigured(
            "TRUSTED_PROXIES must be addresses or networks separated by commas, like "
            f"10.0.0.0/8,192.0.2.10, not {network!r}"
        ) from None

# --- Database outages ------------------------------------------------------------------------
# Before the first middleware that reads the database: an outage answers a 503 page that keeps
# what was typed (dashboard/outage.py), not a 500.
MIDDLEWARE.insert(
    MIDDLEWARE.index("accounts.middleware.TeamMiddleware"),
    "dashboard.outage.DatabaseOutageMiddleware",
)

# --- Operations (operations/) ------------------------------------------------------------------
# /metrics answers a scraper that sends this as `Authorization: Bearer <token>`; unset, it is off.
METRICS_TOKEN = env_str("METRICS_TOKEN")
# /healthz answers 503 when no worker's poller has stamped its heartbeat (every few seconds) for
# this long, when a prediction's next step is this late, or an output to archive is.
HEALTH_MAX_HEARTBEAT_AGE = env_float("HEALTH_MAX_HEARTBEAT_AGE", 30.0)
HEALTH_MAX_POLL_DELAY = env_float("HEALTH_MAX_POLL_DELAY", 120.0)
HEALTH_MAX_ARCHIVE_DELAY = env_float("HEALTH_MAX_ARCHIVE_DELAY", 600.0)
# Probes and scrapers often speak plain HTTP inside the deployment's network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
# The broker in a Redis database or instance of its own: flushing or evicting what REDIS_URL
# holds (the cache: rate limits, sessions; the request budget) never touches a queued message.
BROKER_URL = env_str("BROKER_URL")
if BROKER_URL:
    if not REDIS_URL:
        raise ImproperlyConfigured(
            "BROKER_URL needs REDIS_URL (the cache and the request budget) to be set too"
        )
    CELERY_BROKER_URL = BROKER_URL
# JSON log lines, one object a line, with the prediction a line is about as a field of its own.
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")
LOGGING["formatters"]["json"] = {"()": "operations.logs.JsonFormatter"}
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT
# Django's refusals of a client's request (a Host not in ALLOWED_HOSTS, too many fields, a body
# too big) are one warning line, not an error with a traceback.
LOGGING["filters"]["one_line_suspicious"] = {"()": "operations.logs.OneLineSuspiciousRequests"}
LOGGING["handlers"]["console"]["filters"].append("one_line_suspicious")
