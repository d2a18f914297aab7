"""Who may open what: every URL of the app, for every kind of visitor.

The matrix is checked against the URL configuration, so a view added without a row here fails
`test_every_url_of_the_app_is_in_the_matrix`. Cross-team access is always 404, never 403.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.core import signing
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from accounts.models import Invite, Membership, ProviderCredential, Role
from api.models import ApiToken
from api.shapes import FILE_SALT
from costs.models import PriceRule
from outputs.models import Board, ShareLink

from .conftest import make_output, make_prediction, make_team, make_user

pytestmark = pytest.mark.django_db

VISITORS = ["anonymous", "viewer", "member", "owner", "outsider"]
LOGIN = 302  # a redirect to the sign-in page


@dataclass
class Row:
    """How a URL is requested, and the status each visitor gets."""

    expect: dict[str, int]
    method: str = "get"
    args: Callable[["World"], list] = lambda world: []
    data: Callable[["World"], dict] = lambda world: {}
    htmx: bool = False
    also_htmx: bool = False
    extra: dict = field(default_factory=dict)


def every(status: int, **exceptions: int) -> dict[str, int]:
    return {visitor: exceptions.get(visitor, status) for visitor in VISITORS}


def signed_in(status: int, **exceptions: int) -> dict[str, int]:
    return every(status, anonymous=LOGIN, **exceptions)


class World:
    """The Studio team with one person of each role, and an outsider who owns another team.
    Objects are made fresh for each request, so a request that deletes one harms no other."""

    def __init__(self) -> None:
        self.team = make_team("Studio")
        self.people = {
            "viewer": make_user("vic", self.team, Role.VIEWER),
            "member": make_user("mia", self.team, Role.MEMBER),
            "owner": make_user("otto", self.team, Role.OWNER),
            "outsider": make_user("olga", make_team("Elsewhere"), Role.OWNER),
        }

    def client(self, visitor: str) -> Client:
        client = Client()
        if visitor != "anonymous":
            client.force_login(self.people[visitor])
        return client

    def prediction(self) -> int:
        return make_prediction(team=self.team, status="processing", provider_id="abc").pk

    def invite(self) -> int:
        return Invite.objects.create(team=self.team).pk

    def invite_token(self) -> str:
        return Invite.objects.create(team=self.team).token

    def membership(self) -> int:
        user = make_user(f"extra-{uuid.uuid4().hex[:8]}", self.team, Role.MEMBER)
        return Membership.objects.get(user=user).pk

    def credential(self) -> int:
        credential = ProviderCredential(team=self.team, provider="cometapi")
        credential.set_secret("sk-test-credential-1234")
        credential.save()
        return credential.pk

    def finished_prediction(self) -> int:
        return make_prediction(team=self.team, status="succeeded").pk

    def output(self) -> int:
        return make_output(make_prediction(team=self.team, status="succeeded")).pk

    def board(self) -> int:
        board = Board.objects.create(team=self.team, name=f"Board {uuid.uuid4().hex[:8]}")
        board.add([make_output(make_prediction(team=self.team, status="succeeded"))])
        return board.pk

    def share(self) -> tuple[ShareLink, str]:
        """A member's link to a board of one image, and its token."""
        return ShareLink.create(
            team=self.team,
            created_by=self.people["member"],
            title="Shared",
            board=Board.objects.get(pk=self.board()),
        )

    def share_token(self) -> str:
        return self.share()[1]

    def shared_media(self) -> list:
        link, token = self.share()
        return [token, link.shared_outputs().get().pk, "thumb"]


def submit_data(world: World) -> dict:
    return {
        "provider": "simulator",
        "model": "black-forest-labs/flux-schnell",
        "prompt": "a matrix of doors",
        "request_key": str(uuid.uuid4()),
    }


def estimate_query(world: World) -> dict:
    return {"provider": "simulator", "model": "black-forest-labs/flux-schnell", "variations": "2"}


def price_data(world: World) -> dict:
    return {
        "provider": "replicate",
        "model": "acme/painter",
        "unit": "per_image",
        "amount": "0.01",
        "currency": "USD",
        "effective_from": "2026-01-01T00:00",
    }


