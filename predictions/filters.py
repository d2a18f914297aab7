"""What the history and the gallery show: filters and page positions, read from the URL.

A page is a chunk of the team's predictions, newest first, between two positions in that order
(a keyset: `submitted_at` then `id`, both descending), so a deep page costs what the first one
does and a page already on screen never shifts when predictions are added. The browser keeps
each chunk's positions in its URLs: `before` to fetch the next older chunk, `before` and
`through` to refresh a chunk in place.
"""

import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from urllib.parse import urlencode

from django import forms
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connections
from django.db.models import Count, Max, Prefetch, Q, QuerySet, Value
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KT
from django.db.models.functions import StrIndex, Upper
from django.forms.models import ModelChoiceIterator
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import mark_safe

from accounts.models import Membership
from accounts.teams import for_team

from .forms import clean_model_name
from .live import SAFETY_INTERVAL, team_marker
from .models import RUNNING, Prediction, Status

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
CURSOR_RE = re.compile(r"(\d{1,16})-(\d{1,18})")
# What a row of the history or a tile of the gallery shows of a prediction and its submitter,
# the only columns a list fetches: the others (the log, the provider's output, URLs and
# metrics, the polling state) were a third of the time a page took to fetch its predictions,
# 1 to 2 ms. A row reading another would cost a query per row (the tests count a page's).
LISTED = [
    "submitted_by__username",
    "submitted_at",
    "model",
    "input",
    "status",
    "created_at",
    "started_at",
    "completed_at",
    "predict_time",
    "image_count",
    "data_removed",
]
# Three letters or digits in a row (not underscores, which trigrams skip as they do punctuation).
SEARCHABLE_RE = re.compile(r"[^\W_]{3}")
# The words of a search, as pg_trgm splits text into words.
WORD_RE = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Cursor:
    """A position in the newest-first order: one prediction's (submitted_at, id)."""

    submitted_at: datetime
    pk: int

    @classmethod
    def of(cls, prediction: Prediction) -> "Cursor":
        return cls(prediction.submitted_at, prediction.pk)

    @classmethod
    def parse(cls, value: str) -> "Cursor":
        """`<microseconds since 1970>-<id>`; ValueError for anything else."""
        match = CURSOR_RE.fullmatch(value)
        if not match:
            raise ValueError(value)
        try:
            submitted_at = EPOCH + int(match[1]) * MICROSECOND
        except OverflowError:
            raise ValueError(value) from None
        return cls(submitted_at, int(match[2]))

    def __str__(self) -> str:
        return f"{(self.submitted_at - EPOCH) // MICROSECOND}-{self.pk}"

    def older(self) -> Q:
        """Strictly older than this position. The first term bounds the index range scan."""
        return Q(submitted_at__lte=self.submitted_at) & (
            Q(submitted_at__lt=self.submitted_at) | Q(pk__lt=self.pk)
        )

    def newer(self) -> Q:
        """Strictly newer than this position."""
        return Q(submitted_at__gte=self.submitted_at) & (
            Q(submitted_at__gt=self.submitted_at) | Q(pk__gt=self.pk)
        )

    def just_above(self) -> "Cursor":
        """The `before` that keeps this position and nothing newer: a chunk's upper bound."""
        return Cursor(self.submitted_at, self.pk + 1)

    def this_or_newer(self) -> Q:
        return Q(submitted_at__gte=self.submitted_at) & (
            Q(submitted_at__gt=self.submitted_at) | Q(pk__gte=self.pk)
        )


# Where the oldest chunk ends: it reaches back to the team's very first prediction.
FIRST = Cursor(EPOCH, 0)


def span(before: Cursor | None, through: Cursor | None) -> Q:
    """From `before` (exclusive, None: the newest) back to `through` (inclusive, None: all)."""
    condition = Q()
    if before:
        condition &= before.older()
    if through:
        condition &= through.this_or_newer()
    return condition


def team_members(request: HttpRequest) -> QuerySet:
    """The team's members (removed ones included while they are still members), by name."""
    return (
        get_user_model()
        .objects.filter(memberships__in=for_team(request, Membership.objects.all()))
        .order_by("username")
    )


