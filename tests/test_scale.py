"""History at scale: the seeded history, the model select without DISTINCT, prompt searches the
index can serve, and the benchmark's guard against SQLite."""

import importlib
import io
import json
import uuid
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Membership, Role, Team
from costs.models import BUCKET_FIELDS, SUM_FIELDS, DailyCost, Kind, PredictionCost, PriceRule
from outputs.models import ArchiveState, Output
from predictions.filters import HistoryFilterForm
from predictions.models import RUNNING, Prediction, Status

from .conftest import make_prediction, make_team, make_user

pytestmark = pytest.mark.django_db

prompt_index = importlib.import_module("predictions.migrations.0004_prediction_prompt_trgm_idx")


def seed(**options) -> str:
    out = io.StringIO()
    call_command("seed_history", stdout=out, **options)
    return out.getvalue()


def model_options(client: Client, path: str = "/") -> list[str]:
    html = client.get(path).content.decode()
    select = html[
        html.index('<select name="model"') : html.index("</select>", html.index('name="model"'))
    ]
    return [part.split('"')[1] for part in select.split("<option value=")[1:]]


# --- seed_history -------------------------------------------------------------------------


def test_seed_history_fills_a_new_team_with_a_year_of_finished_predictions():
    output = seed(team="Scale", count=400, members=3, seed=1)

    team = Team.objects.get(name="Scale")
    predictions = Prediction.objects.filter(team=team)
    assert predictions.count() == 400
    assert "Seeded 400 predictions" in output
    statuses = set(predictions.values_list("status", flat=True))
    assert {Status.SUCCEEDED, Status.FAILED} <= statuses and len(statuses) >= 4
    assert not predictions.filter(status__in=RUNNING).exists()
    assert predictions.filter(status=Status.SUCCEEDED).count() > 300
    oldest, newest = predictions.order_by("submitted_at")[::399]
    assert timezone.now() - timedelta(days=366) < oldest.submitted_at
    assert newest.submitted_at - oldest.submitted_at > timedelta(days=300)
    assert newest.submitted_at < timezone.now()
    # Ids grow with time, as they would have.
    assert list(predictions.order_by("submitted_at").values_list("pk", flat=True)) == sorted(
        predictions.values_list("pk", flat=True)
    )


def test_seeded_predictions_look_like_the_providers_answers():
    seed(team="Scale", count=200, seed=2)

    succeeded = Prediction.objects.filter(status=Status.SUCCEEDED).first()
    assert succeeded.prompt and succeeded.input["seed"] >= 0
    assert succeeded.predict_time > 0 and succeeded.image_count == len(succeeded.output)
    assert succeeded.metrics == {
        "image_count": succeeded.image_count,
        "predict_time": succeeded.predict_time,
    }
    assert succeeded.queue_time > timedelta(0) and succeeded.run_time > timedelta(0)
    assert succeeded.logs.startswith("Using seed:") and "100%|" in succeeded.logs
    assert all(url.startswith("https://replicate.delivery/") for url in succeeded.output)
    assert Prediction.objects.filter(status=Status.FAILED).exclude(error="").exists()
    assert not Prediction.objects.filter(status=Status.SUBMIT_UNKNOWN).exclude(provider_id="")
    # Every output of a succeeded prediction has its row, as the archive leaves it.
    outputs = Output.objects.filter(prediction__team__name="Scale")
    expected = sum(len(p.output) for p in Prediction.objects.filter(status=Status.SUCCEEDED))
    assert outputs.count() == expected
    assert set(outputs.values_list("state", flat=True)) <= {
        ArchiveState.ARCHIVED,
        ArchiveState.EXPIRED,
    }
    assert not outputs.filter(next_attempt_at__isnull=False).exists()


def test_seeded_predictions_come_from_the_teams_members():
    team = make_team("Studio")
    mia = make_user("mia", team, Role.MEMBER)
    make_user("vic", team, Role.VIEWER)

    seed(team=str(team.pk), count=300, members=3, seed=3)

    submitters = set(Prediction.objects.values_list("submitted_by", flat=True))
    members = Membership.objects.filter(team=team, role__in=[Role.OWNER, Role.MEMBER])
    assert mia.pk in submitters
    assert submitters == set(members.values_list("user", flat=True))
    assert len(submitters) == 3


def test_seeding_again_adds_to_the_team():
    seed(team="Scale", count=50, seed=4)
    seed(team="Scale", count=50, seed=4)

    assert Prediction.objects.filter(team__name="Scale").count() == 100
    assert Team.objects.filter(name="Scale").count() == 1


def roll_ups(team: Team) -> list[tuple]:
    rows = DailyCost.objects.filter(team=team).values_list(*BUCKET_FIELDS, *SUM_FIELDS)
    return sorted(rows, key=repr)


