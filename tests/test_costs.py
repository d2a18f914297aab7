"""What each prediction cost: price rules and their dates, the rule for each way a prediction
ends, unpriced predictions, and daily roll-ups that always equal the raw rows."""

import html
import io
import re
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import RestrictedError
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Role
from costs.models import (
    BUCKET_FIELDS,
    SUM_FIELDS,
    DailyCost,
    PredictionCost,
    PriceRule,
    Repricing,
    lock_team_costs,
    money,
)
from costs.tasks import reprice_due
from dashboard.celery import app as celery_app
from outputs.models import Output
from predictions.catalog import CATALOG
from predictions.client import ProviderError
from predictions.models import Prediction, number_or_none

from .conftest import make_prediction, make_team, make_user, wait_for, wait_until_finished

pytestmark = pytest.mark.django_db

SCHNELL = "black-forest-labs/flux-schnell"
DEV = "black-forest-labs/flux-dev"
SDXL = "stability-ai/sdxl"
PAINTER = "acme/painter"  # a model no seeded rule prices
LONG_AGO = datetime(2024, 1, 1, tzinfo=UTC)
JANUARY = "since=2026-01-01&until=2026-01-31"
HTMX = {"HX-Request": "true"}


def on(day: int, hour: int = 12) -> datetime:
    """A moment of January 2026, in UTC."""
    return datetime(2026, 1, day, hour, tzinfo=UTC)


def answer(prediction: Prediction, status: str, **fields) -> Prediction:
    """The provider's answer `status` (with these metrics and output) recorded as a worker
    records it, which ends the prediction if the status is an end."""
    started = fields.pop("started", True)
    metrics = {name: fields.pop(name) for name in ("predict_time", "image_count") if name in fields}
    prediction.apply_remote(
        {
            "id": prediction.provider_id or uuid.uuid4().hex,
            "status": status,
            "metrics": metrics,
            "created_at": "2026-01-01T00:00:00Z",
            "started_at": "2026-01-01T00:00:01Z" if started else None,
            **fields,
        }
    )
    return prediction


def ended(
    status: str = "succeeded",
    *,
    provider: str = "replicate",
    model: str = SCHNELL,
    input: dict | None = None,
    **fields,
) -> Prediction:
    """A prediction of the Studio team sent to `provider`, which answered that it ended."""
    answers = {
        name: fields.pop(name)
        for name in ("predict_time", "image_count", "output", "started")
        if name in fields
    }
    prediction = make_prediction(
        provider=provider, model=model, input=input or {"prompt": "a lighthouse"}, **fields
    )
    return answer(prediction, status, **answers)


def cost_of(prediction: Prediction) -> PredictionCost:
    return PredictionCost.objects.get(pk=prediction.pk)


def rule(unit: str, amount: str, model: str = PAINTER, provider: str = "replicate", **fields):
    fields.setdefault("effective_from", LONG_AGO)
    return PriceRule.objects.create(
        provider=provider, model=model, unit=unit, amount=Decimal(amount), **fields
    )


def roll_ups(team) -> list[tuple]:
    rows = DailyCost.objects.filter(team=team).values_list(*BUCKET_FIELDS, *SUM_FIELDS)
    return sorted(rows, key=repr)


def rebuilt_roll_ups(team) -> list[tuple]:
    """The team's roll-ups as a rebuild from the raw rows makes them (and leaves them)."""
    DailyCost.rebuild(team)
    return roll_ups(team)


def reprice_pending() -> None:
    """Price again what price changes left to price, as the sweep and a worker would."""
    for pk, claim in Repricing.claim_due():
        assert Repricing.take(pk, claim).run()


def page_text(response) -> str:
    assert response.status_code == 200
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())))


# --- Price rules ------------------------------------------------------------------------------


def test_every_catalog_model_has_a_seeded_replicate_price_that_cites_its_source():
    seeded = PriceRule.objects.filter(team=None, provider="replicate")

    assert {rule.model for rule in seeded} == set(CATALOG)
    for seeded_rule in seeded:
        assert "replicate.com" in seeded_rule.source
        assert re.search(r"as listed (on|at|in) .*\b20\d\d\b", seeded_rule.source)  # when read
        assert "Not checked live" in seeded_rule.source
        assert seeded_rule.currency == "USD"
    assert {(r.model, r.unit, r.amount) for r in seeded} >= {
        (SCHNELL, "per_image", Decimal("0.003")),
        (SDXL, "per_second", Decimal("0.000975")),
    }


def test_the_simulators_prices_are_labelled_as_demo_prices_and_cometapi_is_left_unpriced():
    simulator = PriceRule.objects.filter(team=None, provider="simulator")

    assert {rule.model for rule in simulator} == set(CATALOG)
    assert all(rule.source.startswith("DEMO PRICE") for rule in simulator)
    assert not PriceRule.objects.filter(provider="cometapi").exists()
    assert cost_of(ended(provider="cometapi", image_count=1)).kind == "unpriced"


def test_money_reads_as_people_write_it():
    assert money(Decimal("0.003000"), "USD") == "$0.003"
    assert money(Decimal("48.2"), "USD") == "$48.20"
    assert money(Decimal("0"), "USD") == "$0.00"
    assert money(Decimal("12.5"), "EUR") == "12.50 EUR"
    assert money(None, "USD") == "unpriced"


def test_a_teams_own_rule_overrides_the_deployments():
    team = make_team()
    rule("per_image", "0.002", model=SCHNELL, team=team)

    assert cost_of(ended(image_count=2)).amount == Decimal("0.004")
    assert cost_of(ended(image_count=2, team=make_team("Elsewhere"))).amount == Decimal("0.006")


