"""Dates, times and money read the same on every page (predictions/templatetags/formats.py): a
moment in a list is "15 Jun, 09:05" this year and "14 Mar 2025, 12:00" in another, on its own
page "15 Jun 2026, 09:05:07", always a <time> with the full moment and its zone on hover; a day
is "15 Jun 2026", a month "June 2026"; money keeps every decimal it has, so a sub-cent cost is
never $0.00, and an unpriced prediction never $0."""

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.template import engines
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent, Role
from api.models import ApiToken
from costs.models import Budget, PriceRule
from outputs.models import Board, ShareLink
from predictions.models import Prediction

from .conftest import make_output, make_prediction, make_user

pytestmark = pytest.mark.django_db

SCHNELL = "black-forest-labs/flux-schnell"  # seeded at $0.003 an image
PAINTER = "acme/painter"  # no price


def this_year(month: int = 6, day: int = 15, hour: int = 9, minute: int = 5) -> datetime:
    return datetime(timezone.localdate().year, month, day, hour, minute, 7, tzinfo=UTC)


def last_year() -> datetime:
    return datetime(timezone.localdate().year - 1, 3, 14, 12, 0, tzinfo=UTC)


def shown(moment: datetime, text: str) -> str:
    """The <time> a page shows `moment` in (TIME_ZONE is UTC here), reading `text`."""
    full = f"{moment.day} {moment:%b %Y}, {moment:%H:%M:%S} UTC"
    return f'<time datetime="{moment.isoformat()}" title="{full}">{text}</time>'


@pytest.fixture
def owner(team):
    return make_user("otto", team, Role.OWNER)


@pytest.fixture
def client(owner) -> Client:
    client = Client()
    client.force_login(owner)
    return client


def ended(owner, at: datetime, model: str = SCHNELL, prompt: str = "a lighthouse") -> Prediction:
    """A Replicate prediction of one image that succeeded, priced as a worker prices it."""
    prediction = make_prediction(
        prompt,
        team=owner.memberships.get().team,
        submitted_by=owner,
        provider="replicate",
        model=model,
        submitted_at=at,
    )
    prediction.apply_remote(
        {
            "id": uuid.uuid4().hex,
            "status": "succeeded",
            "metrics": {"image_count": 1, "predict_time": 1.5},
            "started_at": at.isoformat(),
            "completed_at": (at + timedelta(seconds=3)).isoformat(),
        }
    )
    return Prediction.objects.get(pk=prediction.pk)


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_a_history_row_leaves_out_this_years_year_and_names_another(client, owner):
    recent, old = this_year(), last_year()
    ended(owner, recent)
    ended(owner, old)

    html = client.get("/").content.decode()

    assert shown(recent, "15 Jun, 09:05") in html
    assert shown(old, f"14 Mar {old.year}, 12:00") in html


def test_moments_are_the_deployments_time_zones(settings, client, owner):
    settings.TIME_ZONE = "Europe/Paris"
    ended(owner, this_year())

    html = client.get("/").content.decode()

    year = this_year().year
    assert f'title="15 Jun {year}, 11:05:07 CEST">15 Jun, 11:05</time>' in html
    assert f'datetime="{year}-06-15T11:05:07+02:00"' in html


def test_moments_read_as_the_date_filter_would_write_them(settings):
    settings.TIME_ZONE = "Europe/Paris"
    template = engines["django"].from_string(
        '{% load formats %}{{ at|moment }}|{{ at|date:"j M, H:i" }}|{{ at|date:"j M Y, H:i" }}|'
        "{{ at|date:'c' }}|{{ at|date:'j M Y, H:i:s T' }}"
    )
    for year in (this_year().year, 2020):
        for month in range(1, 13):
            at = datetime(year, month, 9, 23, 5, tzinfo=UTC)

            ours, this, other, iso, full = template.render({"at": at}).split("|")

            expected = this if year == this_year().year else other
            assert ours == f'<time datetime="{iso}" title="{full}">{expected}</time>'


def test_a_sub_cent_cost_reads_in_full_on_the_row_the_tile_the_lightbox_and_its_page(client, owner):
    prediction = ended(owner, this_year())
    make_output(prediction)
    unpriced = ended(owner, this_year(), model=PAINTER, prompt="a barn")
    make_output(unpriced)

    history = client.get("/").content.decode()
    gallery = client.get("/gallery/").content.decode()
    page = client.get(f"/predictions/{prediction.pk}/").content.decode()
    unpriced_page = client.get(f"/predictions/{unpriced.pk}/").content.decode()

    assert history.count(">$0.003</span>") == 2  # in its column, and under the status on a phone
    assert (
        'data-cost="$0.003"' in gallery
        and '<span class="caption-meta caption-cost">$0.003' in gallery
    )
    assert ">$0.003</span>" in page
    assert ">unpriced</span>" in unpriced_page and "$0.00<" not in unpriced_page
    assert 'data-cost="unpriced"' in gallery and "$0.00<" not in history


