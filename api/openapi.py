"""The OpenAPI 3.1 document of Darkroom's Replicate-compatible API, served at /api/v1/openapi.json.

Written by hand, beside the views it describes: tests/test_api_schema.py has schemathesis check
the API against it (no server errors, every answer as documented).
"""

from typing import Any

from .forms import WEBHOOK_EVENTS


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def answer(description: str, schema: str, headers: dict | None = None) -> dict[str, Any]:
    response = {"description": description, "content": json_content(ref(schema))}
    if headers:
        response["headers"] = headers
    return response


def errors(*statuses: int) -> dict[str, Any]:
    """The documented error answers among `statuses`."""
    return {str(status): {"$ref": f"#/components/responses/{status}"} for status in statuses}


NULLABLE_STRING = {"type": ["string", "null"]}
TIMESTAMP = {"type": "string", "format": "date-time"}
NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
OWNER_AND_NAME = [
    {"name": "owner", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
]
PREDICTION_ID = {
    "name": "prediction_id",
    "in": "path",
    "required": True,
    "description": "The prediction's Darkroom id.",
    "schema": {"type": "integer", "minimum": 1},
}
CREATE_HEADERS = [
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "description": "`wait` holds the answer until the prediction ends, at most 60 seconds "
        "(API_MAX_WAIT); `wait=n` at most n seconds. The answer is then the prediction as it "
        "is when it ended or the time ran out.",
        "schema": {"type": "string", "pattern": "^wait(=([1-9]|[1-5][0-9]|60))?$"},
    },
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "A create retried with the same key (in the same team) answers with the "
        "prediction the first one made, and creates nothing.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    },
]
WEBHOOK_FIELDS = {
    "webhook": {
        "type": "string",
        "format": "uri",
        "description": "An https URL Darkroom posts the prediction to as it changes, signed as "
        "Replicate signs webhooks (Standard Webhooks headers; the secret is at "
        "/webhooks/default/secret).",
    },
    "webhook_events_filter": {
        "type": "array",
        "items": {"enum": list(WEBHOOK_EVENTS)},
        "description": "Which changes send a webhook; by default output and completed.",
    },
    "webhook_completed": {
        "type": "string",
        "format": "uri",
        "description": "Replicate's older form: a webhook for the completed event only.",
    },
}
INPUT = {
    "type": "object",
    "description": "The model's input: `prompt`, and for a catalog model the inputs its "
    "version's schema lists, checked as the New images form checks them.",
}


def create_operation(summary: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": CREATE_HEADERS,
        "requestBody": {"required": True, "content": json_content(body)},
        "responses": {
            "201": answer(
                "The prediction: new, or the first one made with this Idempotency-Key "
                "(`Idempotent-Replayed: true`).",
                "Prediction",
            ),
            **errors(400, 401, 402, 403, 404, 409, 422, 429),
        },
    }


