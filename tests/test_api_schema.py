"""The API against its own OpenAPI document: schemathesis generates requests from it and sends
them to the WSGI app; every answer must be documented, in its documented shape, and none a 500.
"""

from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.models import ApiToken
from dashboard.wsgi import application

from .conftest import make_prediction

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


# Read from the app itself, when the tests are collected (no database is needed for it).
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)


@pytest.fixture(autouse=True)
def connection_kept_between_requests() -> Iterator[None]:
    """Requests reach the WSGI app inside the test's transaction: the end of one must not close
    the database connection, as Django's test client also sees to."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def token(settings, team, member) -> str:
    """A member's token, with a few predictions of the team to find. Creates answer at once: a
    wait would hold each example for nothing, as no worker runs here."""
    settings.API_MAX_WAIT = 0
    for status in ("processing", "succeeded", "timed_out"):
        make_prediction(team=team, submitted_by=member, status=status)
    return ApiToken.create(team, member, "schemathesis")[1]


OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.django_db
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_every_answer_is_documented_and_none_is_a_server_error(operation, token):
    @given(case=operation.as_strategy())
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def answers_as_documented(case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    answers_as_documented()