class ListSelect(forms.Select):
    """A select written in one go. Django's writes each option through two templates, 25 to 30
    µs an option, and the filters' three selects have 20 options or more between them, on
    every page of the history and the gallery: 1 ms of each. Option groups are not written."""

    def render(self, name: str, value, attrs=None, renderer=None) -> str:
        widget = self.get_context(name, value, attrs)["widget"]
        options = format_html_join(
            "",
            '<option value="{}"{}>{}</option>',
            (
                (option["value"], attributes(option["attrs"]), option["label"])
                for _group, options, _index in widget["optgroups"]
                for option in options
            ),
        )
        return format_html(
            '<select name="{}"{}>{}</select>', name, attributes(widget["attrs"]), options
        )


def attributes(attrs: dict) -> str:
    """HTML attributes as Django's widgets write them (django/forms/widgets/attrs.html): in
    their order, a True one by its name alone, a False one not at all."""
    return mark_safe(
        "".join(
            f" {escape(name)}" if value is True else f' {escape(name)}="{escape(value)}"'
            for name, value in attrs.items()
            if value is not False
        )
    )


class MemberChoices(ModelChoiceIterator):
    """A member select's options, read in one plain query. Django's iterator reads a queryset
    through a server-side cursor on PostgreSQL, for long lists (DECLARE, FETCH and CLOSE: 1 to
    5 ms on every page of the history); a team's members are few."""

    def __iter__(self) -> Iterator[tuple]:
        if self.field.empty_label is not None:
            yield ("", self.field.empty_label)
        for member in self.queryset:
            yield self.choice(member)


class MemberField(forms.ModelChoiceField):
    iterator = MemberChoices
    widget = ListSelect


def member_field() -> forms.ModelChoiceField:
    """A member of the team by username; its queryset is set per request (team_members)."""
    return MemberField(
        queryset=get_user_model().objects.none(),
        required=False,
        to_field_name="username",
        empty_label="Anyone",
        error_messages={"invalid_choice": "No member of this team is called %(value)s."},
    )


def date_field(label: str) -> forms.DateField:
    return forms.DateField(
        label=label, required=False, widget=forms.DateInput(attrs={"type": "date"})
    )


class CursorField(forms.CharField):
    default_error_messages = {
        "invalid": "This link points at a position in the list that does not exist. "
        "Start again from the newest."
    }
    widget = forms.HiddenInput

    def to_python(self, value: str) -> Cursor | None:
        value = super().to_python(value)
        if not value:
            return None
        try:
            return Cursor.parse(value)
        except ValueError:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None


@dataclass
class Arrivals:
    """What arrived in a list since it was rendered: the predictions newer than the newest it
    shows (`after`) that its filters let through."""

    count: int
    # The newest of them, where the next question starts; `after` itself if none.
    newest: Cursor
    # Whether they go into the list at once (its reader is at the top, without filters) rather
    # than being counted in the "N new" bar.
    shown_at_once: bool
    query: str


@dataclass
class Chunk:
    """One page of a list as the browser holds it: the predictions from `before` (exclusive,
    None for the newest) back to `through` (inclusive)."""

    predictions: list[Prediction]
    before: Cursor | None
    through: Cursor
    has_older: bool
    # Unfinished predictions in this chunk's range, or outputs in it still to be saved: the
    # chunk refreshes until there are none.
    watching: bool
    query: str
    refresh_query: str
    older_query: str


