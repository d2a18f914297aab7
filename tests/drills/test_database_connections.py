"""Drill: every PostgreSQL connection of the test database cut, again and again, mid-run (as a
restart or a failover does). The worker (its poller, its tasks), the scheduler's sweeps and the
web recover without a restart, and no create the provider answered is written off.

The web is tried twice over: with a connection a request (CONN_MAX_AGE 0, the default) and
with connections each web thread keeps (60, as docker-compose.yml runs it), which the settings'
health checks replace once cut rather than fail that thread's next request with.

PostgreSQL only: SQLite has no connections to cut.
"""

import time

import httpx
import pytest
from django.conf import settings as django_settings
from django.db import connection

from accounts.models import Role
from api.models import ApiToken
from outputs.models import ArchiveState, Output
from predictions.models import RUNNING, Prediction, Status

from ..conftest import make_prediction, make_team, make_user
from .conftest import wait_for_rows
from .outages import is_postgresql, terminate_backends

pytestmark = [pytest.mark.drill, pytest.mark.timeout(180)]

CUTS = 5
# Web threads, each a keep-alive connection of its own to the live server (one thread each).
WEB_THREADS = 4
SCHNELL = "/api/v1/models/black-forest-labs/flux-schnell/predictions"


def test_cut_database_connections_are_recovered_from_without_a_restart(
    monkeypatch, simulator, worker_process, scheduler, live_server, client, drill_report
):
    skip_on_sqlite()
    # An archive attempt cut short by a cut connection is taken again when its lease runs out:
    # 5 s here rather than the deployed 155 s (connect timeout + download deadline + 30 s).
    monkeypatch.setenv("ARCHIVE_LEASE", "5")
    simulator.engine.speed = 2  # jobs of 1 to 8 s
    simulator.faults.slow_rate = 1.0  # creates answered after 0.2 s: some answers meet a cut
    simulator.faults.slow_seconds = 0.2
    simulator.faults.endpoints = ["create"]
    team = make_team()
    member = make_user("drill", team, Role.MEMBER)
    client.force_login(member)
    web = httpx.Client(
        base_url=live_server.url,
        cookies={django_settings.SESSION_COOKIE_NAME: client.cookies["sessionid"].value},
        headers={"Authorization": f"Bearer {ApiToken.create(team, member, 'drill')[1]}"},
        timeout=30,
    )
    models = ["black-forest-labs/flux-schnell", "black-forest-labs/flux-dev"]
    predictions = [make_prediction(f"cut {n}", model=models[n % 2]) for n in range(80)]
    worker_process()
    rows = Prediction.objects.filter(team=team)
    wait_for_rows(lambda: rows.exclude(provider_id="").count() >= 10, rows, 30, "creates under way")

    cut, in_flight, pages, api_creates = [], [], [], []
    sending = rows.filter(status=Status.SUBMITTING, sending_since__isnull=False)
    for n in range(CUTS):
        in_flight.append(sending.count())  # creates whose answer the cut may meet
        cut.append(terminate_backends(keep_own=True))
        pages.append(web.get("/").status_code)
        response = web.post(SCHNELL, json={"input": {"prompt": f"through the web, cut {n}"}})
        api_creates.append(response.status_code)
        time.sleep(1.5)

    seen_unknown = set()

    def settled() -> bool:
        unknown = rows.filter(status=Status.SUBMIT_UNKNOWN)
        seen_unknown.update(p.pk for p in unknown)
        created = simulator.stats()["creates_by_prompt"]
        outputs = Output.objects.filter(prediction__team=team)
        return (
            not rows.filter(status__in=RUNNING).exists()
            and all(p.polls >= 1 and not created.get(p.prompt) for p in unknown)
            and not outputs.exclude(state=ArchiveState.ARCHIVED).exists()
        )

    try:
        wait_for_rows(settled, rows, 60, "every prediction ended and every output archived")
    except AssertionError as exc:
        states = list(Output.objects.filter(prediction__team=team).values_list("state", "reason"))
        raise AssertionError(f"{exc}; outputs: {states}") from None
    created = simulator.stats()["creates_by_prompt"]
    final = list(rows)
    statuses: dict[str, int] = {}
    for prediction in final:
        statuses[prediction.status] = statuses.get(prediction.status, 0) + 1
    archived = Output.objects.filter(prediction__team=team, state=ArchiveState.ARCHIVED).count()
    drill_report(
        f"{len(predictions)} predictions submitted before the cuts, {len(api_creates)} through "
        f"the API during them; {CUTS} cuts, 1.5 s apart, of {sum(cut)} connections "
        f"({', '.join(map(str, cut))}), with {sum(in_flight)} creates awaiting their answer "
        f"({', '.join(map(str, in_flight))})"
    )
    drill_report(
        f"web during the cuts: history page {pages}, API creates {api_creates}; "
        f"outputs archived afterwards: {archived}"
    )
    drill_report("ends: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))
    drill_report(
        f"creates sent: {sum(created.values())}; sent twice: "
        f"{sum(1 for n in created.values() if n > 1)}; outcomes seen unknown afterwards: "
        f"{len(seen_unknown)}; answered creates written off: "
        f"{sum(1 for p in final if p.status == Status.SUBMIT_UNKNOWN and created.get(p.prompt))}"
    )

    assert all(count > 0 for count in cut), "a cut found no connection to cut"
    assert pages == [200] * CUTS
    assert api_creates == [201] * CUTS
    assert len(final) == len(predictions) + CUTS
    assert all(created.get(p.prompt, 0) <= 1 for p in final), "a create was sent twice"
    assert statuses.keys() <= {Status.SUCCEEDED, Status.SUBMIT_UNKNOWN}
    for prediction in final:
        if prediction.status == Status.SUBMIT_UNKNOWN:
            assert not created.get(prediction.prompt), f"{prediction.pk}: answered, written off"
    assert archived == sum(len(p.output_urls) for p in final)


@pytest.mark.parametrize("conn_max_age", [0, 60])
def test_web_threads_answer_their_next_request_after_their_connections_are_cut(
    conn_max_age, monkeypatch, live_server, client, drill_report
):
    skip_on_sqlite()
    # The settings every thread's connection is made from (one dict, shared by all threads).
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", conn_max_age)
    member = make_user("drill", make_team(), Role.MEMBER)
    client.force_login(member)
    cookies = {django_settings.SESSION_COOKIE_NAME: client.cookies["sessionid"].value}
    threads = [
        httpx.Client(base_url=live_server.url, cookies=cookies, timeout=30)
        for _ in range(WEB_THREADS)
    ]
    try:
        before = [web.get("/").status_code for web in threads]
        cut = terminate_backends(keep_own=True)
        after = [web.get("/").status_code for web in threads]
        again = [web.get("/").status_code for web in threads]
    finally:
        for web in threads:
            web.close()
    drill_report(
        f"CONN_MAX_AGE {conn_max_age}: {WEB_THREADS} web threads, history page before the cut "
        f"{before}; {cut} connections cut; the next request of each {after}, then {again}"
    )

    assert before == after == again == [200] * WEB_THREADS
    if conn_max_age:
        assert cut >= WEB_THREADS, "the web threads kept no connection for the cut to meet"


def skip_on_sqlite() -> None:
    if not is_postgresql():
        print("\nSKIPPED a database connections drill: SQLite has no connections to cut")
        pytest.skip("PostgreSQL only: SQLite has no connections to cut")
