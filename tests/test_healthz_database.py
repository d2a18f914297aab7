"""/healthz while the database cannot be reached: a 503 that says so, as JSON, and 200 again once
it answers."""

import pytest
from django.test import Client

from operations.models import Heartbeat

from .test_hardening_accounts import database_down


def health() -> tuple[int, dict]:
    answer = Client().get("/healthz")
    assert answer["Content-Type"] == "application/json"
    return answer.status_code, answer.json()


@pytest.mark.django_db
def test_healthz_answers_503_naming_the_database_while_it_is_down_and_200_once_it_is_back():
    Heartbeat.stamp("worker-host:12")
    assert health()[0] == 200

    with database_down():
        status, body = health()

    assert status == 503
    assert body["status"] == "failing"
    assert body["reasons"] == ["the database cannot be reached (OperationalError)"]
    assert body["checks"] == {"database": {"ok": False}, "broker": {"ok": True}}

    status, body = health()
    assert status == 200
    assert body["reasons"] == []
    assert body["checks"]["database"] == {"ok": True}