# --- Each rule type ---------------------------------------------------------------------------


def test_a_price_per_image_is_charged_for_each_image_produced():
    cost = cost_of(ended(image_count=3))

    assert (cost.kind, cost.amount, cost.currency) == ("charged", Decimal("0.009"), "USD")
    assert cost.rule == PriceRule.objects.get(team=None, provider="replicate", model=SCHNELL)
    assert cost.explanation == "3 images × $0.003 per output image"
    assert cost.display == "$0.009"


def test_without_an_image_count_the_output_urls_are_counted():
    output = [f"https://replicate.delivery/x/{i}.webp" for i in range(2)]

    assert cost_of(ended(output=output)).amount == Decimal("0.006")


def test_a_price_per_second_is_charged_for_the_predict_time():
    cost = cost_of(ended(model=SDXL, predict_time=12.5, image_count=1))

    # 12.5 s × $0.000975 = $0.0121875, kept to a millionth.
    assert (cost.kind, cost.amount) == ("charged", Decimal("0.012188"))
    assert cost.explanation == "12.5 s × $0.000975 per second of run time"


def test_a_price_per_second_without_a_predict_time_is_unpriced_and_says_why():
    cost = cost_of(ended(model=SDXL, image_count=1))

    assert (cost.kind, cost.amount) == ("unpriced", None)
    assert "reported no run time (predict_time)" in cost.explanation
    assert cost.display == "unpriced"


def test_a_price_per_prediction_is_charged_once_whatever_the_images():
    rule("per_prediction", "0.05")

    cost = cost_of(ended(model=PAINTER, image_count=4))

    assert (cost.kind, cost.amount) == ("charged", Decimal("0.05"))


def test_a_model_without_a_rule_is_unpriced_never_zero():
    cost = cost_of(ended(model="someone/upscaler", image_count=1))

    assert (cost.kind, cost.amount, cost.rule, cost.currency) == ("unpriced", None, None, "")
    assert cost.explanation == "No price for Replicate someone/upscaler."


def test_a_rule_applies_from_its_effective_date_on_and_not_before():
    rule("per_image", "1", effective_from=on(10))
    rule("per_image", "2", effective_from=on(20))

    before = ended(model=PAINTER, image_count=1, submitted_at=on(5))
    first = ended(model=PAINTER, image_count=1, submitted_at=on(15))
    second = ended(model=PAINTER, image_count=1, submitted_at=on(25))

    assert cost_of(before).kind == "unpriced"
    assert cost_of(first).amount == Decimal(1)
    assert cost_of(second).amount == Decimal(2)


# --- How a prediction ended -------------------------------------------------------------------


def test_a_failed_run_priced_per_second_is_charged_for_the_time_it_ran():
    cost = cost_of(ended("failed", model=SDXL, predict_time=4.0))

    assert (cost.kind, cost.amount) == ("charged", Decimal("0.0039"))


def test_a_canceled_run_priced_per_second_that_never_started_is_free():
    cost = cost_of(ended("canceled", model=SDXL, started=False))

    assert (cost.kind, cost.amount) == ("free", Decimal(0))
    assert cost.explanation == "Canceled before it started: nothing to pay."


def test_a_run_that_started_without_a_predict_time_is_unpriced_rather_than_free():
    cost = cost_of(ended("aborted", model=SDXL))

    assert (cost.kind, cost.amount) == ("unpriced", None)


def test_a_failed_run_priced_per_image_pays_only_for_the_images_it_produced():
    nothing = cost_of(ended("failed", image_count=0))
    some = cost_of(ended("failed", image_count=1))

    assert (nothing.kind, nothing.amount) == ("free", Decimal(0))
    assert (some.kind, some.amount) == ("charged", Decimal("0.003"))


@pytest.mark.parametrize(
    "status, started, kind, amount",
    [
        ("failed", True, "charged", "0.05"),
        ("failed", False, "free", "0"),
        ("canceled", True, "charged", "0.05"),
        ("aborted", False, "free", "0"),
    ],
)
def test_a_price_per_prediction_is_charged_for_an_unfinished_run_only_if_it_started(
    status, started, kind, amount
):
    rule("per_prediction", "0.05")

    cost = cost_of(ended(status, model=PAINTER, started=started))

    assert (cost.kind, cost.amount) == (kind, Decimal(amount))


def test_a_prediction_that_never_reached_the_provider_is_free_even_without_a_price():
    refused = make_prediction(provider="replicate", model="someone/upscaler")
    refused.send_failed(ProviderError("422: invalid input", retryable=False))
    canceled = make_prediction(provider="replicate", model="someone/upscaler")
    canceled.request_cancel()

    for prediction in (refused, canceled):
        cost = cost_of(prediction)
        assert (cost.kind, cost.amount) == ("free", Decimal(0))
        assert cost.explanation == "Never reached the provider: nothing to pay."


def test_a_timed_out_prediction_is_possibly_charged_what_its_requested_images_cost():
    prediction = answer(
        make_prediction(provider="replicate", model=DEV, input={"prompt": "x", "num_outputs": 2}),
        "processing",
    )
    prediction.time_out()

    cost = cost_of(prediction)
    assert (cost.kind, cost.amount, cost.status) == (
        "possibly_charged",
        Decimal("0.05"),
        "timed_out",
    )
    assert cost.explanation.startswith("Timed out: Darkroom stopped following it")
    assert "2 images × $0.025 per output image" in cost.explanation
    assert cost.display == "possibly $0.05"


