"""Drill: fuzzing. Property-based input (hypothesis) to every form, every list's and htmx
partial's query parameters, and the API, through Django's test client: no input is a server
error (a view's exception fails the test, and so does any 5xx).

Values are drawn from what broke pages before and from noise: NUL bytes, lone surrogates (sent
as the bytes a client can send, CESU-8 in form bodies and URLs, `\\ud800` escapes in JSON),
numbers beyond a float or a BIGINT, impossible dates, cursors out of range, JSON nested
thousands of levels deep, bytes that are no UTF-8, another team's ids. Fields are named from the
forms themselves (`base_fields`), so a new field is fuzzed by being declared. Pages are asked as
a signed-in owner, public ones signed out, and every endpoint with and without htmx's headers.

Each endpoint gets FUZZ_EXAMPLES inputs (12; the file runs in well under a minute): set the
variable higher to look harder.
"""

import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, quote_plus

import hypothesis
import pytest
from django import forms
from django.contrib.auth.forms import PasswordChangeForm, SetPasswordForm
from django.contrib.auth.tokens import default_token_generator
from django.test import Client
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from hypothesis import HealthCheck, given, note
from hypothesis import strategies as st

from accounts.forms import (
    AccountForm,
    CredentialForm,
    InviteForm,
    RoleForm,
    SetupForm,
    SignInForm,
    SwitchTeamForm,
    TeamForm,
)
from accounts.models import Invite, ProviderCredential, Role
from api.forms import CreateForm, CursorForm, TokenForm
from api.models import ApiToken
from costs.forms import PRESETS, BudgetForm, CostFilterForm, PriceChangeForm, PriceRuleForm
from costs.models import PriceRule, Unit
from operations.models import Heartbeat
from outputs.filters import GalleryFilterForm
from outputs.forms import BoardForm, ReturnForm, SelectionForm, ShareForm, StarForm
from outputs.models import Board, ShareLink
from predictions.catalog import CATALOG
from predictions.filters import HistoryFilterForm
from predictions.forms import (
    CompareForm,
    LogCursorForm,
    NewImagesQuery,
    PredictionForm,
    RerunForm,
    TrackForm,
)
from predictions.models import Prediction, Status

from ..conftest import (
    User,
    configure_provider,
    make_output,
    make_prediction,
    make_team,
    make_user,
)
from .conftest import REPORTS

pytestmark = [pytest.mark.drill, pytest.mark.django_db, pytest.mark.timeout(120)]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
FUZZ = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the world is shared by a test's examples
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# What the fuzzer sent and the statuses it got, by surface and endpoint: the drill's report.
SENT: Counter = Counter()


# --- Values ------------------------------------------------------------------------------------

NASTY = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfff",
    "%00",
    "\ufffd",
    "\u202e",
    "😀",
    "<script>alert(1)</script>",
    "' OR '1'='1",
    "../../etc/passwd",
    "a" * 5000,
    "-1",
    "0",
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "sNaN",
    "1E+999999",
    "9" * 19,
    "9" * 30,
    "-" + "9" * 30,
    "1" * 5000,
    "0x10",
    "3.5",
    "true",
    "null",
    "[]",
    "{}",
    "2026-02-30",
    "0001-01-01",
    "9999-12-31",
    "10000-01-01",
    "2026-12-01T25:61",
    "1-1",
    "9999999999999999-999999999999999999",
    "https://evil.example/",
    "//evil.example/",
    "javascript:alert(1)",
]
CURSOR = st.from_regex(r"\d{1,16}-\d{1,18}", fullmatch=True)
# Ids of no row: 0, and beyond a BIGINT.
FAR = ["0", "9" * 19, "9" * 30]
# A value of a field without a hint of its own (a catalog input, say).
PLAUSIBLE = st.sampled_from(["1", "4", "0.5", "28", "16:9", "png", "true", "false", "a cat"])
text = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=30),
    st.text(st.characters(exclude_categories=[]), max_size=10),  # surrogates included
    st.integers().map(str),
    st.floats().map(str),
)
# Bytes no UTF-8 decoder takes, as a client may send them.
raw = st.binary(min_size=1, max_size=8)
value = st.one_of(text, text, raw)


