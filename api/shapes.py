"""Darkroom's predictions and catalog models in Replicate's JSON shapes.

Every shape takes `base_url`, the API's root as its client reaches it (for example
`https://darkroom.example.com/api/v1`, no trailing slash): the URLs in a shape are Darkroom's,
never the provider's, and outputs point at Darkroom's archived copies once they exist.
"""

import hashlib
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.http import HttpRequest
from django.urls import reverse

from predictions.catalog import CATALOG, CatalogModel, Input
from predictions.models import RUNNING, Prediction, Status

# Replicate's five statuses, the only ones its clients accept (replicate-python validates them):
# Darkroom's own end states are failures there, with their reason as the error.
STATUSES = {
    Status.SUBMITTING: "starting",
    Status.STARTING: "starting",
    Status.PROCESSING: "processing",
    Status.SUCCEEDED: "succeeded",
    Status.FAILED: "failed",
    Status.CANCELED: "canceled",
    Status.ABORTED: "failed",
    Status.SUBMIT_UNKNOWN: "failed",
    Status.TIMED_OUT: "failed",
}
# The error of an end state that may come without one.
FALLBACK_ERRORS = {
    Status.ABORTED: "The provider aborted the prediction before it ran.",
    Status.SUBMIT_UNKNOWN: "Darkroom could not tell whether the provider received the prediction.",
    Status.TIMED_OUT: "The prediction did not end in time, and Darkroom stopped following it.",
}

# Signed links to archived outputs (`api:file`): anyone holding one may fetch the file until it
# expires, as with Replicate's own output URLs.
FILE_SALT = "api.files"


def timestamp(value: datetime | None) -> str | None:
    """Replicate's form: UTC, with a Z."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def api_root(request: HttpRequest) -> str:
    """The API's root as this client reached it, e.g. https://darkroom.example.com/api/v1."""
    return request.build_absolute_uri(reverse("api:predictions")).removesuffix("/predictions")


def site_url(base_url: str) -> str:
    """The deployment's origin, from the API's root: app paths (reverse()) follow it."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def file_url(output_pk: int, base_url: str) -> str:
    signed = signing.TimestampSigner(salt=FILE_SALT).sign(str(output_pk))
    return site_url(base_url) + reverse("api:file", args=[signed])


def signed_output(signed: str) -> int | None:
    """The output a file link names, if it is one Darkroom signed and it has not expired."""
    try:
        pk = signing.TimestampSigner(salt=FILE_SALT).unsign(
            signed, max_age=settings.API_FILE_URL_EXPIRY
        )
    except signing.BadSignature:  # SignatureExpired too
        return None
    return int(pk)


def output_json(prediction: Prediction, base_url: str) -> Any:
    """The prediction's output, each provider URL replaced by a link to Darkroom's copy once
    there is one (the provider deletes its files within the hour)."""
    archived = {
        output.source_url: file_url(output.pk, base_url)
        for output in prediction.outputs.all()
        if output.is_archived
    }
    output = prediction.output
    if isinstance(output, str):
        return archived.get(output, output)
    if isinstance(output, list):
        return [archived.get(item, item) if isinstance(item, str) else item for item in output]
    return output


def prediction_json(prediction: Prediction, base_url: str) -> dict[str, Any]:
    """`prediction` as Replicate's API shows a prediction, with Darkroom's id and URLs.

    Its outputs are read from `prediction.outputs`: prefetch them when shaping many.
    """
    url = f"{base_url}/predictions/{prediction.pk}"
    ended = prediction.status not in RUNNING
    metrics = dict(prediction.metrics)
    if ended and prediction.completed_at:
        metrics["total_time"] = (prediction.completed_at - prediction.submitted_at).total_seconds()
    error = prediction.error or (FALLBACK_ERRORS.get(prediction.status) if ended else None)
    return {
        "id": str(prediction.pk),
        "model": prediction.model,
        # A tracked prediction names its model once the provider has answered about it.
        "version": prediction.version or (version_of(prediction.model) if prediction.model else ""),
        "input": prediction.input,
        "logs": prediction.logs,
        "output": output_json(prediction, base_url),
        # Darkroom keeps the input, the logs and its copies of the outputs.
        "data_removed": False,
        "error": error or None,
        "status": STATUSES[prediction.status],
        "created_at": timestamp(prediction.submitted_at),
        "started_at": timestamp(prediction.started_at),
        "completed_at": timestamp(prediction.completed_at) if ended else None,
        "urls": {
            "get": url,
            "cancel": f"{url}/cancel",
            "web": site_url(base_url) + prediction.get_absolute_url(),
        },
        "metrics": metrics,
    }


# --- The catalog as models and versions -------------------------------------------------------

# The version Cog's schema is written for; from 0.3.9 on, clients read array outputs as lists.
COG_VERSION = "0.13.0"
# Darkroom's catalog has no version history: each model has one version, of no known date.
VERSION_CREATED_AT = "1970-01-01T00:00:00Z"


@cache
def version_of(model: str) -> str:
    """The version id of a model: the SHA-256 of its name, as the simulator names its own.
    Only the catalog's models are served as versions; any other gets an id all the same."""
    return hashlib.sha256(model.encode()).hexdigest()


