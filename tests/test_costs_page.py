"""What the pages say about money: the costs page and its CSV, prices and budgets, the estimate
on the New images form, the cost on every row, tile and prediction page, and the budget banner.

The seeded deployment prices are used as they are: Replicate's flux-schnell at $0.003 an image
and flux-dev at $0.025; acme/painter has no price at all."""

import csv
import html
import io
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import AuditEvent, Role
from costs.models import Budget, PredictionCost, PriceRule
from outputs.models import Board, ShareLink
from predictions.models import Prediction

from .conftest import make_output, make_prediction, make_team, make_user
from .test_accounts import store_key

pytestmark = pytest.mark.django_db

SCHNELL = "black-forest-labs/flux-schnell"
DEV = "black-forest-labs/flux-dev"
PAINTER = "acme/painter"
HTMX = {"HX-Request": "true"}
JANUARY = "since=2026-01-01&until=2026-01-31"


def on(day: int, hour: int = 12) -> datetime:
    """A moment of January 2026, in UTC."""
    return datetime(2026, 1, day, hour, tzinfo=UTC)


def ended(
    member,
    *,
    model: str = SCHNELL,
    images: int = 1,
    status: str = "succeeded",
    at: datetime | None = None,
    prompt: str = "a lighthouse",
    **input,
) -> Prediction:
    """A Replicate prediction of `member`'s team that ended as `status` with `images` images,
    recorded as a worker records the provider's answer (which prices it)."""
    prediction = make_prediction(
        prompt,
        team=member.memberships.get().team,
        submitted_by=member,
        provider="replicate",
        model=model,
        submitted_at=at or timezone.now(),
        input={"prompt": prompt, **input},
    )
    prediction.apply_remote(
        {
            "id": uuid.uuid4().hex,
            "status": status,
            "metrics": {"image_count": images, "predict_time": 1.5},
            "started_at": "2026-01-01T00:00:01Z",
        }
    )
    return prediction


def timed_out(member, *, model: str = DEV, at: datetime | None = None, **input) -> Prediction:
    """Darkroom stopped following it: possibly charged what its images would cost."""
    prediction = make_prediction(
        team=member.memberships.get().team,
        submitted_by=member,
        provider="replicate",
        model=model,
        submitted_at=at or timezone.now(),
        input={"prompt": "lost", **input},
    )
    prediction.apply_remote({"id": uuid.uuid4().hex, "status": "processing"})
    prediction.time_out()
    return prediction


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text_of(response) -> str:
    """The page's text as read: without tags, one space for any run of white space."""
    words = re.sub(r"<[^>]+>", " ", response.content.decode())
    return re.sub(r"\s+", " ", html.unescape(words))


def href(html_text: str, label: str) -> str:
    """The href of the first link whose text is `label`."""
    match = re.search(rf'<a href="([^"]+)"[^>]*>\s*{re.escape(label)}\s*</a>', html_text)
    assert match, f"no link {label!r}"
    return html.unescape(match[1])


def history_prompts(client, url: str) -> list[str]:
    response = client.get(url)
    assert response.status_code == 200, url
    return [p.prompt for p in response.context["chunk"].predictions]


@pytest.fixture
def owner(team):
    return make_user("otto", team, Role.OWNER)


@pytest.fixture
def january(team, member, owner):
    """A month of mixed history: charged, free, unpriced and possibly charged predictions of two
    members; one from December and one of another team, which January's figures leave out."""
    made = {
        "mia-schnell": ended(member, images=2, at=on(3), prompt="mia schnell"),
        "mia-dev": ended(member, model=DEV, images=1, at=on(3, 18), prompt="mia dev"),
        "otto-schnell": ended(owner, images=4, at=on(10), prompt="otto schnell"),
        "otto-failed": ended(owner, status="failed", images=0, at=on(10), prompt="otto failed"),
        "painter-1": ended(member, model=PAINTER, at=on(12), prompt="painter one"),
        "painter-2": ended(owner, model=PAINTER, at=on(20), prompt="painter two"),
        "lost": timed_out(member, at=on(21), num_outputs=2),
    }
    ended(member, images=100, at=datetime(2025, 12, 31, 23, tzinfo=UTC), prompt="december")
    ended(make_user("olga", make_team("Elsewhere")), images=50, at=on(3), prompt="elsewhere")
    return made


