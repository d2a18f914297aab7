"""Drill: archiving interrupted. The storage is full (each write stops half-way with ENOSPC),
then read-only while downloads fail too (5xx, connections reset mid-file), then back while
downloads still fail now and then: every output is retried later and archived once things
recover, and no partial file is ever recorded as archived (checked every 0.2 s during the run,
and at the end).

Scaled to the test suite: archive retries start 0.2 s apart (tests/settings.py), so a few
seconds of each outage take several attempts, far from the 13 allowed.
"""

import hashlib
import threading

import pytest
from django.core.files.storage import default_storage

from outputs.models import ArchiveState, Output
from predictions.models import Prediction

from ..conftest import configure_provider, make_prediction, wait_for
from .conftest import wait_for_rows
from .outages import FailingStorage, ResettingProxy

pytestmark = [pytest.mark.drill, pytest.mark.timeout(120)]


def whole(output: Output) -> bool:
    """Whether the archived copy and its thumbnails are stored whole, as the row says."""
    try:
        with default_storage.open(output.stored_name(), "rb") as file:
            content = file.read()
        thumbs = all(default_storage.size(output.stored_name(v)) > 0 for v in ("thumb", "icon"))
    except OSError:
        return False
    digest = hashlib.sha256(content).hexdigest()
    return thumbs and len(content) == output.bytes and digest == output.sha256


def test_interrupted_archiving_is_retried_and_never_records_a_partial_file(
    settings, media_storage, simulator, worker, scheduler, drill_report
):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "tests.drills.outages.FailingStorage",
            "OPTIONS": {"location": media_storage},
        },
    }
    FailingStorage.mode = "full"
    FailingStorage.failures.clear()
    proxy = ResettingProxy(simulator.port, only=b"Content-Type: image/").start()
    configure_provider(settings, "simulator", base_url=f"{proxy.url}/v1")
    simulator.public_url = proxy.url  # output files are fetched through the proxy's resets
    simulator.faults.endpoints = ["file"]
    predictions = [
        make_prediction(f"archive {n}", input={"prompt": f"archive {n}", "num_outputs": 2})
        for n in range(12)
    ]
    rows = Prediction.objects.filter(pk__in=[p.pk for p in predictions])
    outputs = Output.objects.filter(prediction__in=rows)

    stop = threading.Event()
    checks, partial, reasons = [0], [], set()

    def watch() -> None:
        """Every 0.2 s, every output recorded as archived must be stored whole; the reasons
        shown for the others are collected."""
        while not stop.wait(0.2):
            for output in outputs.all():  # a fresh query each time, not a cached one
                if output.state == ArchiveState.ARCHIVED:
                    checks[0] += 1
                    if not whole(output):
                        partial.append(output.pk)
                elif output.reason:
                    reasons.add(output.reason)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # The disk full, downloads fine: every try reaches the storage. Four tries leave every
        # file of an output (the copy, two thumbnails) half-written, and make one try more.
        wait_for_rows(
            lambda: outputs.filter(attempts__gte=4).count() >= 6, rows, 30, "four tries each"
        )
        # Read-only, and downloads failing: 30% answered 5xx, 10% cut by a reset mid-file.
        simulator.faults.server_error_rate = 0.3
        proxy.reset_rate = 0.1
        FailingStorage.mode = "read-only"
        wait_for(lambda: FailingStorage.failures["read-only"] >= 4, 30, "writes refused")
        FailingStorage.mode = "ok"  # the storage is back; downloads still fail now and then
        wait_for_rows(
            lambda: not outputs.exclude(state=ArchiveState.ARCHIVED).exists(),
            rows,
            60,
            "every output archived",
        )
    finally:
        stop.set()
        watcher.join()
        FailingStorage.mode = "ok"
        proxy.stop()

    final = list(outputs)
    attempts = sorted(o.attempts for o in final)
    stats = simulator.stats()
    drill_report(
        f"{len(final)} outputs of {len(predictions)} predictions; storage full, then "
        f"read-only, then back: {FailingStorage.failures['full']} writes cut short by a full "
        f"disk, {FailingStorage.failures['read-only']} writes or deletes refused as read-only"
    )
    drill_report(
        f"downloads: {stats['requests_by_endpoint'].get('file', 0)} requests, "
        f"{sum(n for code, n in stats['responses_by_status'].items() if code.startswith('5'))} "
        f"answered 5xx, {proxy.counts['resets']} connections reset"
    )
    drill_report(
        f"attempts per output: {attempts[0]} to {attempts[-1]}; reasons shown meanwhile: "
        + "; ".join(sorted({reason[:45] for reason in reasons}))
    )
    drill_report(
        f"archived rows checked whole {checks[0]} times during the run: {len(partial)} partial"
    )

    assert not partial, f"outputs {sorted(set(partial))} were archived with a partial file"
    assert all(o.state == ArchiveState.ARCHIVED for o in final)
    assert all(whole(o) for o in final)
    assert FailingStorage.failures["full"] and FailingStorage.failures["read-only"]
    assert any("No space left on device" in reason for reason in reasons)
    assert attempts[-1] < settings.ARCHIVE_MAX_ATTEMPTS
