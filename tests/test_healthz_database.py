"""/healthz and /metrics while the database cannot be reached: a 503 that says so, as JSON, and 200
again once it answers; the figures that need it left out."""

import pytest
from django.db import connection
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

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


@pytest.mark.django_db
def test_metrics_leave_out_the_databases_figures_while_it_is_down_trying_it_once(
    settings, monkeypatch
):
    settings.METRICS_TOKEN = "scrape-me"
    tries = []
    with database_down():
        refuse = connection.ensure_connection
        monkeypatch.setattr(connection, "ensure_connection", lambda: tries.append(1) or refuse())
        answer = Client().get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        monkeypatch.undo()

    assert answer.status_code == 200
    unreadable = {
        sample.labels["figures"]: sample.value
        for family in text_string_to_metric_families(answer.content.decode())
        for sample in family.samples
        if sample.name == "darkroom_metrics_unreadable"
    }
    assert unreadable == {
        "predictions": 1,
        "requests": 1,
        "request_budget": 0,
        "budgets": 1,
        "polls": 1,
        "queues": 0,
        "archive": 1,
        "workers": 1,
    }
    assert len(tries) == 1


@pytest.mark.django_db
def test_healthz_answers_json_while_the_database_is_down_to_a_signed_in_browser_too(client):
    Heartbeat.stamp("worker-host:12")
    with database_down():
        signed_out = Client().get("/healthz")
        signed_in = client.get("/healthz", headers={"Accept": "text/html"})

    assert signed_in.status_code == signed_out.status_code == 503
    assert signed_in["Content-Type"] == "application/json"
    assert signed_in.json() == signed_out.json()
    assert signed_in.json()["reasons"] == ["the database cannot be reached (OperationalError)"]