SCHEMAS: dict[str, Any] = {
    "Prediction": {
        "type": "object",
        "required": [
            "id",
            "model",
            "version",
            "input",
            "logs",
            "output",
            "data_removed",
            "error",
            "status",
            "created_at",
            "started_at",
            "completed_at",
            "urls",
            "metrics",
        ],
        "properties": {
            "id": {"type": "string", "description": "Darkroom's id of the prediction."},
            "model": {"type": "string", "description": "owner/name"},
            "version": {"type": "string"},
            "input": {"type": "object"},
            "logs": {"type": "string"},
            "output": {
                "description": "The model's output: URLs of Darkroom's copies once archived "
                "(signed, valid for API_FILE_URL_EXPIRY seconds), the provider's until then."
            },
            "data_removed": {"type": "boolean"},
            "error": NULLABLE_STRING,
            "status": {"enum": ["starting", "processing", "succeeded", "failed", "canceled"]},
            "created_at": TIMESTAMP,
            "started_at": NULLABLE_TIMESTAMP,
            "completed_at": NULLABLE_TIMESTAMP,
            "urls": {
                "type": "object",
                "required": ["get", "cancel", "web"],
                "properties": {
                    "get": {"type": "string", "format": "uri"},
                    "cancel": {"type": "string", "format": "uri"},
                    "web": {"type": "string", "format": "uri"},
                },
            },
            "metrics": {
                "type": "object",
                "properties": {
                    "predict_time": {"type": "number"},
                    "total_time": {"type": "number"},
                    "image_count": {"type": "integer"},
                },
            },
        },
    },
    "PredictionPage": {
        "type": "object",
        "required": ["previous", "next", "results"],
        "properties": {
            "previous": {"type": ["string", "null"], "format": "uri"},
            "next": {"type": ["string", "null"], "format": "uri"},
            "results": {"type": "array", "items": ref("Prediction")},
        },
    },
    "Version": {
        "type": "object",
        "required": ["id", "created_at", "cog_version", "openapi_schema"],
        "properties": {
            "id": {"type": "string"},
            "created_at": TIMESTAMP,
            "cog_version": {"type": "string"},
            "openapi_schema": {"type": "object"},
        },
    },
    "VersionPage": {
        "type": "object",
        "required": ["previous", "next", "results"],
        "properties": {
            "previous": {"type": "null"},
            "next": {"type": "null"},
            "results": {"type": "array", "items": ref("Version")},
        },
    },
    "Model": {
        "type": "object",
        "required": ["url", "owner", "name", "visibility", "run_count", "latest_version"],
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "owner": {"type": "string"},
            "name": {"type": "string"},
            "description": NULLABLE_STRING,
            "visibility": {"enum": ["public", "private"]},
            "github_url": NULLABLE_STRING,
            "paper_url": NULLABLE_STRING,
            "license_url": NULLABLE_STRING,
            "run_count": {"type": "integer", "description": "The team's predictions of it."},
            "cover_image_url": NULLABLE_STRING,
            "default_example": {"type": "null"},
            "latest_version": ref("Version"),
        },
    },
    "Error": {
        "type": "object",
        "required": ["title", "detail", "status"],
        "properties": {
            "title": {"type": "string"},
            "detail": {"type": "string"},
            "status": {"type": "integer"},
            "invalid_fields": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type", "field", "description"],
                    "properties": {
                        "type": {"type": "string"},
                        "field": {"type": "string", "description": "e.g. input.num_outputs"},
                        "description": {"type": "string"},
                    },
                },
            },
        },
    },
}