def test_an_unknown_submit_outcome_is_possibly_charged_one_image_by_default():
    prediction = make_prediction(provider="replicate", model="black-forest-labs/flux-1.1-pro")
    prediction.give_up_submit("The worker stopped before the provider answered.")

    cost = cost_of(prediction)
    assert (cost.kind, cost.amount, cost.status) == (
        "possibly_charged",
        Decimal("0.04"),
        "submit_unknown",
    )
    assert cost.explanation.startswith("Submit outcome unknown")


def test_an_unknown_outcome_priced_per_second_has_no_estimate_without_a_typical_run_time():
    prediction = make_prediction(provider="replicate", model=SDXL)
    prediction.give_up_submit("Lost.")

    cost = cost_of(prediction)
    assert (cost.kind, cost.amount) == ("possibly_charged", None)
    assert "no successful run of it to take a typical run time from" in cost.explanation
    assert cost.display == "possibly charged"


def test_an_unknown_outcome_priced_per_second_is_estimated_from_the_teams_typical_runs():
    for seconds in (9.0, 10.0, 30.0):
        ended(model=SDXL, predict_time=seconds, image_count=1)
    prediction = make_prediction(
        provider="replicate", model=SDXL, input={"prompt": "x", "num_outputs": 2}
    )
    prediction.give_up_submit("Lost.")

    cost = cost_of(prediction)
    # 2 images at the median 10 s: 20 s × $0.000975.
    assert (cost.kind, cost.amount) == ("possibly_charged", Decimal("0.0195"))
    assert "the median of the team's last 3 runs" in cost.explanation


def test_a_late_answer_to_an_unknown_submit_prices_the_prediction_again_when_it_ends():
    prediction = make_prediction(provider="replicate", model=SCHNELL)
    late = Prediction.objects.get(pk=prediction.pk)
    prediction.give_up_submit("Lost.")
    assert cost_of(prediction).kind == "possibly_charged"

    answer(late, "starting", started=False)
    assert cost_of(prediction).kind == "possibly_charged"  # until it ends
    answer(late, "succeeded", image_count=4)

    assert (cost_of(prediction).kind, cost_of(prediction).amount) == ("charged", Decimal("0.012"))
    key = (prediction.team_id, timezone.now().date(), None, "replicate", SCHNELL, "succeeded")
    assert roll_ups(prediction.team) == [(*key, "USD", 1, Decimal("0.012"), Decimal(0), 0, 0)]


def test_running_predictions_have_no_cost_yet():
    prediction = answer(make_prediction(provider="replicate"), "processing")

    assert not PredictionCost.objects.filter(pk=prediction.pk).exists()
    assert not DailyCost.objects.exists()


# --- What the provider reports -------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [-30.0, 10**400], ids=["negative", "beyond a float"])
def test_a_negative_or_impossible_run_time_from_the_provider_is_no_run_time(seconds):
    prediction = ended(model=SDXL, predict_time=seconds, image_count=-1)

    assert (prediction.predict_time, prediction.image_count) == (None, None)
    cost = cost_of(prediction)
    assert (cost.kind, cost.amount) == ("unpriced", None)
    assert "reported no run time (predict_time)" in cost.explanation


def test_no_metric_is_read_from_a_number_that_is_not_one():
    for nonsense in (float("inf"), float("-inf"), float("nan"), -1, True, "12"):
        assert number_or_none(nonsense) is None
        assert number_or_none(nonsense, int) is None
    assert number_or_none(2**31, int) is None  # more than the count's column holds
    assert (number_or_none(12.5), number_or_none(3.0, int)) == (12.5, 3)


def test_a_negative_run_time_stored_before_is_never_a_negative_charge():
    prediction = make_prediction(provider="replicate", model=SDXL)
    Prediction.objects.filter(pk=prediction.pk).update(
        status="succeeded", provider_id="r1", predict_time=-30.0
    )

    cost = PredictionCost.record(Prediction.objects.get(pk=prediction.pk))

    assert (cost.kind, cost.amount) == ("unpriced", None)


@pytest.mark.parametrize(
    "unit, price, metrics",
    [
        # A price set past the forms, and a provider's odd metrics: both beyond $10,000,000.
        ("per_second", "999999", {"predict_time": 150.0}),
        ("per_image", "0.5", {"image_count": 10**9}),
        # Beyond what a Decimal holds to a millionth.
        ("per_second", "0.5", {"predict_time": 1e300}),
    ],
)
def test_a_cost_beyond_belief_is_left_unpriced_and_the_prediction_still_ends(unit, price, metrics):
    rule(unit, price)
    prediction = make_prediction(provider="replicate", model=PAINTER)

    with transaction.atomic():
        answer(prediction, "succeeded", **metrics)

    assert Prediction.objects.get(pk=prediction.pk).status == "succeeded"
    cost = cost_of(prediction)
    assert (cost.kind, cost.amount) == ("unpriced", None)
    assert "comes to more than $10000000.00, which no prediction is believed to cost" in (
        cost.explanation
    )
    assert cost.explanation.endswith(
        "left unpriced rather than trusted. Check the metrics and the price."
    )
    cost.full_clean()
    assert [row[-5:] for row in roll_ups(prediction.team)] == [(1, Decimal(0), 0, 1, 0)]


def test_a_possibly_charged_cost_beyond_belief_has_no_estimate():
    rule("per_image", "0.5")
    prediction = answer(make_prediction(provider="replicate", model=PAINTER), "processing")
    Prediction.objects.filter(pk=prediction.pk).update(image_count=10**9)
    prediction.refresh_from_db()

    prediction.time_out()

    cost = cost_of(prediction)
    assert (cost.kind, cost.amount) == ("possibly_charged", None)
    assert cost.explanation.endswith("which no prediction is believed to cost: no estimate.")