# --- The costs page ---------------------------------------------------------------------------


def test_the_pages_totals_equal_the_sum_of_the_periods_costs(client, team, january):
    response = client.get(f"/costs/?{JANUARY}")

    assert response.status_code == 200
    report = response.context["report"]
    raw = PredictionCost.objects.filter(
        team=team, day__gte=date(2026, 1, 1), day__lte=date(2026, 1, 31)
    )
    charged = raw.filter(kind__in=["charged", "free"]).aggregate(total=Sum("amount"))["total"]
    possibly = raw.filter(kind="possibly_charged").aggregate(total=Sum("amount"))["total"]
    # 2 × 0.003 + 0.025 + 4 × 0.003 + 0 (failed, no image); the timed-out 2 × 0.025 apart.
    assert charged == Decimal("0.043")
    assert report.total.spent == {"USD": charged, "": Decimal(0)}
    assert report.total.possibly["USD"] == possibly == Decimal("0.05")
    assert (report.total.predictions, report.total.unpriced, report.total.possibly_charged) == (
        7,
        2,
        1,
    )
    # Each breakdown adds up to the same totals.
    for figures in (report.days, report.members, report.models, report.statuses):
        assert sum(f.sums.predictions for f in figures) == 7
        assert sum(f.sums.spent["USD"] for f in figures) == charged
    text = text_of(response)
    assert "$0.043" in text
    assert "~$0.05" in text
    assert "1 – 31 Jan 2026" in text


def test_the_page_shows_this_month_unless_another_period_is_chosen(client, member):
    ended(member, images=3, prompt="today")
    last_month = timezone.now().replace(day=1) - timedelta(days=1)
    ended(member, images=5, at=last_month, prompt="last month")

    this_month = client.get("/costs/").context["report"]
    before = client.get("/costs/?period=last_month").context["report"]
    week = client.get("/costs/?period=last_7").context["report"]

    assert this_month.total.spent["USD"] == Decimal("0.009")
    assert this_month.period.first == timezone.now().date().replace(day=1)
    assert before.total.spent["USD"] == Decimal("0.015")
    assert len(week.days) == 7
    assert week.period.last == timezone.now().date()


def test_a_period_the_form_cannot_read_is_refused_and_says_why(client):
    backwards = client.get("/costs/?since=2026-02-01&until=2026-01-01")
    too_long = client.get("/costs/?since=2024-01-01&until=2026-01-01")
    stranger = client.get("/costs/?member=nobody")

    assert backwards.status_code == too_long.status_code == stranger.status_code == 400
    assert "The end date is before the start date." in text_of(backwards)
    assert "Choose at most 366 days." in text_of(too_long)
    assert "No member of this team is called nobody." in text_of(stranger)


def test_unpriced_predictions_are_counted_with_their_reasons_never_as_zero(
    client, team, member, january
):
    PriceRule.objects.create(
        provider="replicate",
        model="acme/timer",
        unit="per_second",
        amount=Decimal("0.001"),
        effective_from=on(1, 0),
    )
    timer = make_prediction(
        team=team,
        submitted_by=member,
        provider="replicate",
        model="acme/timer",
        submitted_at=on(25),
    )
    timer.apply_remote({"id": "t1", "status": "succeeded", "started_at": "2026-01-25T12:00:00Z"})

    response = client.get(f"/costs/?{JANUARY}")

    report = response.context["report"]
    assert report.total.unpriced == 3
    reasons = {(r.model, r.explanation): r.count for r in report.reasons}
    assert reasons == {
        (PAINTER, "No price for Replicate acme/painter."): 2,
        (
            "acme/timer",
            "The provider reported no run time (predict_time), and $0.001 per second of run "
            "time needs one.",
        ): 1,
    }
    painter = next(f for f in report.models if f.key == PAINTER)
    assert painter.sums.spent_text == "—"
    text = text_of(response)
    assert "3 predictions of this period have no price" in text
    assert "No price for Replicate acme/painter." in text
    assert "acme/painter 2 — — 2" in text  # predictions, spent, possibly charged, unpriced


