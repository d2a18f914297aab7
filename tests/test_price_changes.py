"""Owners correct the team's prices in the app: a rule's price changes from a day on, and a rule
that priced nothing yet can be deleted. A change never rewrites the costs of predictions
submitted before its day, and the roll-ups stay equal to the raw rows.

acme/painter has no seeded price: the team's own rules are the only ones that price it."""

import io
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent, Role
from costs.models import DailyCost, PredictionCost, PriceRule, Repricing
from predictions.models import Prediction

from .conftest import make_prediction, make_team, make_user
from .test_costs import rebuilt_roll_ups, roll_ups
from .test_costs_page import signed_in, text_of

pytestmark = pytest.mark.django_db

SCHNELL = "black-forest-labs/flux-schnell"
PAINTER = "acme/painter"


def on(day: int, hour: int = 12, minute: int = 0, month: int = 1) -> datetime:
    """A moment of 2026 (January unless told), in UTC: the deployment's TIME_ZONE here."""
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def owner(team):
    return make_user("otto", team, Role.OWNER)


def team_rule(team, amount: str, start: datetime, unit: str = "per_image", model: str = PAINTER):
    return PriceRule.objects.create(
        team=team, provider="replicate", model=model, unit=unit, amount=amount, effective_from=start
    )


def ended(member, at: datetime, *, images: int = 1, predict_time: float = 1.5) -> Prediction:
    """A Replicate prediction of acme/painter by `member`, submitted `at`, that succeeded with
    `images` images, recorded as a worker records the provider's answer (which prices it)."""
    prediction = make_prediction(
        team=member.memberships.get().team,
        submitted_by=member,
        provider="replicate",
        model=PAINTER,
        submitted_at=at,
    )
    prediction.apply_remote(
        {
            "id": uuid.uuid4().hex,
            "status": "succeeded",
            "metrics": {"image_count": images, "predict_time": predict_time},
            "started_at": "2026-01-01T00:00:01Z",
        }
    )
    return prediction


def cost_of(prediction: Prediction) -> PredictionCost:
    return PredictionCost.objects.get(pk=prediction.pk)


def change(client: Client, rule: PriceRule, **fields):
    data = {"unit": rule.unit, "amount": "0.02", "since": "2026-01-15", **fields}
    return client.post(f"/costs/prices/{rule.pk}/change", data)


def reprice_pending() -> None:
    """Price again what price changes left to price, as the sweep and a worker would."""
    for pk, claim in Repricing.claim_due():
        assert Repricing.take(pk, claim).run()


def recomputed() -> str:
    """What `recompute_costs` finds to change: nothing, when every stored cost is right."""
    output = io.StringIO()
    call_command("recompute_costs", stdout=output)
    return output.getvalue()


# --- Changing a price from a day on -----------------------------------------------------------


def test_a_change_from_a_day_prices_again_only_what_was_submitted_from_that_day(
    team, owner, member
):
    old = team_rule(team, "0.01", on(1, 0))
    early = ended(member, on(5), images=2)
    eve = ended(member, on(14, 23, 59))
    midnight = ended(owner, on(15, 0))
    late = ended(member, on(20), images=3)
    untouched = {p.pk: cost_of(p).computed_at for p in (early, eve)}

    response = change(signed_in(owner), old, amount="0.02", source="Our invoice of 15 Jan")

    assert response.status_code == 302
    new = PriceRule.objects.get(team=team, effective_from=on(15, 0))
    assert (new.unit, new.amount, new.currency, new.source) == (
        "per_image",
        Decimal("0.02"),
        "USD",
        "Our invoice of 15 Jan",
    )
    old.refresh_from_db()
    assert (old.amount, old.effective_from) == (Decimal("0.01"), on(1, 0))
    # Pricing again is the background's work, as after any price dated in the past.
    assert cost_of(late).amount == Decimal("0.03")
    assert Repricing.pending_since(team) == date(2026, 1, 15)
    reprice_pending()

    assert [(cost_of(p).amount, cost_of(p).rule) for p in (early, eve, midnight, late)] == [
        (Decimal("0.02"), old),
        (Decimal("0.01"), old),
        (Decimal("0.02"), new),
        (Decimal("0.06"), new),
    ]
    assert {p.pk: cost_of(p).computed_at for p in (early, eve)} == untouched
    january = DailyCost.totals(team, date(2026, 1, 1), date(2026, 1, 31)).get()
    assert january["spent"] == Decimal("0.11")
    assert roll_ups(team) == rebuilt_roll_ups(team)
    assert recomputed() == "Every cost was already up to date.\n"
    [event] = AuditEvent.objects.filter(team=team, action="price_rule_changed")
    assert event.description == (
        "otto changed Replicate acme/painter: $0.01 per output image to "
        "$0.02 per output image from 15 Jan 2026, 00:00 UTC"
    )


