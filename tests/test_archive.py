"""Every output becomes Darkroom's own: archived by real workers from the simulator over a real
socket, and still served after the provider has forgotten it and is gone."""

import hashlib
import io
import re

import httpx
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from outputs.models import ArchiveState, Output, source_for_download
from outputs.tasks import archive_due
from predictions.models import Prediction

from .conftest import configure_provider, make_prediction, wait_for, wait_until_finished


def wait_until_archived(prediction, count: int = 1, timeout: float = 20.0) -> list[Output]:
    def settled() -> bool:
        outputs = Output.objects.filter(prediction=prediction)
        return (
            outputs.count() == count
            and not outputs.filter(
                state__in=[ArchiveState.PENDING, ArchiveState.FAILED], next_attempt_at__isnull=False
            ).exists()
        )

    wait_for(settled, timeout, f"the outputs of prediction {prediction.pk} to be archived")
    return list(Output.objects.filter(prediction=prediction).order_by("index"))


def stored_image(name: str) -> Image.Image:
    with default_storage.open(name, "rb") as file:
        image = Image.open(io.BytesIO(file.read()))
        image.load()
    return image


@pytest.mark.usefixtures("worker", "scheduler")
def test_an_output_is_archived_with_its_metadata_and_thumbnails(simulator):
    prediction = make_prediction(
        "a kite over dunes", input={"prompt": "a kite over dunes", "num_outputs": 2}
    )
    wait_until_finished(prediction)

    outputs = wait_until_archived(prediction, count=2)

    for output in outputs:
        assert output.state == ArchiveState.ARCHIVED, output.reason
        assert output.source_url == prediction.output_urls[output.index]
        with default_storage.open(output.stored_name(), "rb") as file:
            content = file.read()
        assert output.sha256 == hashlib.sha256(content).hexdigest()
        assert output.bytes == len(content)
        assert output.content_type == "image/webp"
        assert output.extension == "webp"
        image = Image.open(io.BytesIO(content))
        assert (output.width, output.height) == image.size
        for variant in ("thumb", "icon"):
            thumbnail = stored_image(output.stored_name(variant))
            assert thumbnail.format == "WEBP"
            assert thumbnail.size == output.thumb_size(variant)
    assert max(stored_image(outputs[0].stored_name("thumb")).size) == 512
    assert outputs[0].sha256 != outputs[1].sha256


@pytest.mark.usefixtures("worker", "scheduler")
def test_archived_outputs_are_served_after_the_provider_forgot_them_and_went_away(
    client, simulator
):
    prediction = make_prediction("an owl in the rain")
    wait_until_finished(prediction)
    [output] = wait_until_archived(prediction)
    assert output.state == ArchiveState.ARCHIVED, output.reason
    simulator.engine.retention = 0.5
    wait_for(lambda: httpx.get(output.source_url).status_code == 404, 10, "the provider to forget")
    simulator.stop()

    gallery = client.get("/gallery/").content.decode()
    history = client.get("/").content.decode()
    page = client.get(prediction.get_absolute_url()).content.decode()

    thumb = re.search(r'<img src="(/outputs/\d+/thumb\?v=\w+)"', gallery)[1]
    icon = re.search(r'<img src="(/outputs/\d+/icon\?v=\w+)"', history)[1]
    full = re.search(r'data-image="(/outputs/\d+/file\?v=\w+)"', gallery)[1]
    download = re.search(r'data-download="(/outputs/\d+/download\?v=\w+)"', page)[1]
    assert output.source_url not in gallery + history + page
    for url, content_type in [(thumb, "image/webp"), (icon, "image/webp"), (full, "image/webp")]:
        response = client.get(url)
        assert response.status_code == 200
        assert response["Content-Type"] == content_type
        Image.open(io.BytesIO(b"".join(response.streaming_content))).load()
    response = client.get(download)
    assert response["Content-Disposition"] == 'attachment; filename="an-owl-in-the-rain-1.webp"'
    assert hashlib.sha256(b"".join(response.streaming_content)).hexdigest() == output.sha256


@pytest.mark.usefixtures("worker")
def test_identical_files_are_stored_once(simulator, media_storage):
    first = make_prediction("same seed", input={"prompt": "same seed", "seed": 7})
    second = make_prediction("same seed", input={"prompt": "same seed", "seed": 7})
    scheduler_ticks_until_archived(first, second)

    [a], [b] = Output.objects.filter(prediction=first), Output.objects.filter(prediction=second)
    assert a.sha256 == b.sha256
    assert len(list((media_storage / "outputs").rglob("*.webp"))) == 1