def test_each_figure_links_to_the_history_of_the_predictions_behind_it(
    client, member, owner, january
):
    report = client.get(f"/costs/?{JANUARY}").context["report"]
    by = {
        name: {f.key: f for f in figures}
        for name, figures in (
            ("member", report.members),
            ("model", report.models),
            ("status", report.statuses),
            ("day", report.days),
        )
    }

    assert sorted(history_prompts(client, report.total_history)) == sorted(
        p.prompt for p in january.values()
    )
    assert sorted(history_prompts(client, by["member"][str(owner.pk)].history)) == [
        "otto failed",
        "otto schnell",
        "painter two",
    ]
    assert sorted(history_prompts(client, by["model"][DEV].history)) == ["lost", "mia dev"]
    assert history_prompts(client, by["status"]["failed"].history) == ["otto failed"]
    assert sorted(history_prompts(client, by["day"]["2026-01-03"].history)) == [
        "mia dev",
        "mia schnell",
    ]
    assert history_prompts(client, report.reasons[0].history) == ["painter two", "painter one"]
    for figures in by.values():
        for figure in figures.values():
            assert len(history_prompts(client, figure.history)) == figure.sums.predictions


def test_the_pages_links_carry_its_narrowing_to_the_history(client, member, january):
    response = client.get(f"/costs/?{JANUARY}&member=mia")

    report = response.context["report"]
    assert report.total.predictions == 4
    assert [f.key for f in report.members] == [str(member.pk)]
    schnell = next(f for f in report.models if f.key == SCHNELL)
    assert "member=mia" in schnell.history and "model=black-forest-labs" in schnell.history
    assert history_prompts(client, schnell.history) == ["mia schnell"]
    # The chart's and the table's links of a day are the same.
    day = href(response.content.decode(), "Sat 3 Jan")
    assert history_prompts(client, day) == ["mia dev", "mia schnell"]


def test_a_deleted_members_spend_stays_in_the_figures_without_a_link(client, owner, january):
    before = client.get(f"/costs/?{JANUARY}").context["report"]

    owner.delete()
    after = client.get(f"/costs/?{JANUARY}").context["report"]

    assert after.total == before.total
    deleted = next(f for f in after.members if f.label == "Deleted members")
    assert (deleted.sums.predictions, deleted.history) == (3, None)
    assert deleted.sums.spent["USD"] == Decimal("0.012")


def test_the_day_chart_is_an_svg_with_a_title_for_every_day_and_no_inline_style(client, january):
    page = client.get(f"/costs/?{JANUARY}").content.decode()

    chart = re.search(r'<svg class="columns".*?</svg>', page, re.DOTALL)[0]
    titles = re.findall(r"<title>([^<]*)</title>", chart)
    assert len(titles) == 31  # one a day; the chart's own has an id
    assert "Sat 3 Jan: $0.031 spent, 2 predictions" in html.unescape(titles[2])
    assert "Wed 21 Jan: — spent, ~$0.05 possibly charged, 1 prediction" in html.unescape(titles[20])
    assert "style=" not in page and "<script>" not in page


def test_a_day_chart_with_nothing_priced_has_no_scale_rather_than_zero(client, member):
    ended(member, model=PAINTER)

    text = text_of(client.get("/costs/"))

    assert "Tallest column: —" in text
    assert "$0.00" not in text