def test_the_roll_ups_equal_the_raw_rows_after_changes_deletions_and_late_ends(team, owner, member):
    old = team_rule(team, "0.01", on(1, 0))
    client = signed_in(owner)
    done = [ended(member, on(day), images=day % 3 + 1) for day in (3, 12, 16, 22, 28)]
    running = make_prediction(
        team=team, submitted_by=member, provider="replicate", model=PAINTER, submitted_at=on(25)
    )
    assert change(client, old, amount="0.04", since="2026-01-10").status_code == 302
    Prediction.objects.get(pk=done[3].pk).delete()
    reprice_pending()
    later = PriceRule.objects.get(team=team, effective_from=on(10, 0))
    assert (
        change(client, later, unit="per_second", amount="0.001", since="2026-01-20").status_code
        == 302
    )
    # A prediction submitted before the change ends after it, out of order.
    running.apply_remote(
        {"id": uuid.uuid4().hex, "status": "succeeded", "metrics": {"predict_time": 4.0}}
    )
    reprice_pending()

    assert [cost_of(p).amount for p in (done[0], done[1], done[2], done[4])] == [
        Decimal("0.01"),
        Decimal("0.04"),
        Decimal("0.08"),
        Decimal("0.0015"),
    ]
    assert cost_of(running).amount == Decimal("0.004")
    assert roll_ups(team) == rebuilt_roll_ups(team)
    assert recomputed() == "Every cost was already up to date.\n"


def test_a_change_from_today_reprices_todays_predictions_and_one_ahead_reprices_nothing(
    team, owner, member
):
    now = timezone.now()
    old = team_rule(team, "0.01", now - timedelta(days=30))
    yesterday = ended(member, now - timedelta(days=1))
    today = ended(member, now)
    client = signed_in(owner)

    assert change(client, old, since=timezone.localdate().isoformat()).status_code == 302
    reprice_pending()
    ahead = (timezone.localdate() + timedelta(days=7)).isoformat()
    new = PriceRule.objects.get(team=team, amount=Decimal("0.02"))
    assert change(client, new, amount="0.03", since=ahead).status_code == 302

    assert not Repricing.objects.filter(done_at=None).exists()
    assert (cost_of(yesterday).amount, cost_of(today).amount) == (Decimal("0.01"), Decimal("0.02"))
    assert roll_ups(team) == rebuilt_roll_ups(team)


def test_a_change_starts_at_midnight_in_the_deployments_time_zone(settings, team, owner):
    settings.TIME_ZONE = "America/New_York"
    old = team_rule(team, "0.01", on(1, 5))

    assert change(signed_in(owner), old, since="2026-02-01").status_code == 302

    new = PriceRule.objects.get(team=team, amount=Decimal("0.02"))
    assert new.effective_from == datetime(2026, 2, 1, 5, tzinfo=UTC)


def test_a_change_may_change_the_unit(team, owner, member):
    old = team_rule(team, "0.01", on(1, 0))

    change(signed_in(owner), old, unit="per_second", amount="0.0005", since="2026-01-15")
    after = ended(member, on(16), images=4, predict_time=10.0)

    assert (cost_of(after).amount, cost_of(after).explanation) == (
        Decimal("0.005"),
        "10 s × $0.0005 per second of run time",
    )


def input_value(page: str, id: str) -> str:
    match = re.search(rf'<input [^>]*value="([^"]*)"[^>]* id="{id}">', page)
    assert match, f"no input {id} with a value"
    return match[1]


def test_the_change_form_offers_today_and_the_rules_own_price(team, owner):
    rule = team_rule(team, "0.0125", on(1, 0), unit="per_prediction")

    page = signed_in(owner).get("/costs/prices/").content.decode()

    assert input_value(page, f"rule-{rule.pk}-since") == timezone.localdate().isoformat()
    assert input_value(page, f"rule-{rule.pk}-amount") == "0.0125"
    assert '<option value="per_prediction" selected>' in page
    assert f'action="/costs/prices/{rule.pk}/change"' in page


def test_a_change_from_the_rules_first_day_corrects_the_rule_itself(team, owner, member):
    mistake = team_rule(team, "0.1", on(10, 9))
    before = ended(member, on(10, 8))  # before the rule began: unpriced, and stays so
    priced = ended(member, on(10, 14), images=2)

    response = change(signed_in(owner), mistake, amount="0.01", since="2026-01-10")
    reprice_pending()

    assert response.status_code == 302
    [rule] = PriceRule.objects.filter(team=team)
    assert (rule.pk, rule.amount, rule.effective_from) == (mistake.pk, Decimal("0.01"), on(10, 9))
    assert cost_of(before).kind == "unpriced"
    assert (cost_of(priced).amount, cost_of(priced).rule) == (Decimal("0.02"), rule)
    assert roll_ups(team) == rebuilt_roll_ups(team)