def scheduler_ticks_until_archived(*predictions) -> None:
    """Dispatch by hand (no beat): the prediction's steps and the archive's, until all is done."""
    from predictions.tasks import dispatch_due

    def done() -> bool:
        dispatch_due.delay()
        archive_due.delay()
        outputs = Output.objects.filter(prediction__in=predictions)
        return (
            outputs.count() == len(predictions)
            and not outputs.exclude(state=ArchiveState.ARCHIVED).exists()
        )

    wait_for(done, 20, "every output to be archived")
    for prediction in predictions:
        wait_until_finished(prediction)


@pytest.mark.django_db
def test_an_output_the_provider_already_removed_is_recorded_as_expired(simulator):
    prediction = make_prediction(status="succeeded", output=["http://x.invalid/out-0.webp"])
    Output.record(prediction)
    prediction.data_removed = True
    prediction.save()

    archive_claimed()

    output = Output.objects.get(prediction=prediction)
    assert output.state == ArchiveState.EXPIRED
    assert "removed it before Darkroom could save a copy" in output.reason
    assert output.next_attempt_at is None


@pytest.mark.django_db
def test_a_file_the_provider_no_longer_has_is_expired_not_retried(simulator):
    prediction = make_prediction(
        status="succeeded", output=[f"{simulator.url}/files/nope/out-0.webp"]
    )
    Output.record(prediction)

    archive_claimed()

    output = Output.objects.get(prediction=prediction)
    assert output.state == ArchiveState.EXPIRED
    assert output.next_attempt_at is None
    assert output.sha256 == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://replicate.delivery/out-0.png", "https"),
        ("https://127.0.0.1/out-0.png", "127.0.0.1"),
        ("https://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("https://evil.example/out-0.png", "evil.example"),
    ],
)
def test_a_refused_download_is_the_recorded_failure_and_leaves_nothing_stored(
    simulator, media_storage, url, said
):
    prediction = make_prediction(status="succeeded", output=[url])
    Output.record(prediction)

    archive_claimed()

    output = Output.objects.get(prediction=prediction)
    assert output.state == ArchiveState.FAILED
    assert said in output.reason
    assert output.next_attempt_at is None  # a refusal is not retried
    assert not media_storage.exists() or not any(media_storage.rglob("*.*"))


@pytest.mark.django_db
def test_a_download_that_fails_for_now_is_retried_with_backoff_until_it_works(simulator):
    prediction = make_prediction("a comet", status="processing")
    created = simulator.engine.create(
        "black-forest-labs/flux-schnell", {"prompt": "a comet"}, simulator.url
    )
    wait_for(lambda: simulator.engine.get(created["id"], simulator.url)["status"] == "succeeded")
    prediction.output = simulator.engine.get(created["id"], simulator.url)["output"]
    prediction.save()
    Output.record(prediction)
    simulator.faults.server_error_rate = 1.0
    simulator.faults.endpoints = ["file"]

    archive_claimed()

    output = Output.objects.get(prediction=prediction)
    assert output.state == ArchiveState.FAILED
    assert "server error" in output.reason.lower() or "50" in output.reason
    assert output.next_attempt_at is not None
    simulator.faults.server_error_rate = 0.0
    wait_for(lambda: archive_claimed() or Output.objects.get(pk=output.pk).is_archived, 20)


def archive_claimed() -> bool:
    """One sweep, done in this process: claim what is due and archive it."""
    for pk, claim in Output.claim_due(limit=10):
        Output.take(pk, claim).archive()
    return False


@pytest.mark.django_db
def test_a_changed_output_url_is_archived_again():
    prediction = make_prediction(status="processing", output=["https://replicate.delivery/a.png"])
    Output.record(prediction)
    Output.objects.update(state=ArchiveState.ARCHIVED, next_attempt_at=None)

    prediction.output = ["https://replicate.delivery/b.png"]
    assert Output.record(prediction) == 1

    output = Output.objects.get(prediction=prediction)
    assert output.state == ArchiveState.PENDING
    assert output.source_url.endswith("/b.png")
    assert output.next_attempt_at is not None


def test_a_simulator_output_named_by_its_public_address_is_fetched_from_the_polled_one(settings):
    configure_provider(
        settings,
        "simulator",
        base_url="http://simulator:8765/v1",
        public_url="http://localhost:8765",
    )
    url = "http://localhost:8765/files/abc/out-0.png"

    assert source_for_download(Prediction(provider="simulator"), url) == (
        "http://simulator:8765/files/abc/out-0.png",
        ["http://simulator:8765"],
    )
    assert source_for_download(Prediction(provider="replicate"), url) == (url, [])