def test_the_page_of_a_team_without_costs_says_so(client):
    response = client.get("/costs/")

    text = text_of(response)
    assert response.status_code == 200
    assert "No ended predictions in this period." in text
    assert "Every ended prediction of this period has a price." in text


# --- The CSV export ---------------------------------------------------------------------------


def csv_rows(response) -> list[list[str]]:
    assert response.streaming
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_the_csv_lists_the_predictions_behind_the_page_and_only_the_teams(client, january):
    response = client.get(f"/costs/export.csv?{JANUARY}")

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="darkroom-costs-2026-01-01-to-2026-01-31.csv"'
    )
    header, *rows = csv_rows(response)
    assert header == [
        "submitted_at",
        "member",
        "provider",
        "model",
        "status",
        "kind",
        "amount",
        "currency",
        "prediction",
        "prompt",
    ]
    assert sorted(int(row[8]) for row in rows) == sorted(p.pk for p in january.values())
    by_prompt = {row[9]: row for row in rows}
    assert by_prompt["mia schnell"] == [
        "2026-01-03T12:00:00+00:00",
        "mia",
        "replicate",
        SCHNELL,
        "succeeded",
        "charged",
        "0.006",
        "USD",
        str(january["mia-schnell"].pk),
        "mia schnell",
    ]
    assert by_prompt["painter one"][5:8] == ["unpriced", "", ""]
    assert by_prompt["lost"][4:8] == ["timed_out", "possibly_charged", "0.05", "USD"]
    # The CSV adds up to the page.
    report = client.get(f"/costs/?{JANUARY}").context["report"]
    charged = sum(Decimal(r[6]) for r in rows if r[5] in ("charged", "free"))
    assert charged == report.total.spent["USD"]


def test_the_csv_follows_the_pages_narrowing(client, january):
    _, *rows = csv_rows(client.get(f"/costs/export.csv?{JANUARY}&model={DEV}"))
    _, *failed = csv_rows(client.get(f"/costs/export.csv?{JANUARY}&status=failed"))

    assert sorted(row[9] for row in rows) == ["lost", "mia dev"]
    assert [row[9] for row in failed] == ["otto failed"]
    page = client.get(f"/costs/?{JANUARY}&model={DEV}").content.decode()
    query = "since=2026-01-01&amp;until=2026-01-31&amp;model=black-forest-labs%2Fflux-dev"
    assert f'href="/costs/export.csv?{query}"' in page


def test_the_csv_link_of_the_page_without_a_query_has_no_question_mark(client):
    page = client.get("/costs/").content.decode()

    assert 'href="/costs/export.csv">Export CSV</a>' in page


