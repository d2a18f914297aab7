"""Darkroom settings: one module, driven by environment variables with working defaults.

Every variable is listed in the README's configuration table. A malformed value stops start-up
with a message naming the variable, rather than running with a silently different setting.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

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


PRODUCTION = env_bool("DARKROOM_PRODUCTION", False)
DEBUG = env_bool("DEBUG", not PRODUCTION)
SECRET_KEY = env_str("SECRET_KEY") or ("" if PRODUCTION else "darkroom-development-only-key")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DARKROOM_PRODUCTION is on")
ALLOWED_HOSTS = env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "predictions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
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
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "predictions.context_processors.provider",
            ],
        },
    },
]

# SQLite under var/ unless DATABASE_URL names another database (PostgreSQL in production).
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'darkroom.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
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

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
if PRODUCTION:
    # gunicorn serves the collected, hashed static files itself: no CDN, no extra web server.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
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
    },
    "replicate": {
        "label": "Replicate",
        "base_url": env_str("REPLICATE_BASE_URL", "https://api.replicate.com/v1"),
        "token": REPLICATE_API_TOKEN,
        "key_variable": "REPLICATE_API_TOKEN",
    },
    "simulator": {
        "label": "Demo (simulator)",
        "base_url": env_str("SIMULATOR_URL", "http://127.0.0.1:8765/v1"),
        "token": "demo",
        "key_variable": "",
    },
}
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

# A query has been seen taking over 45 s, so reads wait a minute; connecting is quick or dead.
PROVIDER_CONNECT_TIMEOUT = env_float("PROVIDER_CONNECT_TIMEOUT", 5.0)
PROVIDER_READ_TIMEOUT = env_float("PROVIDER_READ_TIMEOUT", 60.0)

# --- Poller ----------------------------------------------------------------------------------
POLL_FIRST_INTERVAL = env_float("POLL_FIRST_INTERVAL", 1.0)
POLL_MAX_INTERVAL = env_float("POLL_MAX_INTERVAL", 30.0)
# The next poll waits this fraction of the prediction's age, so a long job costs few polls.
POLL_AGE_FACTOR = env_float("POLL_AGE_FACTOR", 0.25)
POLL_DEADLINE = env_float("POLL_DEADLINE", 30 * 60.0)
# How long a claimed prediction belongs to one worker: longer than any single request can take.
POLL_LEASE = env_float("POLL_LEASE", PROVIDER_CONNECT_TIMEOUT + PROVIDER_READ_TIMEOUT + 30)
POLL_BATCH = env_int("POLL_BATCH", 200)
SUBMIT_MAX_ATTEMPTS = env_int("SUBMIT_MAX_ATTEMPTS", 5)
DISPATCH_INTERVAL = env_float("DISPATCH_INTERVAL", 1.0)

# --- Celery ----------------------------------------------------------------------------------
# Redis when REDIS_URL is set; otherwise Celery's filesystem broker under var/, no server needed.
REDIS_URL = env_str("REDIS_URL")
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
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
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "dispatch-due-predictions": {
        "task": "predictions.tasks.dispatch_due",
        "schedule": DISPATCH_INTERVAL,
        "options": {"expires": DISPATCH_INTERVAL * 5},
    },
}