def team_price(world: World) -> list:
    """One of the team's own price rules, from a month ago (its change and delete actions)."""
    start = timezone.now() - timedelta(days=30)
    rule = PriceRule.objects.create(
        team=world.team,
        provider="replicate",
        model="acme/painter",
        unit="per_image",
        amount="0.01",
        effective_from=start,
    )
    return [rule.pk]


def price_change_data(world: World) -> dict:
    return {"unit": "per_image", "amount": "0.02", "since": timezone.localdate().isoformat()}


def member_token(world: World) -> list:
    """A member's API token (its page and revoke action)."""
    return [ApiToken.create(world.team, world.people["member"], "script")[0].pk]


def api_file(world: World) -> list:
    """The signed link part of an archived output, as an API answer gives it."""
    return [signing.TimestampSigner(salt=FILE_SALT).sign(str(world.output()))]


MATRIX: dict[str, Row] = {
    # Signing in and out, and passwords: public where they must be.
    "accounts:login": Row(every(302, anonymous=200)),
    "accounts:logout": Row(every(302), method="post"),
    "accounts:password_change": Row(signed_in(200)),
    "accounts:password_change_done": Row(signed_in(200)),
    "accounts:password_reset": Row(every(200)),
    "accounts:password_reset_sent": Row(every(200)),
    "accounts:password_reset_confirm": Row(every(200), args=lambda w: ["MQ", "bad-token"]),
    "accounts:password_reset_complete": Row(every(200)),
    "accounts:setup": Row(every(404)),
    # Teams.
    "accounts:no_team": Row(signed_in(302)),
    "accounts:new_team": Row(signed_in(302), method="post", data=lambda w: {"name": "New"}),
    "accounts:switch": Row(
        signed_in(302, outsider=404), method="post", data=lambda w: {"team": w.team.pk}
    ),
    "accounts:team": Row(signed_in(200)),
    "accounts:create_invite": Row(
        signed_in(403, owner=302, outsider=302), method="post", data=lambda w: {"role": "member"}
    ),
    "accounts:revoke_invite": Row(
        signed_in(403, owner=302, outsider=404), method="post", args=lambda w: [w.invite()]
    ),
    "accounts:change_role": Row(
        signed_in(403, owner=302, outsider=404),
        method="post",
        args=lambda w: [w.membership()],
        data=lambda w: {"role": "viewer"},
    ),
    "accounts:remove_member": Row(
        signed_in(403, owner=302, outsider=404), method="post", args=lambda w: [w.membership()]
    ),
    "accounts:credentials": Row(signed_in(403, owner=200, outsider=200)),
    "accounts:delete_credential": Row(
        signed_in(403, owner=302, outsider=404), method="post", args=lambda w: [w.credential()]
    ),
    "accounts:audit": Row(signed_in(403, owner=200, outsider=200)),
    "accounts:accept_invite": Row(every(200), args=lambda w: [w.invite_token()]),
    # Predictions: pages, live fragments and actions.
    "predictions:index": Row(signed_in(200), also_htmx=True),
    "outputs:gallery": Row(signed_in(200), also_htmx=True),
    "predictions:submit": Row(signed_in(302, viewer=403), method="post", data=submit_data),
    "predictions:detail": Row(
        signed_in(200, outsider=404), args=lambda w: [w.prediction()], also_htmx=True
    ),
    "predictions:cancel": Row(
        signed_in(302, viewer=403, outsider=404), method="post", args=lambda w: [w.prediction()]
    ),
    "predictions:logs": Row(
        signed_in(200, outsider=404), args=lambda w: [w.prediction()], also_htmx=True
    ),
    "predictions:new": Row(signed_in(200, viewer=403), also_htmx=True),
    # Back to the page it was on: for everyone here, the sign-in page (anonymous visitors see
    # the banner there too).
    "accounts:dismiss_demo_banner": Row(
        every(302), method="post", data=lambda w: {"next": "/sign-in/"}
    ),
    "predictions:studio_results": Row(signed_in(200, viewer=403), also_htmx=True),
    "predictions:compare": Row(
        signed_in(200, outsider=404),
        data=lambda w: {"p": [w.finished_prediction(), w.finished_prediction()]},
    ),
    "predictions:rerun": Row(
        signed_in(302, viewer=403, outsider=404), method="post", args=lambda w: [w.prediction()]
    ),
    "predictions:delete": Row(
        signed_in(302, viewer=403, outsider=404),
        method="post",
        args=lambda w: [w.finished_prediction()],
    ),
    # Archived outputs, boards and share links.
    "outputs:media": Row(signed_in(200, outsider=404), args=lambda w: [w.output(), "thumb"]),
    "outputs:star": Row(
        signed_in(302, viewer=403, outsider=404),
        method="post",
        args=lambda w: [w.output()],
        data=lambda w: {"starred": "1"},
    ),
    "outputs:delete": Row(
        signed_in(302, viewer=403, outsider=404), method="post", args=lambda w: [w.output()]
    ),
    "outputs:selection": Row(
        signed_in(200, outsider=404),
        method="post",
        data=lambda w: {"outputs": [w.output()], "action": "download"},
    ),
    "outputs:boards": Row(signed_in(200)),
    "outputs:board": Row(signed_in(200, outsider=404), args=lambda w: [w.board()]),
    "outputs:rename_board": Row(
        signed_in(302, viewer=403, outsider=404),
        method="post",
        args=lambda w: [w.board()],
        data=lambda w: {"name": f"Renamed {uuid.uuid4().hex[:8]}"},
    ),
    "outputs:delete_board": Row(
        signed_in(302, viewer=403, outsider=404), method="post", args=lambda w: [w.board()]
    ),
    "outputs:board_download": Row(signed_in(200, outsider=404), args=lambda w: [w.board()]),
    "outputs:share_board": Row(
        signed_in(302, viewer=403, outsider=404), method="post", args=lambda w: [w.board()]
    ),
    "outputs:shares": Row(signed_in(200)),
    # A member's link, shown to its creator and the owners; to anyone else it is unknown.
    "outputs:share_created": Row(
        signed_in(200, viewer=404, outsider=404), args=lambda w: [w.share()[0].pk]
    ),
    # A member's link: its creator and the owners may revoke it; to anyone else it is unknown.
    "outputs:revoke_share": Row(
        signed_in(302, viewer=404, outsider=404),
        method="post",
        args=lambda w: [w.share()[0].pk],
    ),
    # Public: the token is the credential, whoever visits.
    "outputs:shared": Row(every(200), args=lambda w: [w.share_token()]),
    "outputs:shared_media": Row(every(200), args=lambda w: w.shared_media()),
    "outputs:shared_download": Row(every(200), args=lambda w: [w.share_token()]),
    # Costs: every role reads the team's; only owners change prices and budgets.
    "costs:index": Row(signed_in(200)),
    "costs:export": Row(signed_in(200)),
    "costs:estimate": Row(signed_in(200, viewer=403), data=estimate_query, also_htmx=True),
    "costs:prices": Row(signed_in(200)),
    "costs:add_price": Row(signed_in(403, owner=302, outsider=302), method="post", data=price_data),
    # The team's own rules: another team's (and the deployment's) answer 404.
    "costs:change_price": Row(
        signed_in(403, owner=302, outsider=404),
        method="post",
        args=team_price,
        data=price_change_data,
    ),
    "costs:delete_price": Row(
        signed_in(403, owner=302, outsider=404), method="post", args=team_price
    ),
    "costs:budgets": Row(signed_in(200)),
    "costs:save_budget": Row(
        signed_in(403, owner=302, outsider=302),
        method="post",
        data=lambda w: {"team-amount": "100", "team-currency": "USD"},
    ),
    # Model timings: every role reads its team's models' figures; nothing there changes.
    "timings:index": Row(signed_in(200)),
    # Providers call it, unsigned-in: the signature is the access check, the same for everyone.
    "webhooks:prediction": Row(every(400), method="post", args=lambda world: [world.prediction()]),
    # The API page and tokens: each member manages their own; owners revoke any of the team's.
    "api:index": Row(signed_in(200)),
    "api:create_token": Row(signed_in(302), method="post", data=lambda w: {"name": "script"}),
    "api:token_created": Row(
        signed_in(200, viewer=404, owner=404, outsider=404), args=member_token
    ),
    "api:revoke_token": Row(
        signed_in(302, viewer=404, outsider=404), method="post", args=member_token
    ),
    # The API itself takes a token, never a session: every visitor here is unauthenticated.
    "api:predictions": Row(every(401)),
    "api:track": Row(every(401), method="post"),
    "api:prediction": Row(every(401), args=lambda w: [w.prediction()]),
    "api:cancel": Row(every(401), method="post", args=lambda w: [w.prediction()]),
    "api:model": Row(every(401), args=lambda w: ["black-forest-labs", "flux-schnell"]),
    "api:model_predictions": Row(
        every(401), method="post", args=lambda w: ["black-forest-labs", "flux-schnell"]
    ),
    "api:versions": Row(every(401), args=lambda w: ["black-forest-labs", "flux-schnell"]),
    "api:version": Row(every(401), args=lambda w: ["black-forest-labs", "flux-schnell", "v1"]),
    "api:webhook_secret": Row(every(401)),
    # Public: the signed link is the credential; the document describes the API to anyone.
    "api:file": Row(every(200), args=api_file),
    "api:openapi": Row(every(200)),
    "api:not_found": Row(every(404), args=lambda w: ["nothing/here"]),
}