def test_a_price_above_ten_thousand_a_unit_is_a_typing_mistake():
    mistake = PriceRule(
        provider="replicate", model=PAINTER, unit="per_second", amount=Decimal("10000.01")
    )

    with pytest.raises(ValidationError, match="At most 10,000 a unit"):
        mistake.full_clean()


# --- Days in the deployment's time zone --------------------------------------------------------


def test_a_cost_counts_on_the_local_day_and_that_days_history_link_includes_it(settings, client):
    settings.TIME_ZONE = "America/New_York"
    # 02:00 UTC on the 10th is 21:00 on the 9th in New York.
    evening = ended(
        image_count=1,
        submitted_at=datetime(2026, 1, 10, 2, tzinfo=UTC),
        input={"prompt": "an evening in new york"},
    )

    assert cost_of(evening).day == date(2026, 1, 9)
    response = client.get(f"/costs/?{JANUARY}")
    days = {figure.key: figure for figure in response.context["report"].days}
    assert (days["2026-01-09"].sums.predictions, days["2026-01-10"].sums.predictions) == (1, 0)
    history = client.get(days["2026-01-09"].history).context["chunk"].predictions
    assert [prediction.prompt for prediction in history] == ["an evening in new york"]
    assert "the day they were submitted (America/New_York)" in page_text(response)


def test_after_time_zone_changes_recompute_costs_moves_each_cost_to_its_new_day(settings):
    # 20:00 UTC on the 9th is 05:00 on the 10th in Tokyo; 03:00 UTC is noon the same day.
    evening = ended(image_count=1, submitted_at=on(9, 20))
    morning = ended(image_count=2, submitted_at=on(9, 3))
    team = evening.team
    settings.TIME_ZONE = "Asia/Tokyo"

    output = io.StringIO()
    call_command("recompute_costs", stdout=output)

    assert output.getvalue() == f"team {team.pk}: costs changed from 2026-01-09, roll-ups rebuilt\n"
    assert (cost_of(evening).day, cost_of(morning).day) == (date(2026, 1, 10), date(2026, 1, 9))
    by_day = DailyCost.totals(team, on(1).date(), on(31).date(), "day")
    assert {row["day"]: row["spent"] for row in by_day} == {
        date(2026, 1, 9): Decimal("0.006"),
        date(2026, 1, 10): Decimal("0.003"),
    }
    assert roll_ups(team) == rebuilt_roll_ups(team)
    again = io.StringIO()
    call_command("recompute_costs", stdout=again)
    assert again.getvalue() == "Every cost was already up to date.\n"


def test_an_owner_types_a_prices_start_in_the_deployments_time_zone(settings, team):
    settings.TIME_ZONE = "America/New_York"
    client = Client()
    client.force_login(make_user("otto", team, Role.OWNER))

    price = {"provider": "replicate", "model": PAINTER, "unit": "per_image", "amount": "0.01"}
    response = client.post(
        "/costs/prices/new", {**price, "currency": "USD", "effective_from": "2026-02-01T00:00"}
    )

    assert response.status_code == 302
    start = PriceRule.objects.get(team=team).effective_from
    assert start == datetime(2026, 2, 1, 5, tzinfo=UTC)
    response = client.get("/costs/prices/")
    page = page_text(response)
    assert "From (America/New_York)" in page
    assert 'title="1 Feb 2026, 00:00:00 EST"' in response.content.decode()
    assert "In America/New_York." in page


@pytest.mark.parametrize(
    "time_zone, start",
    [
        # Moved to UTC, these two leave the years a datetime holds.
        ("Europe/Berlin", "0001-01-01T00:30"),
        ("America/New_York", "9999-12-31T23:30"),
        ("UTC", "1999-12-31T23:59"),
    ],
)
def test_a_price_starting_before_2000_or_over_ten_years_ahead_is_refused_in_words(
    settings, team, time_zone, start
):
    settings.TIME_ZONE = time_zone
    client = Client()
    client.force_login(make_user("otto", team, Role.OWNER))
    price = {"provider": "replicate", "model": PAINTER, "unit": "per_image", "amount": "0.01"}

    response = client.post(
        "/costs/prices/new", {**price, "currency": "USD", "effective_from": start}
    )

    assert response.status_code == 400
    latest = timezone.localdate() + timedelta(days=3653)
    refusal = f"Choose a moment from 1 Jan 2000 to {latest.day} {latest:%b %Y}."
    assert refusal in html.unescape(response.content.decode())
    assert not PriceRule.objects.filter(team=team).exists()
    assert client.get("/costs/prices/").status_code == 200


# --- Estimates --------------------------------------------------------------------------------


def test_an_estimate_is_outputs_times_variations_times_price():
    team = make_team()
    variations = [
        {"provider": "replicate", "model": DEV, "input": {"prompt": "x", "num_outputs": 2}}
    ] * 3

    estimates = PriceRule.estimate_all(team, variations)

    assert sum(e.amount for e in estimates) == Decimal("0.15")
    assert estimates[0].explanation == "2 images × $0.025 per output image"


def test_an_estimate_for_a_model_without_a_price_is_unknown_not_zero():
    estimate = PriceRule.estimate("replicate", "someone/upscaler", {"prompt": "x"}, make_team())

    assert estimate.amount is None
    assert estimate.explanation == "No price for Replicate someone/upscaler."


# --- Price changes ----------------------------------------------------------------------------