def test_a_change_before_the_rules_first_day_is_refused_in_words(team, owner):
    rule = team_rule(team, "0.01", on(10, 9))

    response = change(signed_in(owner), rule, since="2026-01-09")

    assert response.status_code == 400
    text = text_of(response)
    assert "This price starts on 10 Jan 2026: change it from that day or a later one." in text
    assert list(PriceRule.objects.filter(team=team).values_list("amount", flat=True)) == [
        Decimal("0.01")
    ]


def test_a_change_once_a_later_rule_took_over_is_refused_and_names_that_rule(team, owner, member):
    january = team_rule(team, "0.01", on(1, 0))
    team_rule(team, "0.03", on(1, 0, month=2))
    client = signed_in(owner)

    refused = change(client, january, since="2026-02-01")
    accepted = change(client, january, since="2026-01-20")
    february = ended(member, on(5, month=2))

    assert refused.status_code == 400
    assert (
        "From 1 Feb 2026 the price is $0.03 per output image, from 1 Feb 2026, 00:00 UTC: "
        "change that one instead." in text_of(refused)
    )
    assert accepted.status_code == 302
    assert cost_of(february).amount == Decimal("0.03")


def test_the_same_change_sent_twice_makes_one_rule(team, owner):
    rule = team_rule(team, "0.01", on(1, 0))
    client = signed_in(owner)

    first = change(client, rule)
    second = change(client, rule)

    assert (first.status_code, second.status_code) == (302, 400)
    assert "change that one instead" in text_of(second)
    assert PriceRule.objects.filter(team=team).count() == 2


def test_the_same_price_again_is_no_change(team, owner):
    rule = team_rule(team, "0.01", on(1, 0))

    response = change(signed_in(owner), rule, amount="0.010")

    assert response.status_code == 400
    assert "That is the price already: change the price or the unit." in text_of(response)
    assert PriceRule.objects.filter(team=team).count() == 1


def test_a_rule_deleted_meanwhile_is_not_changed_back_into_being(team):
    rule = team_rule(team, "0.01", on(1, 0))
    PriceRule.objects.filter(pk=rule.pk).delete()

    with pytest.raises(ValidationError, match="This price was deleted meanwhile."):
        rule.change_price("per_image", Decimal("0.02"), date(2026, 1, 1))
    assert not PriceRule.objects.filter(team=team).exists()


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        ({"amount": "-0.01"}, "A price cannot be negative."),
        ({"amount": "0.123456789"}, "At most 8 decimal places."),
        ({"amount": "10000.01"}, "At most 10,000 a unit: a higher price is a typing mistake."),
        ({"amount": "1e400"}, "At most 10,000 a unit: a higher price is a typing mistake."),
        ({"amount": "NaN"}, "Enter a number."),
        ({"amount": "twelve"}, "Enter a number."),
        ({"amount": ""}, "This field is required."),
        ({"unit": "per_kilo"}, "Select a valid choice. per_kilo is not one of the available"),
        ({"since": "2026-02-30"}, "Enter a valid date."),
        ({"since": "15/01/2026 and more"}, "Enter a valid date."),
        ({"since": "0001-01-01"}, "Choose a moment from 1 Jan 2000 to"),
        ({"since": "9999-12-31"}, "Choose a moment from 1 Jan 2000 to"),
        ({"since": ""}, "This field is required."),
        ({"source": "x" * 501}, "Ensure this value has at most 500 characters"),
    ],
)
def test_bad_input_is_refused_in_words_on_the_rules_open_form(team, owner, fields, refusal):
    rule = team_rule(team, "0.01", on(1, 0))
    client = signed_in(owner)

    response = change(client, rule, **fields)

    assert response.status_code == 400
    assert refusal in text_of(response)
    page = response.content.decode()
    assert page.count('<details class="price-change" open>') == 1
    assert list(PriceRule.objects.filter(team=team).values_list("amount", "unit")) == [
        (Decimal("0.01"), "per_image")
    ]
    assert client.get("/costs/prices/").status_code == 200


# --- Deleting a mistake -----------------------------------------------------------------------


