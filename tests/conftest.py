"""Fixtures: a simulator on a free port, real Celery workers, and a scheduler that ticks like beat.

Nothing here patches Darkroom's code: the provider is the simulator over a real socket, and work
is done by real workers consuming a real broker (Redis when REDIS_URL is set, else the embedded
filesystem broker), each test session on a queue of its own.
"""

import hashlib
import importlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker, test_worker_stopped
from django.apps import apps as django_apps
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models.signals import post_migrate
from django.utils import timezone
from PIL import Image

from accounts.models import Membership, Role, Team
from costs.tasks import reprice_due
from dashboard.celery import app as celery_app
from outputs.download import IMAGE_FORMATS
from outputs.models import ArchiveState, Output, store_copy
from outputs.tasks import archive_due
from predictions.models import RUNNING, Prediction
from predictions.poller import stop_poller
from predictions.simulator import Faults, Simulator
from predictions.tasks import dispatch_due, stop_in_worker
from timings.learned import cache as learned_timings
from timings.tasks import learn as learn_timings

from . import cache_keys

BASE_DIR = Path(__file__).resolve().parent.parent
User = get_user_model()


def configure_provider(settings, name: str, **changes) -> None:
    """Change one provider's configuration (base_url, token, ...) for the current test."""
    settings.PROVIDERS = {**settings.PROVIDERS, name: {**settings.PROVIDERS[name], **changes}}


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    """A cache namespace of each test's own (tests/cache_keys.py): no rate-limit counts leak
    between tests, and nothing flushes Redis, which may carry the broker's messages too.
    Learned timings are read again from each test's own database."""
    cache_keys.namespace = uuid.uuid4().hex
    learned_timings.clear()


@test_worker_stopped.connect
def stop_a_test_workers_poller(**kwargs) -> None:
    """A test worker stops its poller as a deployed one does: it sends this signal where a
    deployed worker sends `worker_shutdown`, once its consumer has stopped and before the test's
    database is emptied."""
    stop_in_worker()


@pytest.fixture(autouse=True)
def no_poller_left_behind() -> Iterator[None]:
    """A poller started in this process (by an in-process worker, or a dispatch it consumed
    late) outlives the worker's consumer: it stops with the test that started it."""
    yield
    stop_poller()


@pytest.fixture(scope="session", autouse=True)
def seeded_prices_after_every_flush() -> Iterator[None]:
    """The deployment's price rules that migration costs 0002 seeds, in every test's database.

    A transactional test (the worker fixtures', a live server's) empties every table when it
    ends. Django then sends post_migrate, as `migrate` does, which brings back content types and
    permissions but no data migration's rows: without this, only the tests that happened to run
    before the first transactional one would have the seeded prices."""
    seed = importlib.import_module("costs.migrations.0002_seed_price_rules").seed_price_rules

    def reseed(sender, **kwargs) -> None:
        seed(django_apps, None)  # it inserts what is missing, and nothing twice

    post_migrate.connect(reseed, sender=django_apps.get_app_config("costs"))
    yield
    post_migrate.disconnect(reseed, sender=django_apps.get_app_config("costs"))


@pytest.fixture
def simulator(settings) -> Iterator[Simulator]:
    """A fast simulator (jobs of about a second) that Darkroom's demo provider points at, its
    control endpoints (faults, stats) open to the test."""
    sim = Simulator(speed=40.0, seed=1234, faults=Faults(), control=True).start()
    configure_provider(settings, "simulator", base_url=sim.base_url)
    # As SIMULATOR_URL would: the pages may show images from the simulator's origin.
    csp = django_settings.SECURE_CSP
    settings.SECURE_CSP = {**csp, "img-src": [*csp["img-src"], sim.url]}
    yield sim
    sim.stop()


@pytest.fixture(scope="session", autouse=True)
def celery_queues() -> Iterator[list[str]]:
    """This session's queues, for predictions and for archiving (see tests/settings.py),
    deleted with whatever is left in them."""
    queues = [celery_app.conf.task_default_queue, django_settings.ARCHIVE_QUEUE]
    yield queues
    with celery_app.connection_for_write() as conn:
        for queue in queues:
            conn.default_channel.queue_delete(queue)


@pytest.fixture
def worker(transactional_db, celery_queues, simulator) -> Iterator[None]:
    """A real Celery worker in this process, consuming the test queues with four threads."""
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        queues=celery_queues,
        loglevel="WARNING",
    ):
        yield