class HistoryFilterForm(forms.Form):
    """The history's filters. Every field is optional; an empty form lists everything."""

    page_size = 50
    # The filters kept in links to other pages of the same list.
    filter_names = ["q", "status", "model", "member", "since", "until"]

    q = forms.CharField(label="Prompt contains", required=False, max_length=200)
    status = forms.ChoiceField(
        choices=[("", "Any status"), *Status.choices],
        required=False,
        widget=ListSelect,
        error_messages={"invalid_choice": "There is no status called %(value)s."},
    )
    # Free text behind a select: validating it costs no query, and its form bounds its length.
    model = forms.CharField(required=False, widget=ListSelect)
    member = member_field()
    since = date_field("From")
    until = date_field("To")
    before = CursorField(required=False)
    through = CursorField(required=False)
    # The list's question about arrivals: predictions newer than `after`; with `hold`, its
    # reader has scrolled down, so they are counted rather than shown.
    after = CursorField(required=False)
    hold = forms.BooleanField(required=False, widget=forms.HiddenInput)
    # Whether the list shows running predictions that its filters would not show (the gallery
    # shows them as placeholders, until their images come).
    shows_running = False

    def __init__(self, data, *, request: HttpRequest) -> None:
        super().__init__(data, label_suffix="")
        self.request = request
        # A callable is read only when the select is rendered: a refresh costs no query for it.
        self.fields["model"].widget.choices = lambda: self.model_choices

    def full_clean(self) -> None:
        # Only the team's members, removed ones included while they are still members. Set
        # here rather than on creation: an arrivals question, answered from the team's change
        # marker, never validates its form, and the queryset takes 0.2 ms to build.
        self.fields["member"].queryset = team_members(self.request)
        super().full_clean()

    @cached_property
    def model_choices(self) -> list[tuple[str, str]]:
        """The models the team has used, for the model select."""
        models = distinct_values(for_team(self.request, Prediction.objects.all()), "model")
        # A bookmarked model the team has not used (yet) stays selected.
        if self.data.get("model") and self.data["model"] not in models:
            models.append(self.data["model"])
        return [("", "Any model"), *((model, model) for model in models)]

    # --- Validation ------------------------------------------------------------------------

    def clean_q(self) -> str:
        q = self.cleaned_data["q"].strip()
        # The prompt index (a trigram index on PostgreSQL) looks up runs of three letters or
        # digits; a search without one would read every prediction of the team, about 2 s at
        # 1,000,000 when it finds nothing.
        if q and not SEARCHABLE_RE.search(q):
            raise forms.ValidationError(
                "Search for at least 3 letters or digits in a row, such as a word of the prompt."
            )
        return q

    def clean_model(self) -> str:
        return clean_model_name(self.cleaned_data["model"], required=False)

    def clean_until(self) -> date | None:
        until = self.cleaned_data["until"]
        if until and until >= date.max - timedelta(days=1):
            raise forms.ValidationError("Give an end date before the year 9999.")
        return until

    def clean(self) -> dict:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", "The end date is before the start date.")
        return data

    # --- Querying --------------------------------------------------------------------------

    def watched(self) -> QuerySet:
        """The team's predictions matching every filter but the status: the ones whose changes
        a page must follow, since a prediction that finishes may enter the shown set."""
        data = self.cleaned_data
        predictions = for_team(self.request, Prediction.objects.all())
        if data["q"]:
            predictions = prompt_search(predictions, data["q"])
        if data["model"]:
            predictions = predictions.filter(model=data["model"])
        if data["member"]:
            predictions = predictions.filter(submitted_by=data["member"])
        if data["since"]:
            predictions = predictions.filter(submitted_at__gte=start_of(data["since"]))
        if data["until"]:
            predictions = predictions.filter(
                submitted_at__lt=start_of(data["until"] + timedelta(days=1))
            )
        return predictions

    def shown(self, predictions: QuerySet) -> QuerySet:
        if self.cleaned_data["status"]:
            predictions = predictions.filter(status=self.cleaned_data["status"])
        return predictions

    def outputs(self) -> Prefetch:
        """The outputs a chunk shows of each prediction, fetched in one query per chunk, as its
        `listed_outputs`: a list costs less to hand each prediction than a queryset (1 to 2 ms
        a page of 50)."""
        return Prefetch("outputs", to_attr="listed_outputs")

    def chunk(self) -> Chunk:
        """The page the URL asks for. Without `through`, the next `page_size` predictions from
        `before`; with it, the whole range, as a refresh of a chunk already on screen.

        A chunk refreshes within the range it was rendered with: the newest chunk up to its
        newest prediction, so its own refreshes never move the page. What arrives above it is
        the list's arrivals' business (`arrivals`)."""
        data = self.cleaned_data
        shown = self.shown(self.watched()).filter(span(data["before"], data["through"]))
        shown = self.loaded(shown)
        if data["through"]:
            predictions, has_older, through = list(shown), False, data["through"]
        else:
            predictions = list(shown[: self.page_size + 1])
            has_older = len(predictions) > self.page_size
            predictions = predictions[: self.page_size]
            through = Cursor.of(predictions[-1]) if has_older else FIRST
        if self.shows_running:
            # Few at a time: what the team is running now.
            unfinished = self.watched().filter(span(data["before"], through), status__in=RUNNING)
            running = self.loaded(unfinished.exclude(pk__in=[p.pk for p in predictions]))
            predictions = sorted(
                [*predictions, *running[: self.page_size]],
                key=lambda p: (p.submitted_at, p.pk),
                reverse=True,
            )
        # Outputs the archive will still try: their tiles change once their copies are saved.
        archiving = any(output.retrying for p in predictions for output in p.listed_outputs)
        last = Cursor.of(predictions[-1]) if predictions else None
        top = data["before"] or (Cursor.of(predictions[0]).just_above() if predictions else None)
        if self.shows_running or not data.get("status"):
            # The chunk holds its range's unfinished predictions (the newest of them, on the
            # gallery), if there are any: no query needs to ask. Only a status filter hides
            # some, which may finish into it.
            unfinished_in_range = any(p.status in RUNNING for p in predictions)
        else:
            unfinished = self.watched().filter(span(top, through), status__in=RUNNING)
            unfinished_in_range = unfinished.exists()
        return Chunk(
            predictions=predictions,
            before=data["before"],
            through=through,
            has_older=has_older,
            watching=archiving or unfinished_in_range,
            query=self.query(),
            refresh_query=self.query(before=top, through=through),
            older_query=self.query(before=last),
        )

    def loaded(self, predictions: QuerySet) -> QuerySet:
        """`predictions` newest first, with what a row or a tile shows of them (LISTED)."""
        predictions = predictions.select_related("submitted_by").prefetch_related(self.outputs())
        return predictions.only(*LISTED).order_by("-submitted_at", "-id")

    # --- Arrivals --------------------------------------------------------------------------

    def listed(self, predictions: QuerySet) -> QuerySet:
        """Those of `predictions` the list shows: what the filters let through and, on a list
        that shows them, the running ones."""
        shown = self.shown(predictions)
        if self.shows_running:
            return predictions.filter(Q(pk__in=shown.values("pk")) | Q(status__in=RUNNING))
        return shown

    def first_arrivals(self, chunk: Chunk) -> Arrivals:
        """The arrivals question of a list whose newest chunk is `chunk`: nothing yet, after
        the newest prediction it shows."""
        newest = Cursor.of(chunk.predictions[0]) if chunk.predictions else FIRST
        return self.arrivals_after(newest, chunk.through, 0)

    def arrivals(self, held: bool = False) -> Arrivals:
        """What arrived after the URL's `after`, for the list whose newest chunk ends at
        `through`; `held`: counted whatever the reader's place."""
        data = self.cleaned_data
        newer = self.listed(self.watched().filter(data["after"].newer()))
        newest = newer.order_by("-submitted_at", "-id").values_list("submitted_at", "pk")
        found = list(newest[: self.arrivals_shown + 1])
        cursor = Cursor(*found[0]) if found else data["after"]
        return self.arrivals_after(cursor, data["through"] or FIRST, len(found), held)

    # "99+ new": beyond this, the exact number matters less than reloading.
    arrivals_shown = 99

    # Past this many rows, the newest chunk takes no more arrivals: they are counted instead.
    @property
    def longest_chunk(self) -> int:
        return 2 * self.page_size

    def arrivals_after(
        self, newest: Cursor, through: Cursor, count: int, held: bool = False
    ) -> Arrivals:
        held = held or self.cleaned_data.get("hold") or self.is_filtered
        # Shown at once, the arrivals join the newest chunk: the next question starts from them.
        after = newest if not held else (self.cleaned_data.get("after") or newest)
        return Arrivals(
            count=count,
            newest=newest,
            shown_at_once=not held,
            query=self.query(after=after, through=through),
        )

    def version(self) -> str | None:
        """A cheap stand-in for what an htmx answer shows (its ETag), None for anything else.

        An arrivals question's is the team's change marker (predictions.live): read from the
        cache, before the form is even validated, so an unchanged list costs no query for it.

        A chunk refresh's is its range's count and latest change (`range_version`), with the
        reader's role and id, which decide the actions a row or a tile offers and which statuses
        are the reader's own.
        """
        membership = self.request.membership
        if self.request.htmx and self.data.get("after"):
            marker = team_marker(membership.team_id)
            return marker and f"{marker}-{membership.role}"
        if not (self.request.htmx and self.is_valid() and self.cleaned_data["through"]):
            return None
        version = self.range_version()
        return f"{membership.team_id}-{membership.role}-{self.request.user.pk}-{version}"

    def range_version(self) -> str:
        """The count and latest change of the predictions the chunk's range watches: one that
        changes, finishes, appears or leaves moves one of them (the ORM writes bump
        `updated_at`, as does a change to one of its outputs or its cost).

        Read once per change of the team: the team's change marker moves with every change a
        list shows, so a version read after the marker was still holds while the marker does.
        It is kept in the cache beside that marker, and an unchanged team's refresh is answered
        without a query of its own (1 to 2 ms less, at 1,000,000 predictions).
        """
        data = self.cleaned_data
        team_id = self.request.membership.team_id
        marker = team_marker(team_id)
        range_query = self.query(before=data["before"], through=data["through"])
        digest = hashlib.blake2b(range_query.encode(), digest_size=16).hexdigest()
        key = f"chunk-version:{team_id}:{digest}"
        if marker and (kept := cache_get(key)) and kept[0] == marker:
            return kept[1]
        watched = self.watched().filter(span(data["before"], data["through"]))
        seen = watched.aggregate(count=Count("id"), latest=Max("updated_at"))
        latest = seen["latest"].timestamp() if seen["latest"] else 0
        version = f"{seen['count']}-{latest}"
        if marker:
            cache_set(key, (marker, version), SAFETY_INTERVAL)
        return version

    def query(self, **cursors: Cursor | None) -> str:
        """This form's filters as a query string, with the given cursors."""
        params = [(name, self.data[name]) for name in self.filter_names if self.data.get(name)]
        params += [(name, str(cursor)) for name, cursor in cursors.items() if cursor]
        return urlencode(params)

    @property
    def is_filtered(self) -> bool:
        return any(self.data.get(name) for name in self.filter_names)