def encoded(item: str | bytes) -> bytes:
    """What a client puts on the wire for `item`: a lone surrogate as its CESU-8 bytes."""
    return item if isinstance(item, bytes) else item.encode("utf-8", "surrogatepass")


def form_body(pairs: list[tuple[str, str | bytes]]) -> bytes:
    return "&".join(
        f"{quote_plus(encoded(name))}={quote_plus(encoded(item))}" for name, item in pairs
    ).encode()


def segment(item: str | bytes) -> str:
    """A URL path segment holding `item`."""
    return quote(encoded(item), safe="") or "x"


# Raw JSON, written by hand: Python's encoder cannot write 1e400 or a 5,000-digit number.
json_scalar = st.one_of(
    st.just("null"),
    st.sampled_from(["true", "false", "1e400", "-1e400", "1" + "0" * 400, "1" * 5000, "-0"]),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    text.map(json.dumps),  # lone surrogates as \\ud800 escapes
)
json_tree = st.recursive(
    json_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(text.map(json.dumps), children), max_size=4).map(
            lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
        ),
    ),
    max_leaves=10,
)
# Deeper than Python's JSON parser reads (about 1,000 levels) and than any page may show.
deep_json = st.one_of(
    st.integers(1, 3000).map(lambda depth: '{"a":' + "[" * depth + "]" * depth + "}"),
    st.integers(1, 3000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
)
broken_json = st.sampled_from(["", "{", "[1,]", "NaN", '{"a": NaN}', '{"a": Infinity}', '"text"'])
json_text = st.one_of(json_tree, deep_json, broken_json)


# --- The world the requests act on --------------------------------------------------------------


@dataclass
class World:
    team_pk: int
    owner: User
    owner_client: Client
    reset_user: User  # whose password-reset link is valid
    api_token: str
    params: dict[str, list[str]]  # path parameters to draw from, by name
    hints: dict[str, st.SearchStrategy]  # plausible values of fields, by name


@pytest.fixture
def world(db, settings_override) -> World:
    team = make_team()
    owner = make_user("olive", team, Role.OWNER)
    member = make_user("mia", team, Role.MEMBER)
    other_team = make_team("Strangers")
    make_user("stranger", other_team, Role.OWNER)
    succeeded = make_prediction(team=team, status=Status.SUCCEEDED, submitted_by=owner)
    outputs = [make_output(succeeded), make_output(succeeded)]
    running = make_prediction(
        team=team, status=Status.PROCESSING, provider_id="abc123", submitted_by=owner
    )
    failed = make_prediction(team=team, status=Status.FAILED, error="it broke")
    theirs = make_prediction(team=other_team, status=Status.SUCCEEDED)
    their_output = make_output(theirs)
    board = Board.objects.create(team=team, name="Favourites", created_by=owner)
    board.outputs.add(outputs[0])
    share, share_token = ShareLink.create(team=team, created_by=owner, title="Shared")
    share.outputs.add(outputs[1])
    invite = Invite.objects.create(team=team, role=Role.MEMBER, created_by=owner)
    token, secret = ApiToken.create(team, owner, "fuzz")
    reset_user = make_user("rita", team, Role.MEMBER)
    Heartbeat.stamp("fuzz:1")  # so that /healthz answers 200, and a 5xx from it is an error
    # Rows the delete and remove endpoints may take, so that the rows other endpoints act on
    # stay; with another team's, which must stay too.
    deletable = deletable_rows(team, owner, staying=[running, theirs])
    rules = price_rules(team, other_team)
    deletable["deletable_price_rule"].append(str(rules[0].pk))  # in use: it stays
    client = Client()
    client.force_login(owner)
    prediction_pks = [str(p.pk) for p in (succeeded, running, failed, theirs)]
    output_pks = [str(o.pk) for o in [*outputs, their_output]]
    member_membership = member.memberships.get().pk
    cursors = [f"{int(p.submitted_at.timestamp() * 1e6)}-{p.pk}" for p in (succeeded, running)]
    return World(
        team_pk=team.pk,
        owner=owner,
        owner_client=client,
        reset_user=reset_user,
        api_token=secret,
        params={
            "prediction": prediction_pks,
            "price_rule": [str(rule.pk) for rule in rules],
            "running": [str(running.pk)],
            "output": output_pks,
            "board": [str(board.pk)],
            "share": [str(share.pk)],
            "invite": [str(invite.pk)],
            "membership": [str(member_membership)],
            "token": [str(token.pk)],
            "share_token": [share_token, "x" * 43],
            "invite_token": [invite.token, "x" * 43],
            "reset_uid": [urlsafe_base64_encode(force_bytes(reset_user.pk)), "MA"],
            # The view's own token (which stands for the link's once the session holds that), and
            # a link's, which turns stale once the fuzzer sets a new password.
            "reset_token": ["set-password", default_token_generator.make_token(reset_user)],
            **deletable,
            "variant": ["file", "thumb", "icon", "download", "x"],
            "model_owner": ["black-forest-labs", "acme", "darkroom"],
            "model_name": ["flux-schnell", "painter", "slow"],
            "version": [CATALOG["black-forest-labs/flux-schnell"].name, "abc"],
        },
        hints={
            "provider": st.sampled_from(["simulator", "replicate", "cometapi"]),
            "model": st.sampled_from([*CATALOG, "acme/painter", "any", "a/b/c", "darkroom/slow"]),
            "status": st.sampled_from(Status.values),
            "role": st.sampled_from(Role.values),
            "action": st.sampled_from(["add", "remove", "star", "unstar", "download", "share"]),
            "period": st.sampled_from([value for value, _ in PRESETS]),
            "unit": st.sampled_from(Unit.values),
            "currency": st.sampled_from(["USD", "EUR", "usd"]),
            "expires_in": st.sampled_from(["", "1", "7", "30", "90", "365", "-1"]),
            "member": st.sampled_from([str(owner.pk), str(member.pk), "0", "9" * 30]),
            "team": st.sampled_from([str(team.pk), str(other_team.pk), "9" * 30]),
            "board": st.sampled_from([str(board.pk), "0", "9" * 30]),
            "outputs": st.sampled_from([*output_pks, *FAR]),
            "p": st.sampled_from([*prediction_pks, *FAR]),
            "from": st.sampled_from([*prediction_pks, *FAR]),
            "prompt": st.sampled_from(["a lighthouse at dusk", "a cat"]),
            "since": st.dates().map(str),
            "until": st.dates().map(str),
            "effective_from": st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M")),
            "before": st.one_of(CURSOR, st.sampled_from(cursors)),
            "through": st.one_of(CURSOR, st.sampled_from(cursors)),
            "after": st.one_of(CURSOR, st.sampled_from(cursors)),
            "cursor": st.one_of(st.integers(-5, 10**6).map(str), CURSOR),
            "bar": st.integers(-5, 10**6).map(str),
            "extra_input": json_text,
            "request_key": st.one_of(st.uuids().map(str), st.just(str(succeeded.request_key))),
            "amount": st.sampled_from(["0.01", "1e10", "-5", "NaN", "sNaN", "1E+999999", "0"]),
            "next": st.sampled_from(["/", "/gallery/", "//evil.example/", "https://evil.example"]),
            "remote_id": st.sampled_from(["abc123", "x" * 129, "a b"]),
            "previous": st.sampled_from(list(CATALOG)),
            "new_password1": st.sampled_from(["a long and quiet harbour", "short"]),
            "new_password2": st.sampled_from(["a long and quiet harbour", "short"]),
        },
    )


def price_rule(team, model: str = "acme/painter", days_ago: int = 30) -> PriceRule:
    return PriceRule.objects.create(
        team=team,
        provider="replicate",
        model=model,
        unit=Unit.PER_IMAGE,
        amount="0.01",
        effective_from=timezone.now() - timedelta(days=days_ago),
    )


def price_rules(team, other_team) -> list[PriceRule]:
    """A team price that has priced a prediction (its change reprices it) and another team's."""
    rule, theirs = price_rule(team), price_rule(other_team)
    priced = make_prediction(
        team=team, provider="replicate", model="acme/painter", provider_id="fuzzpriced"
    )
    priced.apply_remote({"id": "fuzzpriced", "status": "succeeded", "metrics": {"image_count": 1}})
    assert priced.cost.rule == rule
    return [rule, theirs]


def deletable_rows(team, owner, staying: list[Prediction]) -> dict[str, list[str]]:
    """Path parameters of rows to delete or remove: three of the team's each, and one of
    another team's (which must answer 404); `staying` are predictions no delete takes (a running
    one, another team's), the last of them another team's with an output."""
    other_team = staying[-1].team
    predictions = [
        make_prediction(team=team, status=Status.SUCCEEDED, submitted_by=owner) for _ in range(3)
    ]
    for prediction in predictions:
        make_output(prediction)
    kept = make_prediction(team=team, status=Status.SUCCEEDED, submitted_by=owner)
    boards = [Board.objects.create(team=team, name=f"Doomed {n}", created_by=owner) for n in "123"]
    members = [make_user(f"leaving{n}", team, Role.MEMBER) for n in "123"]
    credentials = []
    for owning, provider in [(team, "replicate"), (team, "cometapi"), (other_team, "replicate")]:
        credential = ProviderCredential(team=owning, provider=provider)
        credential.set_secret("sk-fuzz-0000")
        credential.save()
        credentials.append(credential)
    rules = [
        price_rule(owning, model=f"acme/doomed-{n}", days_ago=1)
        for n, owning in enumerate([team, team, team, other_team])
    ]
    return {
        "deletable_price_rule": [str(rule.pk) for rule in rules],
        "deletable_prediction": [str(p.pk) for p in (*predictions, *staying)],
        "deletable_output": [
            *(str(make_output(kept).pk) for _ in range(3)),
            str(staying[-1].outputs.get().pk),
        ],
        "deletable_board": [
            *(str(b.pk) for b in boards),
            str(Board.objects.create(team=other_team, name="Theirs").pk),
        ],
        "deletable_membership": [
            *(str(m.memberships.get().pk) for m in members),
            str(other_team.memberships.get().pk),
        ],
        "deletable_credential": [str(c.pk) for c in credentials],
    }


@pytest.fixture
def settings_override(settings) -> None:
    """Limits that would stop the fuzzer before the code it means to reach, lifted; an API
    create does not wait for an end no worker brings."""
    settings.SUBMIT_RATE_LIMIT_MEMBER = (10**6, 60)
    settings.SUBMIT_RATE_LIMIT_TEAM = (10**6, 60)
    settings.API_MAX_WAIT = 0
    # Never a real provider, whatever key a fuzzed form saves for one.
    for name in ("replicate", "cometapi"):
        configure_provider(settings, name, base_url="http://127.0.0.1:9/v1")


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """One report for the whole file, in the drills' summary."""
    yield
    statuses = Counter()
    for (_, _, status), n in SENT.items():
        statuses[status] += n
    lines = [f"{statuses.total()} requests; statuses {dict(sorted(statuses.items()))}"]
    for surface in sorted({surface for surface, _, _ in SENT}):
        endpoints: dict[str, Counter] = {}
        for (s, endpoint, status), n in SENT.items():
            if s == surface:
                endpoints.setdefault(endpoint, Counter())[status] += n
        total = sum(counts.total() for counts in endpoints.values())
        lines.append(f"{surface}: {total} requests to {len(endpoints)} endpoints")
        lines += [
            f"  {counts.total():4} {endpoint}  {dict(sorted(counts.items()))}"
            for endpoint, counts in sorted(endpoints.items())
        ]
    REPORTS.append(("tests/drills/test_fuzz.py", lines))


# --- Sending ------------------------------------------------------------------------------------


# Fields some form requires: sent more often than the others, so that a form gets past them.
REQUIRED: set[str] = set()


def fields_of(*sources) -> list[str]:
    """Field names: of form classes (their declared fields) and of lists of names."""
    names = []
    for source in sources:
        if isinstance(source, type) and issubclass(source, forms.BaseForm):
            names += list(source.base_fields)
            REQUIRED.update(name for name, f in source.base_fields.items() if f.required)
        else:
            names += list(source)
    return list(dict.fromkeys(names))


CATALOG_INPUTS = sorted({spec.name for model in CATALOG.values() for spec in model.inputs})
# Names no form declares, sent as noise alongside the declared ones.
JUNK_NAMES = ["page", "id", "pk", "format", "_method", "csrfmiddlewaretoken", "\x00", "q[]"]


def one_in(draw, n: int) -> bool:
    """True once in `n` draws (hypothesis weighs the branches of `one_of` as it likes)."""
    return draw(st.integers(0, n - 1)) == 0


@st.composite
def pairs(draw, world: World, names: list[str]) -> list[tuple[str, str | bytes]]:
    """Form or query fields: some of `names` (most required ones, a third of the others, so
    that a form is often valid but for one field), each once or repeated, with a plausible value
    three times in four, else a hostile one; and some noise."""
    chosen = []
    for name in names:
        if one_in(draw, 4) if name in REQUIRED else not one_in(draw, 3):
            continue
        hint = world.hints.get(name, PLAUSIBLE)
        for _ in range(draw(st.integers(1, 2))):
            chosen.append((name, draw(value) if one_in(draw, 4) else draw(hint)))
    if one_in(draw, 3):
        chosen.append((draw(st.one_of(st.sampled_from(JUNK_NAMES), text)), draw(value)))
    return chosen


def htmx_headers(draw) -> dict[str, str]:
    if not draw(st.booleans()):
        return {}
    headers = {"HX-Request": "true"}
    if draw(st.booleans()):
        headers["HX-History-Restore-Request"] = "true"
    if draw(st.booleans()):
        headers["HX-Target"] = draw(st.sampled_from(["gallery", "history", "x\x7f"]))
    return headers


def fill(draw, world: World, path: str) -> str:
    """`path` with each `{name}` replaced by a drawn path parameter: mostly the world's, else
    a number beyond any row or the database's integers, or noise."""
    while "{" in path:
        start = path.index("{")
        end = path.index("}", start)
        name = path[start + 1 : end]
        choice = draw(st.integers(0, 9))
        if choice == 0:
            part = segment(draw(value))
        elif choice == 1:
            part = draw(st.sampled_from(FAR))
        else:
            part = draw(st.sampled_from(world.params[name]))
        path = path[:start] + part + path[end + 1 :]
    return path


def fuzz(endpoints: dict, send) -> None:
    """Send FUZZ_EXAMPLES inputs to each of `endpoints` (on average: hypothesis draws which one
    each input goes to, and shrinks a failure to its simplest endpoint and input)."""

    @hypothesis.settings(FUZZ, max_examples=EXAMPLES * len(endpoints))
    @given(st.sampled_from(list(endpoints)), st.data())
    def examples(endpoint, data):
        note(f"endpoint: {endpoint}")
        send(endpoint, endpoints[endpoint], data.draw)

    examples()


def check(surface: str, template: str, response) -> None:
    """No server error; a streamed answer is read to its end, where its errors happen."""
    if getattr(response, "streaming", False):
        b"".join(response.streaming_content)
    SENT[(surface, template, response.status_code)] += 1
    assert response.status_code < 500, f"{response.status_code} from {template}"


# --- Forms --------------------------------------------------------------------------------------

SIGNED_IN_FORMS = {
    "/teams/new": fields_of(TeamForm),
    "/teams/switch": fields_of(SwitchTeamForm),
    "/team/invites/new": fields_of(InviteForm),
    "/team/invites/{invite}/revoke": [],
    "/team/members/{membership}/role": fields_of(RoleForm),
    "/team/credentials/": fields_of(CredentialForm),
    "/account/password/": fields_of(PasswordChangeForm),
    "/predictions/new": fields_of(PredictionForm, CATALOG_INPUTS),
    "/predictions/{prediction}/again": fields_of(RerunForm),
    "/predictions/{running}/cancel": [],
    "/predictions/track": fields_of(TrackForm),
    "/boards/": fields_of(BoardForm),
    "/boards/{board}/rename": fields_of(BoardForm),
    "/boards/{board}/share": fields_of(ShareForm),
    "/outputs/selection": fields_of(SelectionForm),
    "/outputs/{output}/star": fields_of(StarForm),
    "/shares/{share}/revoke": [],
    "/costs/prices/new": fields_of(PriceRuleForm),
    "/costs/prices/{price_rule}/change": fields_of(PriceChangeForm),
    "/costs/prices/{deletable_price_rule}/delete": [],
    "/costs/budgets/save": fields_of(BudgetForm, ["limit-member"]),
    "/team/api/tokens/new": fields_of(TokenForm),
    "/team/api/tokens/{token}/revoke": [],
    "/demo-banner/dismiss": ["next"],
    "/predictions/{deletable_prediction}/delete": [],
    "/boards/{deletable_board}/delete": [],
    "/outputs/{deletable_output}/delete": fields_of(ReturnForm),
    "/team/members/{deletable_membership}/remove": [],
    "/team/credentials/{deletable_credential}/delete": [],
    "/sign-out/": ["next"],
}
PUBLIC_FORMS = {
    "/sign-in/": fields_of(SignInForm, ["next"]),
    "/admin/login/": fields_of(SignInForm, ["next"]),
    "/password-reset/": ["email"],
    "/invite/{invite_token}/": fields_of(AccountForm),
    "/setup/": fields_of(SetupForm),
    # With a session that holds a valid link's token, as the link's own page leaves it.
    "/password-reset/{reset_uid}/{reset_token}/": fields_of(SetPasswordForm),
}


def test_no_form_a_member_sends_gives_a_server_error(world):
    def post(template, names, draw):
        body = form_body(draw(pairs(world, names)))
        response = world.owner_client.post(
            fill(draw, world, template),
            body,
            content_type="application/x-www-form-urlencoded",
            headers=htmx_headers(draw),
        )
        check("forms, signed in", template, response)
        if template == "/sign-out/":
            world.owner_client.force_login(world.owner)
        # Back in the world's team, which a new team or a switch leaves.
        world.owner_client.post("/teams/switch", {"team": world.team_pk})

    fuzz(SIGNED_IN_FORMS, post)


def test_no_public_form_gives_a_server_error(world):
    def post(template, names, draw):
        body = form_body(draw(pairs(world, names)))
        path = fill(draw, world, template)
        client = Client()
        if "{reset_uid}" in template:
            client.get(reset_link(world.reset_user))
        response = client.post(path, body, content_type="application/x-www-form-urlencoded")
        check("forms, signed out", template, response)

    fuzz(PUBLIC_FORMS, post)


def reset_link(user: User) -> str:
    """The page a password-reset mail links to, valid now."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    return f"/password-reset/{uid}/{default_token_generator.make_token(user)}/"


# --- Lists, pages and htmx partials -------------------------------------------------------------

LIST_FILTERS = fields_of(HistoryFilterForm, GalleryFilterForm)
PAGES = {
    "/": LIST_FILTERS,
    "/gallery/": LIST_FILTERS,
    "/costs/": fields_of(CostFilterForm),
    "/costs/export.csv": fields_of(CostFilterForm),
    "/compare/": fields_of(CompareForm),
    "/new/": fields_of(NewImagesQuery, ["from", "previous", "extra_input"], CATALOG_INPUTS),
    "/team/": [],
    "/team/audit/": [],
    "/team/timings/": ["provider", "model"],
    "/team/api/": [],
    "/team/providers/health/": [],
    "/boards/": [],
    "/boards/{board}/": [],
    "/boards/{board}/download": [],
    "/shares/{share}/created": [],
    "/team/api/tokens/{token}/created": [],
    "/no-team/": [],
    "/shares/": [],
    "/costs/prices/": [],
    "/costs/budgets/": [],
    "/predictions/{prediction}/": ["page"],
    "/outputs/{output}/{variant}": [],
}
PUBLIC_PAGES = {
    "/s/{share_token}/": [],
    "/s/{share_token}/download": [],
    "/s/{share_token}/{output}/{variant}": [],
    "/invite/{invite_token}/": [],
    "/password-reset/{invite_token}/{invite_token}/": [],
    "/metrics": [],
    "/healthz": [],
    "/sign-in/": ["next"],
    "/password-reset/": [],
    "/password-reset/{reset_uid}/{reset_token}/": [],
    "/setup/": [],
}
# The partials pages ask for with htmx: a list's chunks and arrivals, the studio's model picker
# and results, the estimate, a prediction's log and live part.
PARTIALS = {
    "/": LIST_FILTERS,
    "/gallery/": LIST_FILTERS,
    "/new/": fields_of(NewImagesQuery, ["previous", "extra_input"], CATALOG_INPUTS),
    "/new/results": [],
    "/costs/estimate": fields_of(PredictionForm, CATALOG_INPUTS),
    "/predictions/{prediction}/logs": fields_of(LogCursorForm),
    "/predictions/{running}/": ["page"],
    "/compare/": fields_of(CompareForm),
}


def test_no_query_of_a_list_or_page_gives_a_server_error(world):
    def get(template, names, draw):
        path = fill(draw, world, template)
        query = form_body(draw(pairs(world, names))).decode()
        response = world.owner_client.get(f"{path}?{query}", headers=htmx_headers(draw))
        check("lists and pages", template, response)

    fuzz(PAGES, get)


def test_no_query_of_a_public_page_gives_a_server_error(world):
    def get(template, names, draw):
        path = fill(draw, world, template)
        query = form_body(draw(pairs(world, names))).decode()
        authorization = draw(st.one_of(st.just(""), value.map(segment)))
        response = Client().get(f"{path}?{query}", headers={"Authorization": authorization})
        check("public pages", template, response)

    fuzz(PUBLIC_PAGES, get)


def test_no_htmx_partial_parameter_gives_a_server_error(world):
    def get(template, names, draw):
        path = fill(draw, world, template)
        query = form_body(draw(pairs(world, [*names, "hold"]))).decode()
        headers = {"HX-Request": "true", **htmx_headers(draw)}
        response = world.owner_client.get(f"{path}?{query}", headers=headers)
        check("htmx partials", template, response)

    fuzz(PARTIALS, get)


# --- The API ------------------------------------------------------------------------------------

API_CREATE_FIELDS = fields_of(CreateForm)


@st.composite
def json_object(draw, names: list[str], values: st.SearchStrategy = json_text) -> str:
    """A JSON object of some of `names`, and perhaps a member of noise, as text: the values of
    names in MEMBERS drawn plausibly as often as not, the others from `values`."""
    members = []
    for name in names:
        if draw(st.booleans()):
            plausible = MEMBERS.get(name)
            drawn = st.one_of(plausible, values) if plausible is not None else values
            members.append(f"{json.dumps(name)}:{draw(drawn)}")
    if draw(st.booleans()):
        members.append(f"{draw(text.map(json.dumps))}:{draw(values)}")
    return "{" + ",".join(members) + "}"


def json_body(names: list[str], values: st.SearchStrategy = json_text) -> st.SearchStrategy:
    """A JSON request body: mostly an object of some of `names`, else any JSON or none."""
    return st.one_of(json_object(names, values), json_object(names, values), values)


INPUT_NAMES = ["prompt", *CATALOG_INPUTS, "layers"]
MEMBERS = {
    "input": json_object(INPUT_NAMES),
    "prompt": st.sampled_from(['"a lighthouse"', '"\\ud800"', '"a\\u0000b"']),
    "version": st.sampled_from([json.dumps(name) for name in CATALOG]),
    "provider": st.sampled_from(['"simulator"', '"replicate"']),
    "id": st.sampled_from(['"abc123"', '"x"']),
    "status": st.sampled_from(['"succeeded"', '"processing"', '"failed"']),
    "metrics": st.sampled_from(['{"predict_time": "abc", "image_count": [1]}', '{"x": 1e400}']),
    "logs": st.sampled_from(['"step\\u0000 1"', '"\\udfff"']),
}


API = {
    ("POST", "/api/v1/models/{model_owner}/{model_name}/predictions"): API_CREATE_FIELDS,
    ("POST", "/api/v1/predictions"): API_CREATE_FIELDS,
    ("POST", "/api/v1/predictions/track"): ["provider", "id"],
    ("POST", "/api/v1/predictions/{prediction}/cancel"): [],
    ("GET", "/api/v1/predictions"): fields_of(CursorForm),
    ("GET", "/api/v1/predictions/{prediction}"): [],
    ("GET", "/api/v1/models/{model_owner}/{model_name}"): [],
    ("GET", "/api/v1/models/{model_owner}/{model_name}/versions"): [],
    ("GET", "/api/v1/models/{model_owner}/{model_name}/versions/{version}"): [],
    ("GET", "/api/v1/files/{share_token}"): [],
    ("GET", "/api/v1/webhooks/default/secret"): [],
    ("GET", "/api/v1/openapi.json"): [],
    ("GET", "/api/v1/{share_token}/{variant}"): [],
}


def test_no_api_request_gives_a_server_error(world):
    def send(endpoint, names, draw):
        method, template = endpoint
        path = fill(draw, world, template)
        token = segment(draw(value)) if one_in(draw, 6) else f"Bearer {world.api_token}"
        headers = {"Authorization": token}
        if draw(st.booleans()):
            headers["Idempotency-Key"] = segment(draw(value))
        if draw(st.booleans()):
            headers["Prefer"] = draw(st.sampled_from(["wait", "wait=5", "wait=x", "respond"]))
        if method == "GET":
            query = form_body(draw(pairs(world, names))).decode()
            response = Client().get(f"{path}?{query}", headers=headers)
        else:
            body = encoded(draw(json_body(names)))
            content_type = draw(
                st.sampled_from(["application/json", "application/json", "text/plain", ""])
            )
            response = Client().post(path, body, content_type=content_type, headers=headers)
        check("API", f"{method} {template}", response)

    fuzz(API, send)


def test_no_provider_webhook_gives_a_server_error(world, simulator):
    """A provider's webhooks: half of them signed with the simulator's secret, so that their
    hostile bodies (NULs, lone surrogates, deep nesting, metrics of any type) reach the code that
    applies them. Without the secret to check them against, the view answers 503 by design."""

    def post(template, names, draw):
        signed = one_in(draw, 2)
        body = encoded(draw(json_body(names)))
        if signed and body.startswith(b"{") and one_in(draw, 4) is False:
            # About the prediction, mostly: the id comes first, so a drawn one still wins.
            body = b'{"id":"abc123"' + (b"}" if body == b"{}" else b"," + body[1:])
        if signed:
            # Each id once: the view applies a webhook-id only once.
            webhook_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
            headers = {
                "webhook-id": webhook_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature(
                    simulator.webhook_secret, webhook_id, timestamp, body
                ),
            }
        else:
            headers = {
                name: segment(draw(value))
                for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
                if draw(st.booleans())
            }
        path = fill(draw, world, template)
        response = Client().post(path, body, content_type="application/json", headers=headers)
        check("provider webhooks", template, response)

    names = ["id", "status", "output", "logs", "error", "metrics", "created_at", "urls"]
    fuzz({"/webhooks/predictions/{running}/": names}, post)


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks' signature, as a provider signs."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def test_the_fuzzer_puts_hostile_values_on_the_wire():
    assert form_body([("q", "\x00"), ("q", "\ud800"), ("q", b"\xff")]) == (
        b"q=%00&q=%ED%A0%80&q=%FF"
    )
    assert segment("a/b") == "a%2Fb"
    assert segment("") == "x"
