"""The same archive on an S3-compatible bucket through django-storages: moto's standalone
server on a local port stands in for the bucket, and pages redirect to its signed URLs."""

import hashlib
import socket
from collections.abc import Iterator

import boto3
import httpx
import pytest
from django.core.files.storage import default_storage

from outputs.models import ArchiveState, Output

from .conftest import make_prediction
from .test_archive import scheduler_ticks_until_archived

moto_server = pytest.importorskip("moto.server")

BUCKET = "darkroom-test-outputs"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def bucket(settings) -> Iterator[str]:
    """A moto S3 server on a free local port with an empty bucket, as Darkroom's storage."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **CREDENTIALS).create_bucket(
        Bucket=BUCKET
    )
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": endpoint,
                "region_name": "us-east-1",
                "access_key": CREDENTIALS["aws_access_key_id"],
                "secret_key": CREDENTIALS["aws_secret_access_key"],
                "default_acl": "private",
                "querystring_auth": True,
                "querystring_expire": 300,
                "file_overwrite": True,
            },
        },
    }
    settings.ARCHIVE_SIGNED_URLS = True
    yield endpoint
    server.stop()


@pytest.mark.usefixtures("worker")
def test_outputs_are_archived_to_a_bucket_and_downloaded_from_its_signed_urls(
    client, simulator, bucket
):
    prediction = make_prediction("a lantern festival")
    scheduler_ticks_until_archived(prediction)
    output = Output.objects.get(prediction=prediction)
    assert output.state == ArchiveState.ARCHIVED

    listed = boto3.client("s3", endpoint_url=bucket, region_name="us-east-1", **CREDENTIALS)
    keys = {item["Key"] for item in listed.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == {output.stored_name(), output.stored_name("thumb"), output.stored_name("icon")}
    assert default_storage.exists(output.stored_name())

    response = client.get(output.url("download"))
    assert response.status_code == 302
    signed = response["Location"]
    assert signed.startswith(f"{bucket}/{BUCKET}/{output.stored_name()}?")
    assert "Signature=" in signed or "X-Amz-Signature=" in signed
    download = httpx.get(signed)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == output.sha256
    assert download.headers["Content-Disposition"] == (
        'attachment; filename="a-lantern-festival-1.webp"'
    )
    unsigned = httpx.get(signed.split("?")[0])
    assert unsigned.status_code == 403
    thumbnail = httpx.get(client.get(output.url("thumb"))["Location"])
    assert thumbnail.headers["Content-Type"] == "image/webp"