def prompt_search(predictions: QuerySet, text: str) -> QuerySet:
    """Those of `predictions` whose prompt contains `text`, in any case.

    On PostgreSQL the trigram index of migration 0004 serves a LIKE on the prompt: it reads the
    index's list of rows for each trigram pg_trgm takes from the pattern. Around a space it
    takes word-boundary trigrams too: "  o", " ow" and "ny " for "tiny owl", and the list of a
    common word's start (a third of the prompts have a word starting with "o") is long: 7 of
    the 12 ms that "tiny owl" took at 1,000,000 predictions. So where every word has 3 letters
    or more, the index is asked for each word alone (only the trigrams inside it, 2 ms), and
    the rows found are checked for the words as typed, with STRPOS, which no index serves: the
    search took 5 ms. A shorter word ("tiny at") has trigrams only with its boundaries, so such
    a search asks the index for the words as typed.
    """
    predictions = predictions.alias(prompt_text=KT("input__prompt"))
    words = WORD_RE.findall(text)
    if len(words) < 2 or any(len(word) < 3 for word in words):
        return predictions.filter(prompt_text__icontains=text)
    for word in words:
        predictions = predictions.filter(prompt_text__icontains=word)
    found_at = StrIndex(Upper("prompt_text"), Upper(Value(text)))
    return predictions.alias(found_at=found_at).filter(found_at__gt=0)