def test_a_price_change_mid_month_leaves_the_costs_before_it_alone():
    early = ended(image_count=1, submitted_at=on(3))
    computed_at = cost_of(early).computed_at

    rule("per_image", "0.005", model=SCHNELL, effective_from=timezone.now() + timedelta(days=1))
    later = ended(image_count=1, submitted_at=timezone.now() + timedelta(days=2))

    assert (cost_of(early).amount, cost_of(early).computed_at) == (Decimal("0.003"), computed_at)
    assert cost_of(later).amount == Decimal("0.005")


def test_a_new_rule_dated_in_the_past_prices_again_what_it_covers_and_rebuilds_those_days():
    early = ended(image_count=1, submitted_at=on(3))
    late = ended(image_count=1, submitted_at=on(20))
    elsewhere = ended(image_count=1, submitted_at=on(20), team=make_team("Elsewhere"))
    team = early.team
    untouched = cost_of(early).computed_at

    new = rule("per_image", "0.005", model=SCHNELL, team=team, effective_from=on(15))

    # The save only records what is to be priced again: nothing is priced in the request.
    assert cost_of(late).amount == Decimal("0.003")
    assert Repricing.pending_since(team) == date(2026, 1, 15)
    reprice_pending()

    assert (cost_of(early).amount, cost_of(early).computed_at) == (Decimal("0.003"), untouched)
    assert (cost_of(late).amount, cost_of(late).rule) == (Decimal("0.005"), new)
    assert cost_of(elsewhere).amount == Decimal("0.003")
    totals = DailyCost.totals(team, on(1).date(), on(31).date())
    assert totals.get()["spent"] == Decimal("0.008")
    assert Repricing.pending_since(team) is None
    assert roll_ups(team) == rebuilt_roll_ups(team)


def test_a_rule_from_the_future_or_for_a_model_nobody_used_prices_nothing_again():
    ended(image_count=1, submitted_at=on(20))

    rule("per_image", "0.005", model=SCHNELL, effective_from=timezone.now() + timedelta(days=1))
    rule("per_image", "0.01", model=PAINTER, effective_from=on(1))

    assert not Repricing.objects.exists()


def test_editing_only_the_source_of_a_rule_prices_nothing_again():
    painter = rule("per_image", "0.01", effective_from=on(1))
    ended(model=PAINTER, image_count=1, submitted_at=on(20))
    Repricing.objects.all().delete()

    painter.source = "Our invoice of 1 February 2026"
    painter.save()

    assert not Repricing.objects.exists()


def test_a_deployment_rule_reprices_every_team_with_a_prediction_it_covers():
    studio = ended(image_count=1, submitted_at=on(20))
    elsewhere = ended(image_count=1, submitted_at=on(20), team=make_team("Elsewhere"))
    own_price = ended(image_count=1, submitted_at=on(20), team=make_team("Own price"))
    rule("per_image", "0.002", model=SCHNELL, team=own_price.team, effective_from=on(1))
    make_team("No history")
    reprice_pending()

    rule("per_image", "0.005", model=SCHNELL, effective_from=on(15))

    pending = Repricing.objects.filter(done_at=None)
    assert {repricing.team.name for repricing in pending} == {"Studio", "Elsewhere", "Own price"}
    reprice_pending()
    assert cost_of(studio).amount == cost_of(elsewhere).amount == Decimal("0.005")
    assert cost_of(own_price).amount == Decimal("0.002")  # the team's own rule still comes first


def test_a_repricing_goes_batch_by_batch_and_resumes_where_a_dead_worker_left_it():
    predictions = [ended(image_count=1, submitted_at=on(10 + day)) for day in range(5)]
    team = predictions[0].team
    rule("per_image", "0.005", model=SCHNELL, team=team, effective_from=on(1))
    [(pk, claim)] = Repricing.claim_due()

    # A worker prices one batch of two, then dies.
    assert not Repricing.take(pk, claim).price_batch(size=2)
    assert [cost_of(p).amount for p in predictions] == [Decimal("0.005")] * 2 + [
        Decimal("0.003")
    ] * 3
    assert roll_ups(team) == rebuilt_roll_ups(team)
    first_priced = [cost_of(p).computed_at for p in predictions[:2]]
    assert Repricing.claim_due() == []  # until its lease runs out
    Repricing.objects.filter(pk=pk).update(next_attempt_at=timezone.now())

    reprice_pending()

    assert [cost_of(p).amount for p in predictions] == [Decimal("0.005")] * 5
    assert [cost_of(p).computed_at for p in predictions[:2]] == first_priced
    assert roll_ups(team) == rebuilt_roll_ups(team)
    assert Repricing.objects.get(pk=pk).done_at is not None
    assert Repricing.take(pk, claim) is None  # the dead worker's claim is stale


def test_a_long_repricing_hands_the_rest_to_the_next_sweep_when_its_turn_ends():
    predictions = [ended(image_count=1, submitted_at=on(20)) for _ in range(3)]
    rule("per_image", "0.005", model=SCHNELL, team=predictions[0].team, effective_from=on(15))
    [(pk, claim)] = Repricing.claim_due()

    assert not Repricing.take(pk, claim).run(seconds=0, size=1)

    assert [cost_of(p).amount for p in predictions] == [Decimal("0.005")] + [Decimal("0.003")] * 2
    assert Repricing.objects.get(pk=pk).next_attempt_at <= timezone.now()  # due again at once
    reprice_pending()
    assert {cost_of(p).amount for p in predictions} == {Decimal("0.005")}