def test_every_seeded_prediction_has_the_cost_its_price_rule_gives():
    seed(team="Scale", count=600, seed=5)

    team = Team.objects.get(name="Scale")
    predictions = Prediction.objects.filter(team=team)
    assert not predictions.filter(cost__isnull=True).exists()
    for prediction in predictions.select_related("cost"):
        rule = PriceRule.in_force(
            prediction.provider, prediction.model, team, prediction.submitted_at
        )
        assert prediction.cost.same_as(PredictionCost.compute(prediction, rule))
    kinds = set(PredictionCost.objects.values_list("kind", flat=True))
    assert {Kind.CHARGED, Kind.POSSIBLY_CHARGED} <= kinds


def test_a_seeded_historys_roll_ups_equal_a_rebuild_from_its_costs():
    team = make_team("Studio")
    member = make_user("mia", team, Role.MEMBER)
    # A cost recorded as a prediction ended, before the seeding: it stays in the roll-ups.
    live = make_prediction(team=team, submitted_by=member, model="black-forest-labs/flux-dev")
    live.status, live.image_count = Status.SUCCEEDED, 2
    live.save()
    PredictionCost.record(live)

    seed(team=str(team.pk), count=400, members=3, seed=6)
    seed(team=str(team.pk), count=200, members=3, seed=7)

    seeded = roll_ups(team)
    assert sum(row[len(BUCKET_FIELDS)] for row in seeded) == 601
    DailyCost.rebuild(team)
    assert roll_ups(team) == seeded
    total = DailyCost.totals(
        team, timezone.now().date() - timedelta(days=400), timezone.now().date()
    )
    assert total.get()["spent"] == sum(
        PredictionCost.objects.filter(team=team, kind=Kind.CHARGED).values_list("amount", flat=True)
    )


def test_seed_history_refuses_a_team_id_that_does_not_exist():
    with pytest.raises(CommandError, match="no team with id 999"):
        seed(team="999", count=10)


# --- The model select ---------------------------------------------------------------------


def test_the_model_select_lists_each_model_the_team_used_once_in_order(client, team):
    for model in ["zeta/one", "acme/painter", "zeta/one", "acme/painter", "mid/model"]:
        make_prediction(team=team, model=model)
    make_prediction(team=make_team("Other"), model="other/secret")

    assert model_options(client) == ["", "acme/painter", "mid/model", "zeta/one"]
    assert model_options(client, "/gallery/") == ["", "acme/painter", "mid/model", "zeta/one"]


def test_a_model_appears_in_the_select_once_a_prediction_of_it_is_submitted(client, team):
    make_prediction(team=team, model="acme/painter")
    assert "someone/new-model" not in model_options(client)

    response = client.post(
        "/predictions/new",
        {
            "provider": "simulator",
            "model": "someone/new-model",
            "prompt": "a fox",
            "request_key": uuid.uuid4(),
        },
    )

    assert response.status_code == 302
    assert model_options(client) == ["", "acme/painter", "someone/new-model"]


def test_another_teams_models_never_show(client, team):
    other = make_team("Other")
    for model in ["aaa/first", "zzz/last", "mmm/middle"]:
        make_prediction(team=other, model=model)

    assert model_options(client) == [""]
    make_prediction(team=team, model="mmm/ours")
    assert model_options(client) == ["", "mmm/ours"]


def test_the_model_select_costs_one_query_without_distinct_whatever_the_models(client, team):
    for index in range(12):
        make_prediction(team=team, model=f"acme/model-{index:02}")

    with CaptureQueriesContext(connection) as queries:
        client.get("/")

    model_queries = [q["sql"] for q in queries if "WITH RECURSIVE" in q["sql"]]
    assert len(model_queries) == 1
    assert not [q["sql"] for q in queries if "DISTINCT" in q["sql"].upper()]
    assert len(model_options(client)) == 13


# --- Prompt search ------------------------------------------------------------------------


@pytest.mark.parametrize("q", ["ox", "a b", "4:3", "!!!", "___"])
def test_a_search_without_three_letters_or_digits_in_a_row_is_refused(client, team, q):
    make_prediction(team=team, prompt="a fox in a box, 4:3")

    for path in ("/", "/gallery/"):
        response = client.get(path, {"q": q})
        assert response.status_code == 400
        assert "at least 3 letters or digits in a row" in response.content.decode()


@pytest.mark.parametrize("q", ["fox", " FOX ", "box, 4:3", "é fox"])
def test_a_search_with_three_letters_or_digits_in_a_row_runs(client, team, q):
    make_prediction(team=team, prompt="a fox in a box, 4:3")

    response = client.get("/", {"q": q})

    assert response.status_code == 200
    assert ("a fox in a box" in response.content.decode()) == (q != "é fox")


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the index exists on PostgreSQL")
def test_the_prompt_index_migration_does_nothing_on_sqlite():
    class RecordingEditor:
        def __init__(self) -> None:
            self.connection, self.executed = connection, []

        def execute(self, sql, params=()) -> None:
            self.executed.append(sql)

    editor = RecordingEditor()
    prompt_index.create_index(None, editor)
    prompt_index.drop_index(None, editor)

    assert editor.executed == []
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "predictions_prediction")
    assert prompt_index.INDEX not in constraints


