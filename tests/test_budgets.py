"""Monthly budgets: new images that would go past the team's budget or a member's own limit are
refused before anything is saved or sent; at 80% the team (or the member) is warned."""

import html
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.models import Role
from costs.models import Budget, PriceRule, month_of
from predictions.client import ProviderClient
from predictions.models import Prediction
from predictions.signals import submitting

from .conftest import make_prediction, make_user

pytestmark = pytest.mark.django_db

SCHNELL = "black-forest-labs/flux-schnell"
PAINTER = "acme/painter"  # a model no seeded rule prices


@pytest.fixture(autouse=True)
def dollar_an_image(team) -> PriceRule:
    """The team's own price for schnell on the simulator: $1 an image, for easy sums."""
    return PriceRule.objects.create(
        team=team,
        provider="simulator",
        model=SCHNELL,
        unit="per_image",
        amount=Decimal(1),
        effective_from=datetime(2024, 1, 1, tzinfo=UTC),
    )


def budget(team, amount: str, member=None) -> Budget:
    return Budget.objects.create(team=team, member=member, amount=Decimal(amount))


def spend(team, member, images: int, status: str = "succeeded", **fields) -> Prediction:
    """A prediction of `member` that the simulator ran: `images` images at $1."""
    prediction = make_prediction(team=team, submitted_by=member, **fields)
    prediction.apply_remote(
        {
            "id": uuid.uuid4().hex,
            "status": status,
            "metrics": {"image_count": images, "predict_time": 1.0},
            "started_at": "2026-01-01T00:00:01Z",
        }
    )
    return prediction


def submit(client, variations: int = 1, model: str = SCHNELL, **extra):
    return client.post(
        "/predictions/new",
        {
            "provider": "simulator",
            "model": model,
            "prompt": "a teapot on the moon",
            "request_key": str(uuid.uuid4()),
            "variations": str(variations),
            **extra,
        },
    )


def send_due() -> None:
    """Send every prediction that is due, as the dispatcher and a worker would."""
    for pk, claim in Prediction.claim_due(limit=100):
        Prediction.take(pk, claim).advance(ProviderClient())


