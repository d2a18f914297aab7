"""The project's settings with a poller tuned for tests: jobs take a second, not a minute."""

import os
import uuid

from dashboard.settings import *  # noqa: F403
from dashboard.settings import BROKER_DIR, REDIS_URL, STORAGES, VAR_DIR

POLL_FIRST_INTERVAL = 0.2
POLL_DENSE_INTERVAL = 0.2
POLL_MAX_INTERVAL = 1.0
POLL_LEASE = 4.0
PROVIDER_CONNECT_TIMEOUT = 1.0
PROVIDER_READ_TIMEOUT = 1.5
# A queue of this test session's own, shared with the worker processes it starts.
CELERY_TASK_DEFAULT_QUEUE = os.environ.setdefault(
    "DARKROOM_TEST_QUEUE", f"darkroom-test-{uuid.uuid4().hex[:8]}"
)
# Archived outputs of worker processes (each test moves its own to a temporary folder).
STORAGES = {
    **STORAGES,
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": VAR_DIR / "test-media"},
    },
}
ARCHIVE_RETRY_DELAY = 0.2
ARCHIVE_SWEEP_INTERVAL = 0.5
ARCHIVE_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}-archive"
CELERY_TASK_ROUTES = {"outputs.tasks.archive": {"queue": ARCHIVE_QUEUE}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if not REDIS_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "test-queue"),
        "data_folder_out": str(BROKER_DIR / "test-queue"),
        "processed_folder": str(BROKER_DIR / "test-processed"),
        "control_folder": str(BROKER_DIR / "test-control"),
        "store_processed": False,
        "polling_interval": 0.05,
    }

# Each test's keys in a namespace of its own (tests/cache_keys.py), on the deployment's backend.
CACHES = {  # noqa: F405
    alias: {**config, "KEY_FUNCTION": "tests.cache_keys.make_key"}
    for alias, config in CACHES.items()  # noqa: F405
}