def test_the_csv_neutralises_spreadsheet_formulas_in_every_text_cell(client, team):
    sneaky = make_user("@eve", team)
    prompts = ['=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1)", "\tTAB", "\rCR", "fine"]
    # Past leading blanks, and in full width, a spreadsheet still sees a formula.
    prompts += [" =1+1", "\n=1+1", "\u00a0=1+1", "＝1+1"]
    for prompt in prompts:
        ended(sneaky, prompt=prompt, at=on(5))

    _, *rows = csv_rows(client.get(f"/costs/export.csv?{JANUARY}"))

    assert sorted(row[9] for row in rows) == sorted(
        [
            '\'=HYPERLINK("http://x")',
            "'+1+1",
            "'-2",
            "'@SUM(A1)",
            "'\tTAB",
            "'\rCR",
            "fine",
            "' =1+1",
            "'\n=1+1",
            "'\u00a0=1+1",
            "'＝1+1",
        ]
    )
    assert {row[1] for row in rows} == {"'@eve"}


def test_the_csv_of_another_teams_member_is_their_own_teams(january):
    olga = Prediction.objects.get(input__prompt="elsewhere").submitted_by

    _, *rows = csv_rows(signed_in(olga).get(f"/costs/export.csv?{JANUARY}"))

    assert [row[9] for row in rows] == ["elsewhere"]


# --- Prices -----------------------------------------------------------------------------------


def price_form(**changes) -> dict:
    return {
        "provider": "replicate",
        "model": PAINTER,
        "unit": "per_image",
        "amount": "0.01",
        "currency": "USD",
        "effective_from": "2026-02-01T00:00",
        "source": "Our invoice",
        **changes,
    }


def test_everyone_sees_the_prices_and_only_owners_get_the_form(team, member, owner):
    viewer = make_user("vic", team, Role.VIEWER)

    for user in (viewer, member, owner):
        text = text_of(signed_in(user).get("/costs/prices/"))
        assert "$0.003 per output image" in text
        assert "replicate.com/pricing" in text
        assert ("Add a price for the team" in text) == (user == owner)


def test_an_owner_adds_a_team_price_from_a_moment_on_and_earlier_costs_stay(team, owner, member):
    before = ended(member, model=PAINTER, at=on(20))

    response = signed_in(owner).post("/costs/prices/new", price_form())
    after = ended(member, model=PAINTER, at=datetime(2026, 2, 2, tzinfo=UTC))

    assert response.status_code == 302
    rule = PriceRule.objects.get(team=team)
    assert (rule.amount, rule.effective_from) == (Decimal("0.01"), datetime(2026, 2, 1, tzinfo=UTC))
    assert PredictionCost.objects.get(pk=before.pk).kind == "unpriced"
    assert PredictionCost.objects.get(pk=after.pk).amount == Decimal("0.01")
    assert AuditEvent.objects.filter(team=team, action="price_rule_added").count() == 1
    page = text_of(signed_in(owner).get("/costs/prices/"))
    assert "$0.01 per output image" in page and "The team's" in page


def test_the_add_a_price_form_starts_with_the_provider_the_teams_new_images_start_with(team, owner):
    def chosen_provider() -> str:
        page = signed_in(owner).get("/costs/prices/").content.decode()
        form = page[page.index('action="/costs/prices/new"') :]
        return re.search(r'name="provider"[^>]*>.*?<option value="(\w+)" selected', form, re.S)[1]

    assert chosen_provider() == settings.DEFAULT_PROVIDER
    store_key(team, "replicate")
    assert chosen_provider() == "replicate"


def test_a_second_price_from_the_same_moment_is_refused_in_words(owner):
    client = signed_in(owner)
    client.post("/costs/prices/new", price_form())

    again = client.post("/costs/prices/new", price_form(amount="0.02"))

    assert again.status_code == 400
    assert "already has a price for this model from this moment" in text_of(again)
    assert PriceRule.objects.filter(model=PAINTER).count() == 1


def test_a_price_above_ten_thousand_a_unit_is_refused_in_words(team, owner):
    response = signed_in(owner).post("/costs/prices/new", price_form(amount="10000.01"))

    assert response.status_code == 400
    assert "At most 10,000 a unit: a higher price is a typing mistake." in text_of(response)
    assert not PriceRule.objects.filter(team=team).exists()


def test_a_viewer_or_member_cannot_add_a_price(team, member):
    viewer = make_user("vic", team, Role.VIEWER)

    for user in (viewer, member):
        assert signed_in(user).post("/costs/prices/new", price_form()).status_code == 403
    assert not PriceRule.objects.filter(model=PAINTER).exists()


# --- Budgets ----------------------------------------------------------------------------------


def test_an_owner_sets_the_teams_budget_and_a_members_limit_and_removes_them(team, owner, member):
    client = signed_in(owner)

    team_budget = client.post("/costs/budgets/save", {"team-amount": "100", "team-currency": "USD"})
    limit = client.post(
        "/costs/budgets/save",
        {"limit-member": "mia", "limit-amount": "5.50", "limit-currency": "USD"},
    )

    assert team_budget.status_code == limit.status_code == 302
    assert Budget.objects.get(team=team, member=None).amount == Decimal("100")
    assert Budget.objects.get(team=team, member=member).amount == Decimal("5.50")
    page = text_of(client.get("/costs/budgets/"))
    assert "0% of $100.00 $0.00 spent in" in page
    assert "0% of $5.50 $0.00 spent in" in page

    client.post(
        "/costs/budgets/save", {"limit-member": "mia", "limit-amount": "", "limit-currency": "USD"}
    )
    assert not Budget.objects.filter(member=member).exists()
    assert AuditEvent.objects.filter(team=team, action="budget_set").count() == 3


def test_a_limit_needs_a_member_of_the_team(team, owner):
    make_user("olga", make_team("Elsewhere"))

    response = signed_in(owner).post(
        "/costs/budgets/save",
        {"limit-member": "olga", "limit-amount": "5", "limit-currency": "USD"},
    )

    assert response.status_code == 400
    assert "No member of this team is called olga." in text_of(response)
    assert not Budget.objects.exists()


def test_a_member_sees_only_their_own_limit_and_spend(team, owner, member):
    leo = make_user("leo", team)
    Budget.objects.create(team=team, member=member, amount=Decimal("2"))
    Budget.objects.create(team=team, member=leo, amount=Decimal("9"))
    ended(member, images=100)
    ended(leo, images=1000)

    mine = text_of(signed_in(member).get("/costs/budgets/"))
    everyone = text_of(signed_in(owner).get("/costs/budgets/"))

    assert "Your own limit" in mine and "mia (you)" in mine
    assert "$0.30" in mine and "of $2.00" in mine
    assert "leo" not in mine and "$9.00" not in mine and "$3.00" not in mine
    assert "Save" not in mine
    assert "leo" in everyone and "$9.00" in everyone and "$3.00" in everyone


def test_a_viewer_sees_the_teams_budget_and_nothing_to_edit(team):
    viewer = make_user("vic", team, Role.VIEWER)
    Budget.objects.create(team=team, amount=Decimal("50"))

    text = text_of(signed_in(viewer).get("/costs/budgets/"))

    assert "of $50.00" in text
    assert (
        "<form" not in signed_in(viewer).get("/costs/budgets/").content.decode().split("<main>")[1]
    )


def test_a_viewer_or_member_cannot_set_a_budget(team, member):
    viewer = make_user("vic", team, Role.VIEWER)

    for user in (viewer, member):
        for data in (
            {"team-amount": "1000", "team-currency": "USD"},
            {"limit-member": "mia", "limit-amount": "1000", "limit-currency": "USD"},
        ):
            assert signed_in(user).post("/costs/budgets/save", data).status_code == 403
    assert not Budget.objects.exists()


# --- The banner -------------------------------------------------------------------------------


def banner_queries(queries: CaptureQueriesContext) -> list[str]:
    """The queries of a page that read budgets or the roll-ups they count."""
    tables = ('"costs_budget"', '"costs_dailycost"')
    return [q["sql"] for q in queries.captured_queries if any(t in q["sql"] for t in tables)]


def test_the_banner_warns_at_80_percent_on_full_pages_only(client, team, member):
    Budget.objects.create(team=team, amount=Decimal("0.01"))
    ended(member, images=2)  # $0.006 of $0.01
    quiet = text_of(client.get("/"))
    ended(member, images=1)  # $0.009

    with CaptureQueriesContext(connection) as queries:
        warned = client.get("/")
    # The team's budgets, then the month's roll-ups they count (read before the next request
    # clears the log).
    read = banner_queries(queries)
    fragment = client.get("/?through=1-1", headers=HTMX).content.decode()

    assert "of the team's monthly budget" not in quiet
    text = text_of(warned)
    assert "90% of the team's monthly budget of $0.01 is used: $0.009 spent in" in text
    assert len(read) == 2
    assert "monthly budget" not in fragment and "<main>" not in fragment


def test_a_team_without_a_budget_asks_only_whether_it_has_one(client, member):
    ended(member, images=2)

    with CaptureQueriesContext(connection) as queries:
        client.get("/")

    (query,) = banner_queries(queries)
    assert '"costs_budget"' in query and '"costs_dailycost"' not in query


def test_a_member_is_warned_about_their_own_limit(team, member):
    leo = make_user("leo", team)
    Budget.objects.create(team=team, member=member, amount=Decimal("0.01"))
    ended(member, images=3)
    ended(leo, images=100)  # not theirs: it counts against no one's own limit

    assert "90% of your own monthly limit of $0.01" in text_of(signed_in(member).get("/"))
    assert "monthly limit" not in text_of(signed_in(leo).get("/"))


def test_the_teams_budget_counts_every_members_spend_and_a_removed_ones(team, member):
    leo = make_user("leo", team)
    gone = make_user("gus", team)
    Budget.objects.create(team=team, amount=Decimal("0.01"))
    Budget.objects.create(team=team, member=leo, amount=Decimal("1.00"))
    ended(leo, images=1)  # $0.003
    ended(gone, images=2)  # $0.006, kept once gus is deleted
    gone.delete()

    assert "90% of the team's monthly budget of $0.01" in text_of(signed_in(member).get("/"))
    # Leo's own limit is far; the team's budget is the nearer.
    assert "90% of the team's monthly budget" in text_of(signed_in(leo).get("/"))


# --- The estimate on the New images form -------------------------------------------------------


def estimate(client, **params) -> str:
    data = {"provider": "simulator", "model": SCHNELL, **params}
    response = client.get("/costs/estimate", data, headers=HTMX)
    assert response.status_code == 200
    return text_of(response)


def test_the_form_shows_the_estimate_of_its_default_request(client):
    text = text_of(client.get("/new/"))

    assert "Estimated cost $0.003 1 image × $0.003 per output image" in text
    assert 'hx-get="/costs/estimate"' in client.get("/new/").content.decode()


def test_the_estimate_asks_again_as_inputs_are_typed_in_and_on_every_change_but_not_the_prompt(
    client,
):
    page = client.get("/new/").content.decode()

    trigger = re.search(r'id="cost-estimate"[^>]*hx-trigger="([^"]+)"', page)[1]
    assert trigger.split(", ") == [
        "input changed delay:400ms from:closest form target::not([name=prompt])",
        "change from:closest form",
        "htmx:afterRequest from:.model-picker",
    ]


def test_the_estimate_is_outputs_times_variations_times_price(client):
    text = estimate(client, num_outputs="2", variations="3")

    assert "Estimated cost $0.018" in text
    assert "3 predictions, each 2 images × $0.003 per output image" in text
    assert "<html" not in text


def test_the_estimate_of_a_model_without_a_price_is_unknown_never_zero(client):
    text = estimate(client, model=PAINTER, extra_input='{"num_outputs": 2}')

    assert "Estimated cost unknown No price for Demo (simulator) acme/painter." in text
    assert "$0" not in text


def test_the_estimate_waits_for_inputs_that_make_a_request(client):
    text = estimate(client, num_outputs="99")

    assert "The estimated cost shows here once the inputs are valid." in text


def test_a_member_sees_their_spend_against_their_own_limit_and_a_refusal_before_generate(
    client, team, member
):
    PriceRule.objects.create(
        team=team,
        provider="simulator",
        model=SCHNELL,
        unit="per_image",
        amount=Decimal(1),
        effective_from=datetime(2024, 1, 1, tzinfo=UTC),
    )
    Budget.objects.create(team=team, member=member, amount=Decimal("10"))
    prediction = make_prediction(team=team, submitted_by=member)
    prediction.apply_remote({"id": "s1", "status": "succeeded", "metrics": {"image_count": 4}})

    fits = estimate(client, num_outputs="2")
    too_much = estimate(client, num_outputs="4", variations="2")

    assert "Your own monthly limit 40% of $10.00 $4.00 spent in" in fits
    assert "refused" not in fits
    assert "Generate would be refused: this would go over your own monthly limit of $10.00." in (
        too_much
    )


def test_a_viewer_gets_no_estimate(team):
    viewer = make_user("vic", team, Role.VIEWER)

    assert signed_in(viewer).get("/costs/estimate").status_code == 403


# --- A prediction's cost on every page ----------------------------------------------------------


def test_every_row_of_the_history_shows_its_cost_or_why_it_has_none(client, member):
    ended(member, images=2, prompt="charged")
    ended(member, model=PAINTER, prompt="unpriced")
    timed_out(member, num_outputs=2)
    make_prediction("running", team=member.memberships.get().team, status="processing")

    page = client.get("/").content.decode()

    cells = re.findall(r'<td class="num cost">(.*?)</td>', page, re.DOTALL)
    assert len(cells) == 4
    assert (
        '<span class="cost cost-charged" title="2 images × $0.003 per output image">$0.006</span>'
        in page
    )
    unpriced = 'title="No price for Replicate acme/painter.">unpriced</span>'
    assert f'<span class="cost cost-unpriced" {unpriced}' in page
    assert ">possibly charged ~$0.05</span>" in page
    assert '<span class="cost cost-pending" title="Priced when it ends.">—</span>' in page


def queries_for(client, url: str, headers=None) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url, headers=headers or {}).status_code == 200
    return len(queries)