def page_text(response) -> str:
    return html.unescape(response.content.decode())


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def banner(user) -> str | None:
    """The budget banner of the history page as `user` sees it, in words; None if there is
    none."""
    page = signed_in(user).get("/").content.decode()
    found = re.search(r'<p class="banner banner-budget"[^>]*>(.*?)</p>', page, re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", "", found[1])).strip() if found else None


def test_images_over_the_budget_are_refused_before_anything_is_saved_or_sent(
    client, team, member, simulator
):
    budget(team, "10")
    spend(team, member, 8)

    refused = submit(client, variations=3)
    send_due()

    assert refused.status_code == 402
    assert Prediction.objects.count() == 1
    assert simulator.stats()["predictions_created"] == 0
    text = page_text(refused)
    assert "Not sent: this would go over the team's monthly budget of $10.00." in text
    assert "$8.00 spent in" in text
    assert "3 predictions would cost about $3.00" in text
    assert "Owners can raise the budget." in text

    # What fits in the budget is sent: the check above would have seen a create.
    allowed = submit(client, variations=2)
    send_due()

    assert allowed.status_code == 302
    assert simulator.stats()["predictions_created"] == 2


def test_the_estimate_counts_every_image_of_every_variation(client, team, member):
    budget(team, "7")

    refused = submit(client, variations=2, extra_input='{"num_outputs": 4}')

    assert refused.status_code == 402
    assert "2 predictions would cost about $8.00" in page_text(refused)
    assert submit(client, variations=1, extra_input='{"num_outputs": 4}').status_code == 302


def test_a_members_own_limit_refuses_them_and_no_one_else(client, team, member):
    budget(team, "2", member=member)
    other = make_user("leo", team)
    spend(team, member, 2)
    spend(team, other, 5)

    refused = submit(client)
    allowed = submit(signed_in(other))

    assert refused.status_code == 402
    assert "over your own monthly limit of $2.00" in page_text(refused)
    assert "$2.00 spent in" in page_text(refused)
    assert allowed.status_code == 302


def test_a_member_within_their_own_limit_is_still_held_to_the_teams_budget(client, team, member):
    budget(team, "5", member=member)
    budget(team, "6")
    spend(team, make_user("leo", team), 6)

    refused = submit(client)

    assert refused.status_code == 402
    assert "the team's monthly budget of $6.00" in page_text(refused)


def test_possibly_charged_and_running_predictions_count_against_the_budget(client, team, member):
    budget(team, "5")
    spend(team, member, 1)
    lost = make_prediction(team=team, submitted_by=member, input={"prompt": "x", "num_outputs": 2})
    lost.give_up_submit("Lost.")
    make_prediction(team=team, submitted_by=member)  # still to be sent: $1 if it runs

    refused = submit(client, variations=2)

    assert refused.status_code == 402
    assert "$1.00 spent in" in page_text(refused)
    assert "and up to $3.00 possibly charged or still running" in page_text(refused)
    assert submit(client, variations=1).status_code == 302


def test_only_this_calendar_months_spend_counts(client, team, member):
    budget(team, "5")
    first, _ = month_of(timezone.now())
    spend(
        team,
        member,
        9,
        submitted_at=datetime.combine(first, datetime.min.time(), UTC) - timedelta(seconds=1),
    )

    assert submit(client).status_code == 302


def test_a_request_of_unknown_cost_is_refused_only_once_the_budget_is_used_up(client, team, member):
    budget(team, "5")
    spend(team, member, 4)

    assert submit(client, model="someone/upscaler").status_code == 302
    spend(team, member, 1)
    refused = submit(client, model="someone/upscaler")

    assert refused.status_code == 402
    assert "the cost of 1 prediction is not known (No price for Demo (simulator)" in page_text(
        refused
    )


def test_run_again_over_the_budget_is_refused_and_creates_nothing(client, team, member):
    budget(team, "3")
    original = spend(team, member, 3)

    response = client.post(f"/predictions/{original.pk}/again", follow=True)

    assert "Not sent: this would go over the team's monthly budget of $3.00" in page_text(response)
    assert Prediction.objects.count() == 1


def test_the_team_is_warned_once_80_percent_of_its_budget_is_used(team, member):
    budget(team, "10")
    spend(team, member, 7)

    assert banner(member) is None

    spend(team, member, 1)
    warning = banner(member)
    assert warning.startswith("80% of the team's monthly budget of $10.00 is used: $8.00 spent in")
    assert warning.endswith("At 100% new images are refused. See the budgets")
    owner = make_user("olga", team, Role.OWNER)
    assert banner(owner).endswith("At 100% new images are refused. Raise the budget")


def test_a_member_is_warned_about_their_own_limit_and_others_are_not(team, member):
    budget(team, "100")
    budget(team, "2", member=member)
    other = make_user("leo", team)
    spend(team, member, 2)

    assert banner(member).startswith("100% of your own monthly limit of $2.00")
    assert banner(other) is None


def test_a_team_without_a_budget_is_never_refused_or_warned(client, team, member):
    spend(team, member, 500)

    assert banner(member) is None
    assert submit(client, variations=4).status_code == 302


def test_a_budgets_month_is_the_deployments_calendar_month(settings, team, member):
    settings.TIME_ZONE = "America/New_York"
    monthly = budget(team, "100")
    # 03:00 and 04:00 UTC on 1 February are still 31 January in New York.
    spend(team, member, 3, submitted_at=datetime(2026, 2, 1, 3, tzinfo=UTC))
    running = datetime(2026, 2, 1, 4, tzinfo=UTC)
    make_prediction(team=team, submitted_by=member, submitted_at=running)
    new_york = ZoneInfo("America/New_York")

    january = monthly.usage(at=datetime(2026, 1, 31, 23, tzinfo=new_york))
    february = monthly.usage(at=datetime(2026, 2, 1, 12, tzinfo=new_york))

    assert (january.first_day, january.spent, january.possibly) == (
        date(2026, 1, 1),
        Decimal(3),
        Decimal(1),  # the running one, at its estimate
    )
    assert (february.first_day, february.spent, february.possibly) == (date(2026, 2, 1), 0, 0)


# --- Currencies and what a budget cannot count --------------------------------------------------


def test_a_budget_is_set_only_in_a_currency_the_teams_prices_use(team):
    owner = signed_in(make_user("olga", team, Role.OWNER))

    in_euros = {"team-amount": "10", "team-currency": "EUR"}
    refused = owner.post("/costs/budgets/save", in_euros)

    assert refused.status_code == 400
    assert "No price of the team is in EUR: a budget in it would count nothing." in page_text(
        refused
    )
    assert '<option value="USD"' in page_text(refused)
    assert '<option value="EUR"' not in page_text(refused)
    assert not Budget.objects.exists()
    with pytest.raises(ValidationError, match="No price of the team is in EUR"):
        Budget(team=team, amount=Decimal(10), currency="EUR").full_clean()

    PriceRule.objects.create(
        team=team, provider="simulator", model=PAINTER, unit="per_image", amount=2, currency="EUR"
    )
    assert owner.post("/costs/budgets/save", in_euros).status_code == 302
    assert Budget.objects.get().currency == "EUR"


def test_what_a_budget_cannot_count_is_said_beside_its_usage_and_in_a_refusal(client, team, member):
    PriceRule.objects.create(
        team=team, provider="simulator", model=PAINTER, unit="per_image", amount=2, currency="EUR"
    )
    budget(team, "3")
    budget(team, "3", member=member)
    spend(team, member, 2)
    spend(team, member, 1, model=PAINTER)  # 2.00 EUR
    spend(team, member, 1, model="someone/upscaler")  # unpriced
    make_prediction(team=team, submitted_by=member, model="someone/upscaler")  # running

    usage = Budget.objects.get(member=None).usage()
    refused = submit(client, variations=2)
    owner = signed_in(make_user("olga", team, Role.OWNER))

    uncounted = "Not counted: 2 predictions of unknown cost, and 2.00 EUR in another currency."
    assert (usage.spent, usage.uncounted) == (Decimal(2), uncounted)
    assert refused.status_code == 402
    assert f"2 predictions would cost about $2.00. {uncounted} Owners can raise" in page_text(
        refused
    )
    assert page_text(owner.get("/costs/budgets/")).count(uncounted) == 2  # the team's, mia's
    assert uncounted in page_text(client.get("/new/"))  # beside mia's own limit


def test_once_a_budget_is_used_up_what_it_cannot_count_refuses_even_a_free_request(
    client, team, member
):
    PriceRule.objects.create(
        team=team, provider="simulator", model=PAINTER, unit="per_image", amount=0
    )
    budget(team, "2")
    spend(team, member, 2)

    assert submit(client, model=PAINTER).status_code == 302  # $0: nothing unknown yet

    spend(team, member, 1, model="someone/upscaler")  # unpriced: the month may be over
    refused = submit(client, model=PAINTER)

    assert refused.status_code == 402
    assert "Not counted: 1 prediction of unknown cost." in page_text(refused)


# --- Two at once --------------------------------------------------------------------------------


def waits_for_a_lock() -> bool:
    """Whether another transaction waits for a lock. PostgreSQL says so; SQLite, which runs one
    write transaction at a time, cannot."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks JOIN pg_database ON database = pg_database.oid "
            "WHERE NOT granted AND datname = current_database()"
        )
        return cursor.fetchone()[0] > 0


def until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_two_generates_at_once_cannot_both_pass_a_budget_that_fits_only_one(team, member):
    budget(team, "1.50")
    leo = make_user("leo", team)
    mia_passed, leo_done = threading.Event(), threading.Event()
    statuses = {}

    def hold_mias_generate(sender, member, **kwargs) -> None:
        """After the budget let mia's Generate through, before it is saved: until leo's waits
        for it (on SQLite, which cannot say so, a second), or went through too."""
        if member.username == "mia":
            mia_passed.set()
            until(lambda: leo_done.is_set() or waits_for_a_lock(), seconds=1)

    def generate(user, after: threading.Event | None = None) -> None:
        try:
            if after is not None:
                after.wait(timeout=5)
            statuses[user.username] = submit(signed_in(user)).status_code
        finally:
            if user == leo:
                leo_done.set()
            connection.close()

    submitting.connect(hold_mias_generate, sender=Prediction)
    try:
        threads = [
            threading.Thread(target=generate, args=(member,)),
            threading.Thread(target=generate, args=(leo, mia_passed)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        submitting.disconnect(hold_mias_generate, sender=Prediction)

    # $1 each: the first fits, and the second finds it running at its estimate.
    assert statuses == {"mia": 302, "leo": 402}
    assert list(Prediction.objects.values_list("submitted_by__username", flat=True)) == ["mia"]