def catalog_version(version: str) -> CatalogModel | None:
    """The catalog model named by `owner/name`, `owner/name:version` or a bare version id."""
    name, _, version_id = version.partition(":")
    if "/" not in name:
        name, version_id = "", name
    for model in CATALOG.values():
        if (not name or model.name == name) and version_id in ("", version_of(model.name)):
            return model
    return None


def input_schema(spec: Input, order: int) -> dict[str, Any]:
    """One catalog input as a Cog schema property."""
    kind = {"integer": "integer", "number": "number", "boolean": "boolean"}.get(spec.kind, "string")
    schema: dict[str, Any] = {"type": kind, "title": spec.label, "x-order": order}
    if spec.help:
        schema["description"] = spec.help
    if spec.default is not None:
        schema["default"] = spec.default
    if spec.minimum is not None:
        schema["minimum"] = spec.minimum
    if spec.maximum is not None:
        schema["maximum"] = spec.maximum
    if spec.choices:
        schema["enum"] = list(spec.choices)
    if spec.kind == "url":
        schema["format"] = "uri"
    return schema


def version_json(model: CatalogModel) -> dict[str, Any]:
    """The model's one version, with a Cog schema of the inputs the catalog knows."""
    properties = {
        "prompt": {
            "type": "string",
            "title": "Prompt",
            "description": "What the image should show.",
            "maxLength": model.prompt_length,
            "x-order": 0,
        }
    }
    for order, spec in enumerate(model.inputs, start=1):
        properties[spec.name] = input_schema(spec, order)
    required = ["prompt"] + [spec.name for spec in model.inputs if spec.required_message]
    return {
        "id": version_of(model.name),
        "created_at": VERSION_CREATED_AT,
        "cog_version": COG_VERSION,
        "openapi_schema": {
            "openapi": "3.0.2",
            "info": {"title": model.label, "version": version_of(model.name)},
            "paths": {},
            "components": {
                "schemas": {
                    "Input": {
                        "type": "object",
                        "title": "Input",
                        "required": required,
                        "properties": properties,
                    },
                    "Output": {
                        "type": "array",
                        "title": "Output",
                        "items": {"type": "string", "format": "uri"},
                    },
                }
            },
        },
    }


def model_json(model: CatalogModel, base_url: str, run_count: int = 0) -> dict[str, Any]:
    owner, name = model.name.split("/")
    new_images = reverse("predictions:new") + f"?model={model.name}"
    return {
        "url": site_url(base_url) + new_images,
        "owner": owner,
        "name": name,
        "description": model.description,
        "visibility": "public",
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "run_count": run_count,
        "cover_image_url": None,
        "default_example": None,
        "latest_version": version_json(model),
    }