@pytest.mark.parametrize("url", ["/", "/gallery/"])
def test_a_chunks_costs_take_one_query_whatever_its_length(
    client, member, url, django_assert_num_queries
):
    def add(count: int) -> None:
        for n in range(count):
            make_output(ended(member, images=1, prompt=f"frame {n}"))

    add(2)
    page = queries_for(client, url)
    fragment = queries_for(client, f"{url}?before=9999999999999999-1", HTMX)
    add(6)

    with django_assert_num_queries(page):
        client.get(url)
    with django_assert_num_queries(fragment):
        response = client.get(f"{url}?before=9999999999999999-1", headers=HTMX)
    # A row's cost cell, or a tile's caption.
    shown = r'<td class="num cost"><span class="cost cost-charged"[^>]*>\$0\.003<'
    shown += r'|caption-cost">\$0\.003<'
    assert len(re.findall(shown, response.content.decode())) == 8


def test_a_tile_carries_its_cost_to_the_lightbox_but_not_on_a_share_page(client, team, member):
    prediction = ended(member, model=PAINTER, prompt="a fox")
    output = make_output(prediction)

    gallery = client.get("/gallery/").content.decode()
    board = Board.objects.create(team=team, name="Foxes")
    board.add([output])
    _, token = ShareLink.create(team=team, created_by=member, title="Fox", board=board)
    shared = Client().get(f"/s/{token}/").content.decode()

    assert 'data-cost="unpriced" data-cost-note="No price for Replicate acme/painter."' in gallery
    assert '<span class="caption-meta caption-cost">unpriced</span>' in gallery
    assert 'id="lightbox-cost"' in gallery
    assert "data-cost" not in shared and "lightbox-cost" not in shared


def test_a_prediction_page_shows_its_cost_and_why_also_when_it_refreshes(client, member):
    prediction = ended(member, images=2, prompt="two")
    make_output(prediction)

    page = text_of(client.get(prediction.get_absolute_url()))
    live = client.get(prediction.get_absolute_url(), headers=HTMX).content.decode()

    assert "Cost $0.006 2 images × $0.003 per output image" in page
    assert 'data-cost="$0.006"' in live
    assert "Cost</span>" in live


def test_a_running_prediction_is_priced_when_it_ends(client, member):
    prediction = make_prediction(
        "soon", team=member.memberships.get().team, status="processing", provider_id="p1"
    )

    assert "Cost — Priced when it ends." in text_of(client.get(prediction.get_absolute_url()))