# Prompts with the words "tiny" and "owl" as typed, apart, in another order, or in other cases.
TINY_OWLS = [
    "a tiny owl at dusk",
    "A TINY OWL",
    "two tiny owls",
    "a tiny, owl-like lamp",
    "an owl, tiny",
    "a tiny brown owl",
    "tiny_owl.png",
    "100% owl",
    "100 owl",
    "a tiny at-sign",
]


@pytest.mark.parametrize(
    "q, found",
    [
        ("tiny owl", ["a tiny owl at dusk", "A TINY OWL", "two tiny owls"]),
        ("TINY, owl", ["a tiny, owl-like lamp"]),
        ("tiny_owl", ["tiny_owl.png"]),
        ("100% owl", ["100% owl"]),
        ("tiny at", ["a tiny at-sign"]),
    ],
)
def test_a_search_of_several_words_finds_them_as_typed_only(client, team, q, found):
    for prompt in TINY_OWLS:
        make_prediction(team=team, prompt=prompt)
    form = HistoryFilterForm({"q": q}, request=client.get("/").wsgi_request)
    assert form.is_valid()

    matches = form.shown(form.watched()).values_list("input__prompt", flat=True)

    assert sorted(matches) == sorted(found)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="pg_trgm is PostgreSQL's")
@pytest.mark.parametrize(
    "q, index_asks_for", [("lighthouse", "%LIGHTHOUSE%"), ("tiny owl", "%OWL%")]
)
def test_prompt_search_uses_the_trigram_index_on_postgresql(client, team, q, index_asks_for):
    # Enough of the team's rows that reading them all through its B-tree (a bitmap scan too)
    # costs the planner more than the trigram index: with 1,000 it chose the B-tree.
    Prediction.objects.bulk_create(
        Prediction(team=team, model="acme/painter", input={"prompt": f"a fox {index}"})
        for index in range(5000)
    )
    make_prediction(team=team, prompt="a lighthouse")
    form = HistoryFilterForm({"q": q}, request=client.get("/").wsgi_request)
    assert form.is_valid()
    sql, params = form.shown(form.watched()).query.sql_with_params()

    with connection.cursor() as cursor:
        # New rows wait in the index's pending list, which the planner counts against it.
        cursor.execute("SELECT gin_clean_pending_list(%s::regclass)", [prompt_index.INDEX])
        cursor.execute("ANALYZE predictions_prediction")
        # GIN serves bitmap scans only: with no sequential or plain index scan to fall back
        # on, the team's B-tree would do unless the search expression is the indexed one.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert prompt_index.INDEX in plan
    # Each word of several alone: no trigram of a word's boundary ("  o") to read.
    index_condition = next(line for line in plan.splitlines() if "Index Cond" in line)
    assert index_asks_for in index_condition and "TINY OWL" not in index_condition


# --- bench_pages --------------------------------------------------------------------------


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the guard is SQLite's")
def test_bench_pages_refuses_sqlite_above_fifty_thousand_predictions():
    with pytest.raises(CommandError, match="SQLite is meant for histories of up to 50,000"):
        call_command("bench_pages", count=50_001, stdout=io.StringIO())

    assert not Prediction.objects.exists()
    assert not Team.objects.exists()


def test_bench_pages_times_every_page_and_ends_with_one_json_line():
    out = io.StringIO()
    call_command("bench_pages", count=100, runs=1, stdout=out)

    lines = out.getvalue().splitlines()
    result = json.loads(lines[-1])
    pages = result["pages"]
    assert result["predictions"] == 100 and result["database"] == connection.vendor
    assert pages["empty_history_baseline"]["ratio"] == 1.0
    assert pages["live_refresh_unchanged_304"]["status"] == 304
    assert pages["live_arrivals_none_304"]["status"] == 304
    assert pages["history_q_ox_2_letters_refused"]["status"] == 400
    assert all(page["median"] > 0 and page["queries"] > 0 for page in pages.values())
    assert all(page["cpu"] > 0 for page in pages.values())
    assert len(pages) >= 27
    year = pages["costs_full_year"]["url"]
    assert "since=" in year and "until=" in year
    assert pages["costs_full_year_one_model"]["url"].startswith(year + "&model=")
    assert {"costs_this_month", "costs_last_30_days", "prices"} <= set(pages)
    assert pages["new_images_estimate_htmx"]["status"] == 200
    # The empty team of the baseline is gone; the benchmark's team stays for the next run.
    assert list(Team.objects.values_list("name", flat=True)) == ["Benchmark 100"]