def app_url_names(resolver: URLResolver | None = None, namespace: str = "") -> set[str]:
    names = set()
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace == "admin":
                continue  # Django's admin has its own staff-only access control.
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            names |= app_url_names(pattern, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(namespace + pattern.name)
    return names


def test_every_url_of_the_app_is_in_the_matrix():
    assert app_url_names() == set(MATRIX)


CASES = [
    (name, visitor, htmx)
    for name, row in MATRIX.items()
    for visitor in VISITORS
    for htmx in ([False, True] if row.also_htmx else [False])
]


@pytest.mark.parametrize(("name", "visitor", "htmx"), CASES)
def test_each_visitor_gets_what_their_role_allows(name, visitor, htmx):
    world = World()
    row = MATRIX[name]
    url = reverse(name, args=row.args(world))
    headers = {"HX-Request": "true"} if htmx else {}

    response = getattr(world.client(visitor), row.method)(url, row.data(world), headers=headers)

    if response.get("Content-Type", "").startswith("text/html"):
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "unsafe" not in policy
    expected = row.expect[visitor]
    if visitor == "anonymous" and expected == LOGIN and htmx:
        assert response.status_code == 200
        assert response["HX-Redirect"].startswith(reverse("accounts:login"))
        return
    assert response.status_code == expected, response.content.decode()[:500]
    if visitor == "anonymous" and expected == LOGIN:
        assert response["Location"].startswith(reverse("accounts:login"))


# Tracking a prediction made elsewhere: the form is for those who may submit. (Cases are added
# to CASES, which pytest reads when it collects the tests above, after this module has run.)
MATRIX["predictions:track"] = Row(signed_in(200, viewer=403))
CASES.extend(("predictions:track", visitor, False) for visitor in VISITORS)

# Operations: the provider health page is for owners (another team's owner gets their own
# team's); /healthz answers anyone alike (503 here, where no worker runs); /metrics is off while
# METRICS_TOKEN is unset (tests/test_operations.py covers it with a token).
MATRIX["operations:provider_health"] = Row(signed_in(403, owner=200, outsider=200))
MATRIX["operations:healthz"] = Row(every(503))
MATRIX["operations:metrics"] = Row(every(404))
CASES.extend(
    (name, visitor, False)
    for name in ("operations:provider_health", "operations:healthz", "operations:metrics")
    for visitor in VISITORS
)