@pytest.fixture
def scheduler(celery_queues) -> Iterator[None]:
    """Sends `dispatch_due`, `archive_due`, `reprice_due` and timings' `learn` every 0.2 s
    through the broker, as celery beat does in production."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.2):
            dispatch_due.delay()
            archive_due.delay()
            reprice_due.delay()
            learn_timings.delay()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


class WorkerProcess:
    """`celery worker` as a separate OS process, so a test can kill it like a crashed host."""

    def __init__(self, queue: str, simulator: Simulator) -> None:
        db = connection.settings_dict
        if db["ENGINE"].endswith("sqlite3"):
            database_url = f"sqlite:///{db['NAME']}"
        else:
            database_url = (
                f"postgres://{db['USER']}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}"
                f"/{db['NAME']}"
            )
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url,
            "SIMULATOR_URL": simulator.base_url,
        }
        self.queue = queue
        self.process: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "dashboard",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                "4",
                "--queues",
                self.queue,
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=BASE_DIR,
            env=self.env,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to finish or acknowledge anything."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker_process(transactional_db, celery_queues, simulator) -> Iterator[Callable]:
    """Starts worker processes on demand; stops whatever is left at the end of the test."""
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        started.append(WorkerProcess(",".join(celery_queues), simulator).start())
        return started[-1]

    yield start
    for process in started:
        process.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {message or condition}")


def wait_until_finished(*predictions: Prediction, timeout: float = 20.0) -> None:
    pks = [p.pk for p in predictions]

    def all_finished() -> bool:
        return not Prediction.objects.filter(pk__in=pks, status__in=RUNNING).exists()

    wait_for(all_finished, timeout, f"predictions {pks} to finish")
    for prediction in predictions:
        prediction.refresh_from_db()


def make_team(name: str = "Studio") -> Team:
    return Team.objects.get_or_create(name=name)[0]


def make_user(username: str, team: Team | None = None, role: str = Role.MEMBER):
    user = User.objects.create_user(username, f"{username}@example.com", "correct horse 42")
    if team is not None:
        Membership.objects.create(team=team, user=user, role=role)
    return user


@pytest.fixture
def team(db) -> Team:
    return make_team()


@pytest.fixture
def member(team):
    return make_user("mia", team, Role.MEMBER)


@pytest.fixture
def client(client, member):
    """A browser signed in as a member of the Studio team."""
    client.force_login(member)
    return client


def make_prediction(prompt: str = "a lighthouse at dusk", **fields) -> Prediction:
    """A saved prediction of the Studio team, due to be sent, as the submit view leaves it."""
    fields.setdefault("team", make_team())
    fields.setdefault("provider", "simulator")
    fields.setdefault("model", "black-forest-labs/flux-schnell")
    fields.setdefault("input", {"prompt": prompt})
    return Prediction.objects.create(**fields)


@pytest.fixture(autouse=True)
def media_storage(settings, tmp_path) -> Path:
    """Archived outputs of each test in a folder of its own."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "media"},
        },
    }
    return tmp_path / "media"


def small_png(size: tuple[int, int], seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, tuple(seed.to_bytes(3, "big"))).save(buffer, "PNG")
    return buffer.getvalue()


def copy_of(image: bytes) -> dict:
    """The fields the archiver stores for a copy whose content is `image`, and the copy itself
    stored as the archiver stores it (the file and its thumbnails, named by SHA-256)."""
    with Image.open(io.BytesIO(image)) as decoded:
        content_type, extension = IMAGE_FORMATS[decoded.format]
        width, height = decoded.size
    fields = {
        "state": ArchiveState.ARCHIVED,
        "reason": "",
        "next_attempt_at": None,
        "archived_at": timezone.now(),
        "sha256": hashlib.sha256(image).hexdigest(),
        "content_type": content_type,
        "extension": extension,
        "bytes": len(image),
        "width": width,
        "height": height,
    }
    store_copy(Output(**fields), image)
    return fields


def make_output(prediction: Prediction, *, image: bytes | None = None, index: int | None = None):
    """An archived output of `prediction`, without a download. `image`: the file's bytes (PNG,
    JPEG, WebP or GIF); by default a small PNG of this output's own, so no two share a file."""
    if index is None:
        index = prediction.outputs.count()
    image = image or small_png((16 + index, 12), prediction.pk)
    return Output.objects.create(
        team_id=prediction.team_id,
        prediction=prediction,
        index=index,
        source_url=f"https://replicate.delivery/test/{prediction.pk}-{index}.png",
        **copy_of(image),
    )


def save_copy(output: Output, image: bytes | None = None) -> Output:
    """`output`, a row still to be archived, archived in place as the archiver leaves it (a
    small PNG of its own by default), without a download. Returns the row as stored."""
    fields = copy_of(image or small_png((40, 30), output.pk))
    Output.changed(Output.objects.filter(pk=output.pk), **fields)
    return Output.objects.get(pk=output.pk)


# What makes a test slow: real Celery workers, a live server or a browser.
SLOW_FIXTURES = {"worker", "worker_process", "scheduler", "live_server", "browser"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the slow tests, so `make test-fast` (`-m "not slow and not drill"`) runs the rest."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