def test_repricing_touches_the_predictions_whose_cost_changed_so_open_pages_refresh(client):
    before = ended(image_count=1, submitted_at=on(5))
    changed = ended(image_count=1, submitted_at=on(20))
    url = changed.get_absolute_url()
    etag = client.get(url, headers=HTMX)["ETag"]
    assert client.get(url, headers={**HTMX, "If-None-Match": etag}).status_code == 304
    updated = {p.pk: p.updated_at for p in Prediction.objects.all()}

    rule("per_image", "0.005", model=SCHNELL, team=changed.team, effective_from=on(15))
    reprice_pending()

    refreshed = client.get(url, headers={**HTMX, "If-None-Match": etag})
    assert refreshed.status_code == 200
    assert "$0.005" in refreshed.content.decode()
    now = {p.pk: p.updated_at for p in Prediction.objects.all()}
    assert now[before.pk] == updated[before.pk]
    assert now[changed.pk] > updated[changed.pk]


def test_pages_not_yet_told_of_a_batch_are_told_by_the_next_worker():
    prediction = ended(image_count=1, submitted_at=on(20))
    updated = Prediction.objects.get(pk=prediction.pk).updated_at
    rule("per_image", "0.005", model=SCHNELL, team=prediction.team, effective_from=on(15))
    [(pk, claim)] = Repricing.claim_due()

    # The worker commits its only batch and dies before it touches the prediction.
    assert Repricing.take(pk, claim).price_batch()
    assert Prediction.objects.get(pk=prediction.pk).updated_at == updated
    Repricing.objects.filter(pk=pk).update(next_attempt_at=timezone.now())

    reprice_pending()

    assert Prediction.objects.get(pk=prediction.pk).updated_at > updated
    assert Repricing.objects.get(pk=pk).touched == []


def test_the_prices_and_costs_pages_say_which_costs_are_being_recalculated(team):
    owner = make_user("otto", team, Role.OWNER)
    client = Client()
    client.force_login(owner)
    ended(image_count=1, submitted_at=on(20), team=team)
    rule("per_image", "0.005", model=SCHNELL, team=team, effective_from=on(15))
    notice = "Costs from 15 Jan 2026 are being recalculated"

    assert notice in page_text(client.get("/costs/prices/"))
    january = page_text(client.get(f"/costs/?{JANUARY}"))
    assert f"{notice} after a price change: this period's figures may change" in january
    for unaffected in ("?since=2025-12-01&until=2026-01-14", f"?{JANUARY}&model={DEV}"):
        assert notice not in page_text(client.get(f"/costs/{unaffected}"))

    reprice_pending()

    assert notice not in page_text(client.get("/costs/prices/"))
    assert notice not in page_text(client.get(f"/costs/?{JANUARY}"))


def test_a_rule_deleted_before_its_repricing_ran_leaves_the_costs_as_they_were():
    prediction = ended(image_count=1, submitted_at=on(20))
    mistake = rule("per_image", "5", model=SCHNELL, team=prediction.team, effective_from=on(15))

    mistake.delete()  # it priced nothing yet, so nothing restricts it
    reprice_pending()

    assert cost_of(prediction).amount == Decimal("0.003")
    assert Repricing.pending_since(prediction.team) is None


def purge_wake_ups(queue: str) -> None:
    """Lose the messages waiting in `queue`, as a broker that went down would."""
    with celery_app.connection_for_write() as connection_:
        connection_.default_channel.queue_purge(queue)


def test_a_worker_reprices_after_the_commit_and_a_lost_wake_up_only_delays_it(
    transactional_db, celery_queues, request
):
    early = ended(image_count=1, submitted_at=on(3))
    late = ended(image_count=2, submitted_at=on(20))
    team = late.team
    rule("per_image", "0.005", model=SCHNELL, team=team, effective_from=on(15))
    purge_wake_ups(celery_queues[0])
    assert cost_of(late).amount == Decimal("0.006")

    request.getfixturevalue("worker")
    reprice_due.delay()  # the scheduler's next tick
    wait_for(lambda: Repricing.pending_since(team) is None, message="the repricing")

    assert (cost_of(early).amount, cost_of(late).amount) == (Decimal("0.003"), Decimal("0.01"))
    assert roll_ups(team) == rebuilt_roll_ups(team)


def test_a_repricing_whose_worker_died_is_done_by_another_once_its_lease_runs_out(
    transactional_db, request
):
    late = ended(image_count=2, submitted_at=on(20))
    rule("per_image", "0.005", model=SCHNELL, team=late.team, effective_from=on(15))
    # A worker claimed it and died before doing anything: the wake-up finds it leased.
    [(pk, _claim)] = Repricing.claim_due()
    request.getfixturevalue("worker")
    assert cost_of(late).amount == Decimal("0.006")

    Repricing.objects.filter(pk=pk).update(next_attempt_at=timezone.now())
    reprice_due.delay()
    wait_for(lambda: Repricing.pending_since(late.team) is None, message="the repricing")

    assert cost_of(late).amount == Decimal("0.01")


def test_a_rule_that_priced_a_prediction_cannot_be_deleted():
    painter = rule("per_image", "0.01")
    ended(model=PAINTER, image_count=1)

    with pytest.raises(RestrictedError):
        painter.delete()


# --- Roll-ups ---------------------------------------------------------------------------------


def test_recording_a_cost_again_changes_nothing():
    prediction = ended(image_count=2)
    before = roll_ups(prediction.team)

    PredictionCost.record(prediction)
    PredictionCost.record(Prediction.objects.get(pk=prediction.pk))

    assert roll_ups(prediction.team) == before
    assert [row[-5:] for row in before] == [(1, Decimal("0.006"), 0, 0, 0)]