def test_an_owner_deletes_a_price_that_priced_nothing(team, owner):
    mistake = team_rule(team, "5", timezone.now() + timedelta(days=3))

    response = signed_in(owner).post(f"/costs/prices/{mistake.pk}/delete", follow=True)

    assert response.status_code == 200
    assert not PriceRule.objects.filter(team=team).exists()
    assert "Deleted the price Replicate acme/painter: $5.00 per output image." in text_of(response)
    [event] = AuditEvent.objects.filter(team=team, action="price_rule_deleted")
    assert event.description.startswith("otto deleted the price Replicate acme/painter: $5.00")


def test_a_price_deleted_twice_at_once_is_deleted_and_recorded_once(team):
    rule = team_rule(team, "5", timezone.now() + timedelta(days=3))
    seen_by_both = PriceRule.objects.get(pk=rule.pk)  # two owners' requests read it

    assert rule.delete_unless_used() is True
    assert seen_by_both.delete_unless_used() is None  # the second says it was already gone


def test_a_future_prices_change_form_offers_its_own_first_day(team, owner):
    start = timezone.now() + timedelta(days=10)
    rule = team_rule(team, "0.05", start)

    page = signed_in(owner).get("/costs/prices/").content.decode()

    assert input_value(page, f"rule-{rule.pk}-since") == timezone.localdate(start).isoformat()


def test_a_price_that_priced_predictions_stays_and_the_owner_is_told_to_change_it(
    team, owner, member
):
    used = team_rule(team, "0.01", on(1, 0))
    ended(member, on(5))
    client = signed_in(owner)

    page = client.get("/costs/prices/").content.decode()
    response = client.post(f"/costs/prices/{used.pk}/delete", follow=True)

    assert f"/costs/prices/{used.pk}/delete" not in page
    assert "In use: kept for the costs it priced." in text_of(client.get("/costs/prices/"))
    assert PriceRule.objects.filter(pk=used.pk).exists()
    assert (
        "The price Replicate acme/painter: $0.01 per output image has priced predictions, so it "
        "stays: change its price from a day instead." in text_of(response)
    )
    assert not AuditEvent.objects.filter(action="price_rule_deleted").exists()


def test_a_mistake_deleted_before_its_repricing_ran_leaves_the_costs_as_they_were(
    team, owner, member
):
    right = team_rule(team, "0.01", on(1, 0))
    priced = ended(member, on(20))
    client = signed_in(owner)
    # The mistake: $5 an image from 15 January, caught before the background priced anything.
    mistake = {"provider": "replicate", "model": PAINTER, "unit": "per_image", "amount": "5"}
    client.post(
        "/costs/prices/new", {**mistake, "currency": "USD", "effective_from": "2026-01-15T00:00"}
    )
    wrong = PriceRule.objects.get(team=team, amount=5)
    assert f"/costs/prices/{wrong.pk}/delete" in client.get("/costs/prices/").content.decode()

    assert client.post(f"/costs/prices/{wrong.pk}/delete").status_code == 302
    reprice_pending()

    assert (cost_of(priced).amount, cost_of(priced).rule) == (Decimal("0.01"), right)
    assert roll_ups(team) == rebuilt_roll_ups(team)


# --- Whose rules, and who may -----------------------------------------------------------------


def test_the_deployments_prices_are_not_the_teams_to_change_or_delete(team, owner):
    seeded = PriceRule.objects.filter(team=None, provider="replicate", model=SCHNELL).first()
    client = signed_in(owner)
    own = team_rule(team, "0.01", on(1, 0))

    assert change(client, seeded, amount="0.5").status_code == 404
    assert client.post(f"/costs/prices/{seeded.pk}/delete").status_code == 404
    assert PriceRule.objects.filter(pk=seeded.pk, amount=Decimal("0.003")).exists()
    page = client.get("/costs/prices/").content.decode()
    assert page.count('<details class="price-change"') == 1
    assert f"/costs/prices/{own.pk}/change" in page


def test_another_teams_price_answers_404(team, owner):
    elsewhere = make_team("Elsewhere")
    theirs = team_rule(elsewhere, "0.01", on(1, 0))
    client = signed_in(owner)

    assert change(client, theirs).status_code == 404
    assert client.post(f"/costs/prices/{theirs.pk}/delete").status_code == 404
    assert list(PriceRule.objects.filter(team=elsewhere)) == [theirs]


def test_members_and_viewers_see_no_controls_and_are_refused(team, member):
    viewer = make_user("vic", team, Role.VIEWER)
    rule = team_rule(team, "0.01", on(1, 0))

    for user in (viewer, member):
        client = signed_in(user)
        page = client.get("/costs/prices/").content.decode()
        assert "Change price" not in page and "/delete" not in page
        assert change(client, rule).status_code == 403
        assert client.post(f"/costs/prices/{rule.pk}/delete").status_code == 403
    assert list(PriceRule.objects.filter(team=team)) == [rule]