def distinct_values(queryset: QuerySet, field: str) -> list:
    """The distinct values of `field` in `queryset`, in order, read as a loose index scan.

    `SELECT DISTINCT` reads every row's entry in the index, 350 ms on every history and gallery
    page of a team with 1,000,000 predictions, to find a handful of models. Instead, a recursive
    query asks the index for the first value, then for the first one after it, and so on: one
    short descent of prediction_model_idx per distinct value, whatever the number of rows. The
    ORM cannot write a recursive query, so it writes the two steps and this joins them.
    """
    if queryset.query.is_empty():
        return []
    first = queryset.order_by(field).values_list(field)[:1]
    after = queryset.filter(**{f"{field}__gt": RawSQL("found.value", ())})
    after = after.order_by(field).values_list(field)[:1]
    connection = connections[queryset.db]
    first_sql, first_params = first.query.get_compiler(connection=connection).as_sql()
    after_sql, after_params = after.query.get_compiler(connection=connection).as_sql()
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE found (value) AS (SELECT ({first_sql}) UNION ALL "
            f"SELECT ({after_sql}) FROM found WHERE found.value IS NOT NULL) "
            "SELECT value FROM found WHERE value IS NOT NULL",
            (*first_params, *after_params),
        )
        return [value for (value,) in cursor.fetchall()]


def cache_get(key: str):
    """`cache.get(key)`, None if the cache cannot be read: a version is then read again."""
    try:
        return cache.get(key)
    except Exception:  # noqa: BLE001 - any cache failure only costs a query
        log.warning("A chunk's version could not be read from the cache", exc_info=True)
        return None


def cache_set(key: str, value, timeout: float) -> None:
    try:
        cache.set(key, value, timeout)
    except Exception:  # noqa: BLE001 - any cache failure only costs a query
        log.warning("A chunk's version could not be kept in the cache", exc_info=True)


def start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))