def test_a_deleted_prediction_takes_its_cost_out_of_the_roll_ups():
    kept = ended(image_count=1)
    gone = ended(image_count=2)

    gone.delete()

    assert not PredictionCost.objects.filter(pk=gone.pk).exists()
    assert [row[-5:] for row in roll_ups(kept.team)] == [(1, Decimal("0.003"), 0, 0, 0)]


def test_a_deleted_members_spend_stays_in_the_team_totals():
    team = make_team()
    leaving = make_user("leo", team)
    staying = make_user("mia", team)
    ended(image_count=1, submitted_by=leaving)
    ended(image_count=2, submitted_by=staying)
    ended(image_count=4)  # submitted by no one

    leaving.delete()

    by_member = DailyCost.totals(team, date(2020, 1, 1), date(2100, 1, 1), "member")
    assert {row["member"]: row["spent"] for row in by_member} == {
        staying.pk: Decimal("0.006"),
        None: Decimal("0.015"),
    }
    before = roll_ups(team)
    DailyCost.rebuild(team)
    assert roll_ups(team) == before


def test_the_roll_ups_equal_a_recomputation_from_the_raw_rows_after_a_mixed_run():
    team, elsewhere = make_team(), make_team("Elsewhere")
    mia, leo = make_user("mia", team), make_user("leo", team, Role.OWNER)

    def submitted(day: int, member, model: str = SCHNELL, **input) -> Prediction:
        return make_prediction(
            team=team,
            provider="replicate",
            model=model,
            submitted_by=member,
            submitted_at=on(day),
            input={"prompt": f"day {day}", **input},
        )

    a = submitted(3, mia)
    b = submitted(5, leo)
    c = submitted(10, mia, SDXL)
    d = submitted(12, leo, DEV)
    e = submitted(14, mia, "someone/upscaler")
    f = submitted(20, mia)
    g = submitted(22, leo, num_outputs=2)
    h = submitted(25, mia)
    ended(image_count=1, team=elsewhere, submitted_at=on(10))

    # They end out of order: the latest first, the earliest last.
    answer(h, "succeeded", image_count=1)
    g_copy = answer(g, "processing")
    answer(f, "succeeded", image_count=4)
    answer(e, "succeeded", image_count=1)
    late_answer = Prediction.objects.get(pk=d.pk)
    d.give_up_submit("Lost.")  # possibly charged for now...
    answer(c, "succeeded", predict_time=8.2, image_count=1)
    answer(b, "failed", image_count=0)
    answer(late_answer, "starting")  # ...until the create's late answer comes after all,
    answer(late_answer, "succeeded", image_count=1)  # and it ends: charged.
    g_copy.time_out()
    answer(a, "succeeded", image_count=2)
    # Mid-month, the deployment's price for schnell rose from the 18th on; h is then deleted.
    rule("per_image", "0.005", model=SCHNELL, effective_from=on(18))
    reprice_pending()
    h.delete()

    raw = roll_ups(team)
    DailyCost.rebuild(team)
    assert roll_ups(team) == raw
    period = DailyCost.totals(team, on(1).date(), on(31).date()).get()
    # a 2 × 0.003 + b 0 + c 8.2 s × 0.000975 + d 0.025 + f 4 × 0.005; e unpriced; g possibly.
    assert period == {
        "team": team.pk,
        "predictions": 7,
        "spent": Decimal("0.058995"),
        "possibly_spent": Decimal("0.01"),
        "unpriced_predictions": 1,
        "possibly_charged_predictions": 1,
    }
    by_status = DailyCost.totals(team, on(1).date(), on(31).date(), "status")
    assert {row["status"]: row["predictions"] for row in by_status} == {
        "succeeded": 5,
        "failed": 1,
        "timed_out": 1,
    }
    by_member = DailyCost.totals(team, on(1).date(), on(31).date(), "member")
    assert {row["member"]: row["spent"] for row in by_member} == {
        mia.pk: Decimal("0.033995"),
        leo.pk: Decimal("0.025"),
    }
    assert [row[-5:] for row in roll_ups(elsewhere)] == [(1, Decimal("0.003"), 0, 0, 0)]


@pytest.mark.usefixtures("worker", "scheduler")
def test_costs_recorded_by_concurrent_workers_add_up_to_the_raw_rows(client, member):
    team = member.memberships.get().team
    for _ in range(3):
        response = client.post(
            "/predictions/new",
            {
                "provider": "simulator",
                "model": SCHNELL,
                "prompt": "a crowd of lighthouses",
                "request_key": uuid.uuid4(),
                "variations": "4",
                "extra_input": '{"num_outputs": 2}',
            },
        )
        assert response.status_code == 302

    predictions = list(Prediction.objects.all())
    wait_until_finished(*predictions)
    # And their images archived, so no worker is still busy when the test's database goes.
    wait_for(lambda: not Output.objects.filter(state="pending").exists())

    assert PredictionCost.objects.count() == 12
    raw = roll_ups(team)
    DailyCost.rebuild(team)
    assert roll_ups(team) == raw
    assert DailyCost.totals(team, date(2020, 1, 1), date(2100, 1, 1)).get()["spent"] == (
        Decimal("0.003") * sum(p.image_count or 0 for p in predictions if p.status == "succeeded")
    )


def test_recompute_asks_for_the_teams_without_reading_every_prediction():
    for team in (make_team(), make_team("Elsewhere")):
        ended(image_count=1, team=team)
        ended(image_count=1, team=team)

    with CaptureQueriesContext(connection) as queries:
        PredictionCost.recompute(Prediction.objects.all())

    [teams] = [q["sql"] for q in queries.captured_queries if "DISTINCT" in q["sql"]]
    # Ordered by anything else, the DISTINCT would be over each prediction: a row for each.
    assert (
        teams.split(" FROM ")[0]
        == 'SELECT DISTINCT "predictions_prediction"."team_id" AS "team_id"'
    )