def test_a_predictions_page_shows_its_submission_in_full_and_its_timeline_as_times(client, owner):
    at = this_year()
    prediction = ended(owner, at)

    html = client.get(f"/predictions/{prediction.pk}/").content.decode()

    assert f"<dt>Submitted</dt><dd>{shown(at, f'15 Jun {at.year}, 09:05:07')}</dd>" in html
    assert shown(at + timedelta(seconds=3), "09:05:10") in html  # the end, on the timeline


def test_the_compare_page_shows_each_submission_as_a_list_does(client, owner):
    recent, old = this_year(), last_year()
    first, second = ended(owner, recent), ended(owner, old)

    html = client.get(f"/compare/?p={first.pk}&p={second.pk}").content.decode()

    assert shown(recent, "15 Jun, 09:05") in html
    assert shown(old, f"14 Mar {old.year}, 12:00") in html


def test_a_board_says_the_day_it_was_made(client, team, owner):
    board = Board.objects.create(team=team, name="Lighthouses", created_by=owner)
    Board.objects.filter(pk=board.pk).update(created_at=this_year())

    html = client.get(f"/boards/{board.pk}/").content.decode()

    assert f"created by otto · 15 Jun {this_year().year}</p>" in html


def test_the_costs_page_names_its_period_in_days_and_a_sub_cent_total_in_full(client, owner):
    ended(owner, this_year())
    year = this_year().year

    html = client.get(f"/costs/?since={year}-06-01&until={year}-06-30").content.decode()

    assert f'<h2 class="period">1 – 30 Jun {year}</h2>' in html
    assert "$0.003</a></p>" in html


def test_the_prices_page_dates_each_rule_as_a_list_does(client, team):
    old = last_year()
    PriceRule.objects.create(
        team=team,
        provider="replicate",
        model=PAINTER,
        unit="per_image",
        amount=Decimal("0.0005"),
        effective_from=old,
    )

    html = client.get("/costs/prices/").content.decode()

    assert "$0.0005 per output image" in html
    assert shown(old, f"14 Mar {old.year}, 12:00") in html


def test_budgets_name_their_month(client, team):
    Budget.objects.create(team=team, amount=Decimal("0.50"))
    today = timezone.localdate()

    html = client.get("/costs/budgets/").content.decode()

    assert f"The team's budget for {today:%B %Y}</h2>" in html
    assert "of $0.50</span>" in html


def test_the_audit_log_dates_its_events_and_their_words(client, team, owner):
    change = {"amount": "0.02", "unit": "per_image", "since": f"{last_year().year}-03-14"}
    rule = PriceRule.objects.create(
        team=team,
        provider="replicate",
        model=PAINTER,
        unit="per_image",
        amount=Decimal("0.01"),
        effective_from=datetime(last_year().year, 1, 1, tzinfo=UTC),
    )
    client.post(f"/costs/prices/{rule.pk}/change", change)
    event = AuditEvent.objects.get(action="price_rule_changed")
    AuditEvent.objects.filter(pk=event.pk).update(created_at=last_year())

    html = client.get("/team/audit/").content.decode()

    assert shown(last_year(), f"14 Mar {last_year().year}, 12:00") in html
    assert f"$0.02 per output image from 14 Mar {last_year().year}, 00:00 UTC" in html


def test_share_links_date_their_creation_expiry_and_last_view(client, team, owner):
    link, _ = ShareLink.create(team=team, created_by=owner, title="Foxes")
    ShareLink.objects.filter(pk=link.pk).update(
        created_at=last_year(), expires_at=this_year(12, 31), last_viewed_at=this_year()
    )

    html = client.get("/shares/").content.decode()

    assert shown(last_year(), f"14 Mar {last_year().year}, 12:00") in html
    assert shown(this_year(12, 31), "31 Dec, 09:05") in html
    assert shown(this_year(), "15 Jun, 09:05") in html


def test_api_tokens_date_their_creation_last_use_and_expiry(client, team, owner):
    token, _ = ApiToken.create(team, owner, "Notebook", expires_at=this_year(12, 31))
    ApiToken.objects.filter(pk=token.pk).update(created_at=last_year(), last_used_at=this_year())

    html = client.get("/team/api/").content.decode()

    assert shown(last_year(), f"14 Mar {last_year().year}, 12:00") in html
    assert shown(this_year(), "15 Jun, 09:05") in html
    assert shown(this_year(12, 31), "31 Dec, 09:05") in html


def test_the_team_page_dates_members_as_days_and_invites_as_moments(client, team, owner):
    owner.memberships.update(joined_at=last_year())
    client.post("/team/invites/new", {"role": Role.MEMBER})

    html = client.get("/team/").content.decode()

    assert f"<td>14 Mar {last_year().year}</td>" in html
    assert "from now" not in text_of(html)
    assert re.search(r"made <time [^>]+>\d+ \w{3}(?: \d{4})?, \d\d:\d\d</time> by otto", html)