RESPONSES: dict[str, Any] = {
    "400": answer("The body is not a JSON object, a cursor or a header is malformed.", "Error"),
    "401": answer(
        "No token, a malformed, unknown, expired or revoked one, or its member left the team.",
        "Error",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "402": answer("Refused by the team's or the member's monthly budget; nothing sent.", "Error"),
    "403": answer("The token's member may not do this (a viewer creating or canceling).", "Error"),
    "404": answer("Not found, or another team's.", "Error"),
    "409": answer("The Idempotency-Key was used for another prediction.", "Error"),
    "422": answer("Invalid fields, listed in `detail` and `invalid_fields`.", "Error"),
    "429": answer(
        "Over the submit rate limits; nothing was saved.",
        "Error",
        {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
    ),
}


def document(base_url: str) -> dict[str, Any]:
    """The document, with `base_url` (the API's root, `…/api/v1`) as its server."""
    prediction = {"parameters": [PREDICTION_ID]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Darkroom API",
            "version": "1.0.0",
            "description": "Replicate's HTTP API, served by Darkroom: point a Replicate client "
            "at this base URL with a Darkroom API token (Bearer). Predictions are the team's: "
            "created and shown as from the browser, with budgets, rate limits and at-most-once "
            "creates. Errors are Replicate's: `detail`, `title` and `status`.",
        },
        "servers": [{"url": base_url}],
        "security": [{"bearer": []}],
        "paths": {
            "/predictions": {
                "get": {
                    "summary": "The team's predictions, newest first, 100 a page",
                    "parameters": [
                        {
                            "name": "cursor",
                            "in": "query",
                            "required": False,
                            "description": "From a page's `next` or `previous` URL.",
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": answer("A page of predictions.", "PredictionPage"),
                        **errors(400, 401),
                    },
                },
                "post": create_operation(
                    "Create a prediction of a catalog model's version",
                    {
                        "type": "object",
                        "required": ["version", "input"],
                        "properties": {
                            "version": {
                                "type": "string",
                                "description": "owner/name, owner/name:version or a bare "
                                "version id of a model of Darkroom's catalog.",
                            },
                            "input": INPUT,
                            **WEBHOOK_FIELDS,
                        },
                    },
                ),
            },
            "/predictions/track": {
                "post": {
                    "summary": "Track a prediction made elsewhere, as one of the team's",
                    "requestBody": {
                        "required": True,
                        "content": json_content(
                            {
                                "type": "object",
                                "required": ["provider", "id"],
                                "properties": {
                                    "provider": {
                                        "type": "string",
                                        "description": "replicate, cometapi, or simulator "
                                        "where it is the deployment's default.",
                                    },
                                    "id": {
                                        "type": "string",
                                        "description": "The prediction's id at the provider.",
                                    },
                                },
                            }
                        ),
                    },
                    "responses": {
                        "201": answer(
                            "The tracked prediction (the team's own if it tracks it already); "
                            "its model and input show once the provider has answered.",
                            "Prediction",
                        ),
                        **errors(400, 401, 403, 422),
                    },
                },
            },
            "/predictions/{prediction_id}": {
                **prediction,
                "get": {
                    "summary": "A prediction of the team",
                    "responses": {
                        "200": answer("The prediction.", "Prediction"),
                        **errors(401, 404),
                    },
                },
            },
            "/predictions/{prediction_id}/cancel": {
                **prediction,
                "post": {
                    "summary": "Cancel a prediction (sent to its provider by the next worker step)",
                    "responses": {
                        "200": answer("The prediction as it is now.", "Prediction"),
                        **errors(401, 403, 404),
                    },
                },
            },
            "/models/{owner}/{name}": {
                "parameters": OWNER_AND_NAME,
                "get": {
                    "summary": "A model of Darkroom's catalog",
                    "responses": {"200": answer("The model.", "Model"), **errors(401, 404)},
                },
            },
            "/models/{owner}/{name}/predictions": {
                "parameters": OWNER_AND_NAME,
                "post": create_operation(
                    "Create a prediction of any model by owner/name",
                    {
                        "type": "object",
                        "required": ["input"],
                        "properties": {"input": INPUT, **WEBHOOK_FIELDS},
                    },
                ),
            },
            "/models/{owner}/{name}/versions": {
                "parameters": OWNER_AND_NAME,
                "get": {
                    "summary": "A catalog model's versions (one)",
                    "responses": {
                        "200": answer("Its versions.", "VersionPage"),
                        **errors(401, 404),
                    },
                },
            },
            "/models/{owner}/{name}/versions/{version_id}": {
                "parameters": [
                    *OWNER_AND_NAME,
                    {
                        "name": "version_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "get": {
                    "summary": "A catalog model's version, with the schema of its inputs",
                    "responses": {"200": answer("The version.", "Version"), **errors(401, 404)},
                },
            },
            "/webhooks/default/secret": {
                "get": {
                    "summary": "The secret the team's webhooks are signed with",
                    "responses": {
                        "200": {
                            "description": "Verify webhooks with it as Standard Webhooks say.",
                            "content": json_content(
                                {
                                    "type": "object",
                                    "required": ["key"],
                                    "properties": {"key": {"type": "string"}},
                                }
                            ),
                        },
                        **errors(401, 403),
                    },
                },
            },
            "/files/{signed}": {
                "parameters": [
                    {"name": "signed", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "get": {
                    "summary": "An archived output, by the signed link in a prediction's output",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The file.",
                            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                        },
                        "302": {"description": "The bucket's own signed URL of the file."},
                        **errors(404),
                    },
                },
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The document.",
                            "content": json_content({"type": "object"}),
                        }
                    },
                },
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Darkroom API token (drk_…), created on the API page. It "
                    "acts for its member in its team, with the member's role there.",
                }
            },
            "schemas": SCHEMAS,
            "responses": RESPONSES,
        },
    }