def test_recompute_costs_prices_a_history_written_without_them():
    team = make_team()
    for images in (1, 3):
        # As a bulk import or a seeded history writes predictions: no transition, no cost.
        Prediction.objects.create(
            team=team,
            provider="replicate",
            provider_id=uuid.uuid4().hex,
            model=SCHNELL,
            status="succeeded",
            image_count=images,
            submitted_at=on(7),
        )
    assert not PredictionCost.objects.exists()

    call_command("recompute_costs", "--team", str(team.pk), stdout=io.StringIO())

    assert PredictionCost.objects.count() == 2
    assert DailyCost.totals(team, on(7).date(), on(7).date()).get()["spent"] == Decimal("0.012")
    output = io.StringIO()
    call_command("recompute_costs", stdout=output)
    assert output.getvalue() == "Every cost was already up to date.\n"


def test_a_team_goes_with_its_costs_roll_ups_and_rules():
    team = make_team()
    rule("per_image", "0.01", team=team)
    ended(model=PAINTER, image_count=1, team=team)
    ended(image_count=1, team=make_team("Elsewhere"))

    team.delete()

    assert PredictionCost.objects.count() == DailyCost.objects.count() == 1
    assert not PriceRule.objects.filter(model=PAINTER).exists()


def at_once(*works) -> None:
    """Run `works` in threads of their own, each with its own database connection, as workers
    would; any one's exception fails the test."""
    errors = []

    def in_thread(work) -> None:
        try:
            work()
        except Exception as exc:  # a worker's failure is this test's failure
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=in_thread, args=(work,)) for work in works]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def end_all(predictions: list[Prediction]) -> None:
    for prediction in predictions:
        answer(prediction, "succeeded", image_count=1)


@pytest.mark.django_db(transaction=True)
def test_rebuilds_while_workers_record_costs_leave_the_roll_ups_exact():
    team = make_team()
    rule("per_image", "0.003", model=SCHNELL, team=team)
    predictions = [make_prediction(team=team, provider="replicate") for _ in range(30)]

    def rebuild() -> None:
        for _ in range(5):
            DailyCost.rebuild(team)

    at_once(rebuild, *(lambda share=predictions[i::3]: end_all(share) for i in range(3)))

    raw = roll_ups(team)
    DailyCost.rebuild(team)
    assert roll_ups(team) == raw
    assert [row[-5:] for row in raw] == [(30, Decimal("0.09"), 0, 0, 0)]


@pytest.mark.django_db(transaction=True)
def test_a_repricing_while_workers_record_costs_leaves_every_cost_and_roll_up_exact():
    team = make_team()
    predictions = [
        make_prediction(team=team, provider="replicate", submitted_at=on(20)) for _ in range(30)
    ]
    end_all(predictions[:15])
    rule("per_image", "0.005", model=SCHNELL, team=team, effective_from=on(15))
    [(pk, claim)] = Repricing.claim_due()

    def reprice() -> None:
        assert Repricing.take(pk, claim).run(size=4)

    late = predictions[15:]
    at_once(reprice, *(lambda share=late[i::3]: end_all(share) for i in range(3)))

    assert {cost_of(prediction).amount for prediction in predictions} == {Decimal("0.005")}
    raw = roll_ups(team)
    assert raw == rebuilt_roll_ups(team)
    assert [row[-5:] for row in raw] == [(30, Decimal("0.15"), 0, 0, 0)]


@pytest.mark.django_db(transaction=True)
def test_the_seeded_prices_are_there_after_earlier_tests_flushed_the_database():
    seeded = PriceRule.objects.filter(team=None)

    assert seeded.count() == 2 * len(CATALOG)
    assert {(r.provider, r.model) for r in seeded} == {
        (provider, model) for provider in ("replicate", "simulator") for model in CATALOG
    }


def waiting_for_a_lock() -> bool:
    """Whether a transaction waits for a lock another holds: PostgreSQL's view of its locks."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks JOIN pg_database ON database = pg_database.oid "
            "WHERE NOT granted AND datname = current_database()"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite runs one write transaction at a time"
)
@pytest.mark.django_db(transaction=True)
def test_a_prediction_deleted_while_a_repricing_batch_holds_the_team_leaves_exact_roll_ups():
    team = make_team()
    rule("per_image", "0.003", model=SCHNELL, team=team)
    kept = ended(image_count=1, team=team, submitted_at=on(20))
    doomed = ended(image_count=1, team=team, submitted_at=on(20))
    # From the 10th on: the batch below prices both at $0.01.
    rule("per_image", "0.01", model=SCHNELL, team=team, effective_from=on(10))
    locked = threading.Event()

    def reprice() -> None:
        with transaction.atomic():
            lock_team_costs(team.pk, exclusive=True)
            locked.set()
            # The deletion has read the cost at $0.003, and waits for the lock.
            wait_for(waiting_for_a_lock, message="the deletion to wait for the lock")
            PredictionCost.price_again(team.pk, Prediction.objects.all(), 100)

    def delete() -> None:
        locked.wait(timeout=5)
        Prediction.objects.get(pk=doomed.pk).delete()

    at_once(reprice, delete)

    assert cost_of(kept).amount == Decimal("0.01")
    raw = roll_ups(team)
    assert raw == rebuilt_roll_ups(team)
    assert [row[-5:] for row in raw] == [(1, Decimal("0.01"), 0, 0, 0)]
