"""Predictions, and every transition they go through.

The database is the truth. Workers only ever change a prediction with a conditional update, so a
late, duplicate or concurrent result can never move a prediction backwards; broker messages just
wake workers up, and the `next_poll_at` column says what is due.
"""

import json
import logging
import math
import random
import re
import shlex
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    models,
    transaction,
)
from django.db.models import F, Q
from django.db.models.expressions import Combinable
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from dashboard import leases
from dashboard.formats import moment_text
from timings.learned import distribution as learned_timing
from webhooks import webhook_url

from . import schedule
from .client import (
    MODEL_RE,
    PREDICTION_ID_RE,
    Provider,
    ProviderClient,
    ProviderError,
    ProviderNotConfigured,
    creation_time,
    provider_label,
    validate_model,
)
from .live import team_changed
from .logs import printed_seed, remaining_seconds
from .schedule import Plan
from .signals import changed

log = logging.getLogger(__name__)


class Status(models.TextChoices):
    SUBMITTING = "submitting", "Submitting"
    SUBMIT_UNKNOWN = "submit_unknown", "Submit outcome unknown"
    STARTING = "starting", "Starting"
    PROCESSING = "processing", "Processing"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"
    ABORTED = "aborted", "Aborted"
    TIMED_OUT = "timed_out", "Timed out"


# Order in which a prediction may move; a status never goes back to an earlier one.
RUNNING = [Status.SUBMITTING, Status.STARTING, Status.PROCESSING]
REMOTE_STATUSES = {
    Status.STARTING,
    Status.PROCESSING,
    Status.SUCCEEDED,
    Status.FAILED,
    Status.CANCELED,
    Status.ABORTED,
}


def statuses_before(status: str) -> list[str]:
    """The running statuses from which `status` may be reached."""
    if status in RUNNING:
        return RUNNING[: RUNNING.index(status) + 1]
    return RUNNING


# Another team follows this provider id already: said without telling whether, or by whom.
UNTRACKABLE = "This prediction cannot be tracked by your team."

# Cancels sent to a timed-out prediction before Darkroom gives up: with error_backoff() between
# them (and the default intervals), they span about two minutes of a provider's trouble.
TIMEOUT_CANCEL_ATTEMPTS = 8


# Pauses before each new try to store a create's answer on a new database connection: a few
# seconds in all, well within the lease, while the answer exists only in the worker that got it.
ANSWER_WRITE_PAUSES = (0.1, 0.3, 1.0, 2.0)
# An answer the database would not take even then is kept in the cache this long, for the next
# worker that takes the prediction (see Prediction.send()).
KEPT_ANSWER_TTL = 24 * 3600
# A create whose outcome is unknown is looked for at a provider that lists its predictions this
# many seconds after it was given up, then after each look that found nothing.
RESOLVE_DELAYS = (5.0, 60.0, 300.0)
# Clocks differ: the provider's `created_at` may be this far outside the create's own times.
RESOLVE_MARGIN = timedelta(seconds=60)
# A look that failed for now (the provider's 5xx, a lost connection) is tried again soon, with
# error_backoff() between the tries, this many times before it counts as a look.
LOOK_RETRIES = 5
CHECK_DASHBOARD = "Check the provider's dashboard before submitting it again."
WILL_LOOK = "Darkroom will look for it among the provider's predictions."


# Outputs a prediction's page shows at once: a prediction may bring thousands, and a page
# renders what it lists. The others are a page further on (Prediction.output_page).
OUTPUTS_PER_PAGE = 100
# The environment variable the snippets read a Darkroom API token from, as the API page's do.
DARKROOM_TOKEN_VARIABLE = "DARKROOM_API_TOKEN"


class OutputPage(Page):
    """A page of one prediction's outputs, with what its pager says."""

    @property
    def after(self) -> int:
        """How many of the prediction's outputs come after this page's."""
        return self.paginator.count - self.end_index()

    @property
    def next_size(self) -> int:
        return min(self.after, self.paginator.per_page)


class OutputPaginator(Paginator):
    def _get_page(self, *args, **kwargs) -> OutputPage:
        return OutputPage(*args, **kwargs)


def error_backoff(errors: int, retry_after: float | None) -> timedelta:
    seconds = min(settings.POLL_FIRST_INTERVAL * 2**errors, settings.POLL_MAX_INTERVAL * 2)
    seconds *= random.uniform(0.8, 1.2)
    return timedelta(seconds=max(seconds, retry_after or 0))


class Prediction(models.Model):
    # Who and where.
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="predictions")
    # Indexed by prediction_member_idx, whose first column it is.
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_index=False,
    )
    provider = models.CharField(max_length=20)
    # One per submitted form: a double-clicked or replayed form finds the same predictions.
    request_key = models.UUIDField(default=uuid.uuid4, editable=False)
    # Which of the form's variations this is, from 0: one form may create several predictions.
    variation = models.PositiveSmallIntegerField(default=0, editable=False)
    submitted_at = models.DateTimeField(default=timezone.now)

    # What the provider says (the query response, field for field).
    provider_id = models.CharField(max_length=128, blank=True)
    model = models.CharField(max_length=201)
    version = models.CharField(max_length=200, blank=True)
    input = models.JSONField(default=dict)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SUBMITTING)
    logs = models.TextField(blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    predict_time = models.FloatField(null=True, blank=True)
    image_count = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    data_removed = models.BooleanField(default=False)
    # Kept for the record and never requested: on CometAPI they point at Replicate.
    urls = models.JSONField(default=dict, blank=True)

    # Tracking: what the workers did and when the next step is due.
    # When the next step (send, poll, cancel) is due; a new prediction is due at once.
    next_poll_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    claims = models.PositiveIntegerField(default=0)
    submit_attempts = models.PositiveSmallIntegerField(default=0)
    sending_since = models.DateTimeField(null=True, blank=True)
    # When the provider accepted the create (its created_at, else when its answer came): a job's
    # age and its deadline count from here, not from the submit, which may be long before.
    accepted_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # The cancel Darkroom sends by itself to a prediction it timed out, so that the provider
    # stops running (and billing) it: when the last attempt was sent, how many were, and the
    # provider's answer or the error.
    timeout_cancel_sent_at = models.DateTimeField(null=True, blank=True)
    timeout_cancel_attempts = models.PositiveSmallIntegerField(default=0)
    timeout_cancel_answer = models.TextField(blank=True)
    # Whether the create asked the provider for webhooks: then polls are only a safety net.
    webhook = models.BooleanField(default=False)
    # Made elsewhere (a script, the provider's site) and tracked by its provider id: Darkroom
    # never sends its create, and its first answer says what it is (see `track()`).
    tracked = models.BooleanField(default=False)
    # How likely the next poll is to find the prediction ended (predictions.schedule): when the
    # request budget is short, the likeliest polls go first.
    poll_likelihood = models.FloatField(default=0.0)
    polls = models.PositiveIntegerField(default=0)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    consecutive_errors = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-submitted_at", "-id"]
        indexes = [
            # Prediction.claim_due(): next_poll_at <= now among unfinished predictions.
            models.Index(
                fields=["next_poll_at"],
                condition=Q(next_poll_at__isnull=False),
                name="prediction_due_idx",
            ),
            # A team's history: newest first.
            models.Index(fields=["team", "-submitted_at", "-id"], name="prediction_recent_idx"),
            # The history filtered by status, the gallery (status = succeeded), and whether a
            # page's range holds an unfinished prediction (status IN running): see filters.py.
            models.Index(
                fields=["team", "status", "-submitted_at", "-id"], name="prediction_status_idx"
            ),
            # The history and gallery filtered by model, and the models a team has used (one
            # descent per model: filters.distinct_values()).
            models.Index(
                fields=["team", "model", "-submitted_at", "-id"], name="prediction_model_idx"
            ),
            # A member's latest predictions: the studio's results, the history's member filter.
            models.Index(
                fields=["submitted_by", "-submitted_at", "-id"], name="prediction_member_idx"
            ),
            # Prompt search (`q`) has a pg_trgm index on PostgreSQL, which SQLite cannot have:
            # migration 0004 makes it, so it is not declared here.
        ]
        constraints = [
            # Also serves the replay check of a submitted form: request_key = ?.
            models.UniqueConstraint(
                fields=["request_key", "variation"], name="prediction_unique_request_variation"
            ),
            models.UniqueConstraint(
                fields=["provider", "provider_id"],
                condition=~Q(provider_id=""),
                name="prediction_unique_provider_id",
            ),
        ]

    # The claim a worker took this copy with (see take()); None outside workers.
    claim: int | None = None

    def __str__(self) -> str:
        return f"{self.model} ({self.get_status_display()})"

    def get_absolute_url(self) -> str:
        return reverse("predictions:detail", args=[self.pk])

    # --- Reading ---------------------------------------------------------------------------

    @classmethod
    def mark_changed(cls, pks: list[int], *team_ids: int) -> None:
        """Mark predictions changed by something stored beside them (an output, a cost): their
        pages compare `updated_at`, their teams' lists the change marker."""
        if pks:
            cls.objects.filter(pk__in=pks).update(updated_at=timezone.now())
            team_changed(*team_ids)

    @property
    def is_running(self) -> bool:
        return self.status in RUNNING

    @property
    def tracked_unanswered(self) -> bool:
        """A tracked prediction the provider has not answered about yet: model, input and
        acceptance are unknown until it does."""
        return self.tracked and self.accepted_at is None

    @property
    def prompt(self) -> str:
        return str(self.input.get("prompt", ""))

    @property
    def output_urls(self) -> list[str]:
        """The output's web URLs; anything else a provider put there is not shown."""
        output = self.output
        urls = [output] if isinstance(output, str) else output if isinstance(output, list) else []
        return [u for u in urls if isinstance(u, str) and u.startswith(("https://", "http://"))]

    def output_page(self, number: Any) -> OutputPage:
        """One page of its outputs, the `number`th (as `?page=` gives it) of OUTPUTS_PER_PAGE
        each: anything but a page number is the first page, and a number past the end (outputs
        deleted since the link was made) the last."""
        paginator = OutputPaginator(self.outputs.all(), OUTPUTS_PER_PAGE)
        try:
            return paginator.page(number)
        except PageNotAnInteger:
            return paginator.page(1)
        except EmptyPage:
            # Raised only for a whole number (validate_number read it as one).
            return paginator.page(paginator.num_pages if int(number) > 1 else 1)

    @property
    def provider_label(self) -> str:
        return provider_label(self.provider)

    @property
    def provider_lists(self) -> bool:
        """Whether its provider lists the account's predictions (settings.PROVIDERS), so that
        a create whose outcome is unknown can be looked for there."""
        return bool(settings.PROVIDERS.get(self.provider, {}).get("lists"))

    @property
    def input_json(self) -> str:
        return json.dumps(self.input, indent=2, ensure_ascii=False)

    @property
    def queue_time(self) -> timedelta | None:
        if self.created_at and self.started_at:
            return self.started_at - self.created_at
        return None

    @property
    def run_time(self) -> timedelta | None:
        if self.started_at and self.completed_at:
            return self.completed_at - self.started_at
        return None

    @property
    def input_items(self) -> list[tuple[str, str]]:
        """The input as (name, value) pairs to show: text as it is, anything else as JSON."""
        return [
            (name, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
            for name, value in self.input.items()
        ]

    @property
    def extra_metrics(self) -> list[tuple[str, str, bool]]:
        """The provider's metrics other than those with fields of their own, as (label, value,
        known) to show: a time (`total_time`) as "Total time", "34.54 s"; any other under its
        own name (not known), a fraction rounded to what a reader compares."""
        shown = []
        for name, value in self.metrics.items():
            if name in ("predict_time", "image_count"):
                continue
            timed = name.endswith("_time") or name.startswith("time_")
            if timed and isinstance(value, int | float):  # rows from before well_typed_metrics
                shown.append((name.replace("_", " ").capitalize(), f"{value:.2f} s", True))
            elif isinstance(value, float):
                shown.append((name, f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}", False))
            else:
                shown.append((name, str(value), False))
        return shown

    @property
    def seed_used(self) -> int | None:
        """The seed the model ran with: the input's, else the one the model printed when it
        picked one (`Using seed: 12345`); None while neither says."""
        return self.seed_in(self.logs)

    def seed_in(self, logs: str) -> int | None:
        """`seed_used`, read from `logs` (all of the log, or its start where only that was
        fetched)."""
        seed = self.input.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return seed
        return printed_seed(logs)

    # --- The same request, by hand -------------------------------------------------------

    def create_url(self, darkroom_api: str = "") -> str | None:
        """Where the snippets send this prediction's create: its provider, or Darkroom's API at
        `darkroom_api` (its root, `…/api/v1`) for one `through_darkroom`. None for an unknown
        provider or model, and for one through Darkroom without `darkroom_api`."""
        config = settings.PROVIDERS.get(self.provider)
        try:
            owner, name = validate_model(self.model)
        except ValueError:
            return None
        if config is None:
            return None
        base = darkroom_api if self.through_darkroom else config["base_url"]
        if not base:
            return None
        return f"{base.rstrip('/')}/models/{owner}/{name}/predictions"

    def as_curl(self, darkroom_api: str = "") -> str:
        """This prediction's create as a curl command, with the token as an environment
        variable (see `create_url` for `darkroom_api`)."""
        url = self.create_url(darkroom_api)
        if url is None:
            return ""
        body = json.dumps({"input": self.input}, indent=2, ensure_ascii=False)
        return (
            f"curl -sS -X POST {shlex.quote(url)} \\\n"
            f'  -H "Authorization: Bearer ${self.key_variable}" \\\n'
            '  -H "Content-Type: application/json" \\\n'
            f"  -d {shlex.quote(body)}\n"
        )

    def as_python(self, darkroom_api: str = "") -> str:
        """This prediction's create as a Python script (httpx) that waits for the outcome (see
        `create_url` for `darkroom_api`)."""
        url = self.create_url(darkroom_api)
        if url is None:
            return ""
        base, path = url.split("/models/", 1)
        try:
            literal = python_literal(self.input)
        except RecursionError:
            return ""  # an input stored before INPUT_MAX_DEPTH, too deep even for one line
        return f"""import os
import time

import httpx

model_input = {literal}
api = httpx.Client(
    base_url={json.dumps(base)},
    headers={{"Authorization": f"Bearer {{os.environ['{self.key_variable}']}}"}},
    timeout=60,
)
prediction = api.post(
    "/models/{path}", json={{"input": model_input}}
).raise_for_status().json()
while prediction["status"] in ("starting", "processing"):
    time.sleep(1)
    prediction = api.get(f"/predictions/{{prediction['id']}}").raise_for_status().json()
print(prediction["status"], prediction["output"] or prediction["error"])
"""

    @property
    def through_darkroom(self) -> bool:
        """Whether the snippets send this create through Darkroom's own API rather than to its
        provider: the demo simulator takes no key of a person's (Darkroom acts there with the
        team's own token), so a person reaches it with a Darkroom API token."""
        return self.provider in settings.PROVIDERS and not self.provider_key_variable

    @property
    def key_variable(self) -> str:
        """The environment variable a snippet reads its token from: a snippet never holds one.
        The provider's key, or a Darkroom API token (the team's API page makes them)."""
        return DARKROOM_TOKEN_VARIABLE if self.through_darkroom else self.provider_key_variable

    @property
    def provider_key_variable(self) -> str:
        """The provider's key's environment variable; empty for the demo simulator."""
        return settings.PROVIDERS.get(self.provider, {}).get("key_variable", "")

    def get_provider(self) -> Provider:
        return self.team.provider(self.provider)

    # --- Tracking a prediction made elsewhere -----------------------------------------------

    @classmethod
    def track(cls, team, member, provider: str, remote_id: str) -> "Prediction":
        """Follow the prediction `remote_id` of `provider`, made elsewhere, as one of `team`'s,
        attributed to `member`: polled, archived and costed like its own, with no create sent.
        The team's prediction of that id if it has one; else a new one, in the state of a
        create the provider has just accepted (its first poll fills in what it is), with the
        dispatcher woken when the transaction commits.

        ValidationError (by field: `provider`, `remote_id`) for a provider this deployment
        does not offer or has no key for, or an id that cannot be one; PermissionDenied if
        `member` may not submit in `team`."""
        membership = team.memberships.filter(user=member).first()
        if membership is None or not membership.can_submit:
            raise PermissionDenied("Only the team's members and owners can track predictions.")
        offered = [
            name
            for name in settings.PROVIDERS
            if name != "simulator" or settings.DEFAULT_PROVIDER == "simulator"
        ]
        if provider not in offered:
            raise ValidationError(
                {"provider": f"Choose one of this deployment's providers: {', '.join(offered)}."}
            )
        try:
            team.provider(provider)
        except ProviderNotConfigured as exc:
            raise ValidationError({"provider": str(exc)}) from None
        remote_id = remote_id.strip() if isinstance(remote_id, str) else ""
        if not remote_id:
            raise ValidationError({"remote_id": "Give the prediction's id at the provider."})
        if not PREDICTION_ID_RE.fullmatch(remote_id):
            raise ValidationError(
                {
                    "remote_id": "A prediction id is at most 128 letters, digits, dashes and "
                    "underscores, as the provider shows it (for example "
                    "ufawqhfynnddngldkgtslldrkq)."
                }
            )
        same = cls.objects.filter(provider=provider, provider_id=remote_id)
        try:
            with transaction.atomic():
                if existing := same.first():
                    if existing.team_id == team.pk:
                        return existing
                    raise ValidationError({"remote_id": UNTRACKABLE})
                prediction = cls.objects.create(
                    team=team,
                    submitted_by=member,
                    provider=provider,
                    provider_id=remote_id,
                    tracked=True,
                    status=Status.STARTING,
                )
        except IntegrityError:
            # The same id tracked at the same moment by a twin request: that one stands.
            if existing := same.filter(team=team).first():
                return existing
            raise ValidationError({"remote_id": UNTRACKABLE}) from None
        from .tasks import wake_dispatcher

        transaction.on_commit(wake_dispatcher)
        return prediction

    def adopted_fields(self, payload: dict[str, Any], created_at: datetime | None) -> dict:
        """What a tracked prediction's first answer says it is: its model and input, and the
        provider's acceptance (its `created_at`), from which its age and deadline count."""
        model = payload.get("model")
        input = payload.get("input")
        now = timezone.now()
        return {
            "model": model if isinstance(model, str) and MODEL_RE.fullmatch(model) else "",
            "input": storable_json(input) if isinstance(input, dict) else {},
            "accepted_at": min(created_at, now)
            if created_at and timezone.is_aware(created_at)
            else now,
        }

    # --- Scheduling ------------------------------------------------------------------------

    @classmethod
    def claim_due(cls, limit: int) -> list[tuple[int, int]]:
        """Lease due predictions to one worker; (pk, claim) pairs for `take()`."""
        return [(prediction.pk, prediction.claim) for prediction in cls.claim_batch(limit)]

    @classmethod
    def claim_batch(cls, limit: int, lookahead: float = 0.0) -> list["Prediction"]:
        """Lease up to `limit` predictions due within `lookahead` seconds to one poller, in one
        statement; each comes with its `claim` and `due_at` (see predictions.poller)."""
        return leases.claim_batch(cls, "next_poll_at", settings.POLL_LEASE, limit, lookahead)

    @classmethod
    def store_polls(cls, results: list[tuple["Prediction", dict[str, Any]]]) -> None:
        """Store many polls' answers of predictions still running, in one statement: each
        only where its claim is still the latest and its status would not move backwards."""
        # A tracked prediction's first answer also says what it is (model, input): written on
        # its own, as few as there are tracked predictions.
        batched = []
        for prediction, fields in results:
            if prediction.tracked_unanswered:
                prediction.store_remote(fields)
            else:
                batched.append((prediction, fields))
        if not batched:
            return
        rows, teams = [], set()
        now = timezone.now()
        at = connection.ops.adapt_datetimefield_value  # once, not for each value
        for prediction, fields in batched:
            rows.append(
                (
                    prediction.pk,
                    prediction.claim,
                    fields["status"],
                    fields["version"],
                    fields["logs"],
                    json_value(fields["output"]),
                    fields["error"],
                    json_value(fields["metrics"]),
                    fields["predict_time"],
                    fields["image_count"],
                    at(fields["created_at"]),
                    at(fields["started_at"]),
                    at(fields["completed_at"]),
                    fields["data_removed"],
                    json_value(fields["urls"]),
                    at(fields["next_poll_at"]),
                    fields["poll_likelihood"],
                    at(now),
                )
            )
            if any(getattr(prediction, name) != fields[name] for name in LISTED_FIELDS):
                teams.add(prediction.team_id)
        leases.update_from_values(
            cls,
            STORED_POLL_COLUMNS,
            [
                *(f"{name} = v.{name}" for name in list(STORED_POLL_COLUMNS)[2:]),
                "last_polled_at = v.updated_at",
                "polls = p.polls + 1",
                "consecutive_errors = 0",
                "last_error = ''",
            ],
            # A status moves on only: starting may become processing, not the other way.
            "p.id = v.id AND p.claims = v.claims AND p.status IN ('starting', v.status)",
            rows,
        )
        team_changed(*teams)

    @classmethod
    def store_poll_errors(cls, results: list[tuple["Prediction", ProviderError]]) -> None:
        """Store many polls that failed and will be tried again, in one statement."""
        now = timezone.now()
        rows = [
            (
                prediction.pk,
                prediction.claim,
                storable_text(exc.message),
                db_datetime(now + error_backoff(prediction.consecutive_errors, exc.retry_after)),
                db_datetime(now),
            )
            for prediction, exc in results
        ]
        leases.update_from_values(
            cls,
            {
                "id": "bigint",
                "claims": "integer",
                "last_error": "text",
                "next_poll_at": "timestamptz",
                "updated_at": "timestamptz",
            },
            [
                "last_error = v.last_error",
                "next_poll_at = v.next_poll_at",
                "updated_at = v.updated_at",
                "last_polled_at = v.updated_at",
                "polls = p.polls + 1",
                "consecutive_errors = p.consecutive_errors + 1",
            ],
            "p.id = v.id AND p.claims = v.claims AND p.status IN ('starting', 'processing')",
            rows,
        )

    @classmethod
    def renew_leases(cls, held: list[tuple["Prediction", datetime]], until: datetime) -> set[int]:
        """Extend the leases a poller still holds (each as it last set it: a row written
        since, or claimed by another, is left alone); the pks renewed."""
        return cls._move_leases(held, until)

    @classmethod
    def release(cls, held: list[tuple["Prediction", datetime]]) -> None:
        """Give claimed predictions back, due when they were, for any poller to take."""
        cls._move_leases(held, None)

    @classmethod
    def _move_leases(cls, held: list[tuple["Prediction", datetime]], until) -> set[int]:
        if not held:
            return set()
        rows = [
            (p.pk, p.claim, db_datetime(lease), db_datetime(until or p.due_at)) for p, lease in held
        ]
        columns = {
            "id": "bigint",
            "claims": "integer",
            "lease": "timestamptz",
            "due": "timestamptz",
        }
        where = "p.id = v.id AND p.claims = v.claims AND p.next_poll_at = v.lease"
        return set(
            leases.update_from_values(cls, columns, ["next_poll_at = v.due"], where, rows, "p.id")
        )

    @classmethod
    def take(cls, pk: int, claim: int) -> "Prediction | None":
        """The prediction, if `claim` is still its latest; renews the lease for this worker."""
        return leases.take(cls.objects.all(), pk, claim, "next_poll_at", settings.POLL_LEASE)

    def advance(self, client: ProviderClient) -> None:
        """Do the one step this claimed prediction is due for: send, cancel or poll."""
        if self.status == Status.SUBMITTING:
            self.send(client)
        elif self.status == Status.SUBMIT_UNKNOWN:
            self.resolve_unknown(client)
        elif self.status == Status.TIMED_OUT:
            self.cancel_timed_out(client)
        elif self.status not in RUNNING:
            self._update(Q(), next_poll_at=None)
        elif self.past_deadline():
            self.poll_before_timing_out(client)
        elif self.cancel_requested_at:
            self.cancel_remote(client)
        else:
            self.poll(client)

    # --- Submitting ------------------------------------------------------------------------

    def send(self, client: ProviderClient) -> None:
        """Send the create, at most once unless it provably never reached the provider."""
        if self.sending_since is not None:
            # The worker that sent it stopped before the answer was stored. If the provider
            # answered and only the database failed, that worker kept the answer.
            if (answer := kept_answer(self.pk)) is not None:
                self.record_create_answer(answer)
                return
            self.give_up_submit(
                "The worker sending this prediction stopped before the provider answered or "
                "before its answer was recorded, so Darkroom cannot tell whether it was created."
            )
            return
        if self.cancel_requested_at:
            self._finish(Status.CANCELED, running=[Status.SUBMITTING])
            return
        try:
            # Read before the create is marked in flight: a database error here must leave a
            # create that was never sent free to be sent, not "unknown".
            provider = self.get_provider()
        except ProviderNotConfigured as exc:
            self._finish(Status.FAILED, error=str(exc), running=[Status.SUBMITTING])
            return
        now = timezone.now()
        webhook = webhook_url(self)
        if not self._update(
            Q(status=Status.SUBMITTING, sending_since=None),
            sending_since=now,
            submit_attempts=F("submit_attempts") + 1,
            webhook=bool(webhook),
        ):
            return
        self.webhook = bool(webhook)
        try:
            payload = client.create(provider, self.model, self.input, webhook=webhook)
        except ProviderError as exc:
            self.send_failed(exc)
        except ValueError as exc:
            self._finish(Status.FAILED, error=str(exc), running=[Status.SUBMITTING])
        else:
            self.record_create_answer(payload)

    def record_create_answer(self, payload: dict[str, Any]) -> None:
        """Store the create's answer, and send a cancel asked for meanwhile. Until the answer is
        stored, the provider's id exists only in this worker: a write that lost its database
        connection is tried again on a new one for a few seconds; if the database stays away,
        the answer is kept in the cache for the worker that takes the prediction next."""
        for pause in (*ANSWER_WRITE_PAUSES, None):
            try:
                self.apply_remote(payload)
                break
            except (OperationalError, InterfaceError):
                if pause is None:
                    keep_answer(self.pk, payload)
                    raise
                log.warning(
                    "prediction %s: the provider created it as %s, but storing that failed; "
                    "trying again on a new database connection",
                    self.pk,
                    payload["id"],
                    exc_info=True,
                )
                # Outside a transaction, as in a worker: the next query connects again.
                connection.close()
                time.sleep(pause)
        self.refresh_from_db()
        if self.cancel_requested_at and self.is_running:
            self._update(Q(), next_poll_at=timezone.now())

    def send_failed(self, exc: ProviderError) -> None:
        if exc.maybe_applied:
            self.give_up_submit(
                f"{exc.message} The create may have reached the provider, so Darkroom did not "
                "send it again."
            )
        elif exc.retryable and self.submit_attempts + 1 < settings.SUBMIT_MAX_ATTEMPTS:
            self._update(
                Q(status=Status.SUBMITTING),
                sending_since=None,
                consecutive_errors=F("consecutive_errors") + 1,
                last_error=exc.message,
                next_poll_at=timezone.now()
                + error_backoff(self.consecutive_errors, exc.retry_after),
            )
        else:
            self._finish(Status.FAILED, error=exc.message, running=[Status.SUBMITTING])

    def give_up_submit(self, reason: str) -> None:
        """Mark the outcome unknown: the create is never sent again. `sending_since` stays, to
        say when it was sent; where the provider lists its predictions, a look for it there is
        due (resolve_unknown). The error is the reason, then on a line of its own what Darkroom
        does or found about it."""
        now = timezone.now()
        lists = self.provider_lists
        self._transition(
            Q(status=Status.SUBMITTING),
            status=Status.SUBMIT_UNKNOWN,
            error=f"{reason}\n{WILL_LOOK if lists else CHECK_DASHBOARD}",
            completed_at=now,
            next_poll_at=now + timedelta(seconds=RESOLVE_DELAYS[0]) if lists else None,
        )

    # --- An unknown outcome, resolved --------------------------------------------------------

    def resolve_unknown(self, client: ProviderClient) -> None:
        """Look for the create whose outcome is unknown among the provider's predictions, and
        adopt it (status, id, outputs) if exactly one may be it; otherwise write what was looked
        at under the reason, and look again after the next of RESOLVE_DELAYS. Each look counts
        as a poll."""
        try:
            provider = self.get_provider()
            candidates, looked = self.find_create(client, provider)
            if len(candidates) == 1:
                payload = client.get(provider, candidates[0])
                if self.adopt(payload):
                    log.info(
                        "prediction %s: its create, whose outcome was unknown, was found at "
                        "the provider as %s",
                        self.pk,
                        payload["id"],
                    )
                    return
                finding = (
                    f"its prediction {candidates[0]} has this model and input, but another of "
                    "Darkroom's predictions is it."
                )
            elif candidates:
                finding = (
                    f"{len(candidates)} of the {looked} predictions it lists from then have this "
                    "model and input, so Darkroom cannot tell which one is this."
                )
            else:
                finding = (
                    f"none of the {looked} predictions it lists from then has this model and "
                    "input, so the create most likely never reached it."
                )
        except ProviderError as exc:
            if exc.retryable and self.consecutive_errors < LOOK_RETRIES:
                self.look_failed(exc)
                return
            finding = f"the provider could not be asked: {exc.message}"
        except ProviderNotConfigured as exc:
            finding = f"the provider could not be asked: {exc}"
        self.note_unknown(finding)

    def find_create(self, client: ProviderClient, provider: Provider) -> tuple[list[str], int]:
        """The ids of the provider's predictions that may be this one's lost create: made while
        it was being sent (give or take RESOLVE_MARGIN), with its model and input, and none of
        Darkroom's other predictions; and how many predictions of that time the provider
        listed."""
        since = (self.sending_since or self.submitted_at) - RESOLVE_MARGIN
        until = (self.completed_at or timezone.now()) + RESOLVE_MARGIN
        listed = [
            p for p in client.list(provider, since=since) if (creation_time(p) or until) <= until
        ]
        alike = [
            p["id"] for p in listed if p.get("model") == self.model and p.get("input") == self.input
        ]
        taken = set(
            type(self)
            .objects.filter(provider=self.provider, provider_id__in=alike)
            .values_list("provider_id", flat=True)
        )
        return [remote_id for remote_id in alike if remote_id not in taken], len(listed)

    def adopt(self, payload: dict[str, Any]) -> bool:
        """Take `payload`, found at the provider, as the answer its create never had stored;
        False if the prediction moved on meanwhile, or another one took that id first."""
        self.status = Status.SUBMITTING  # read as a create's answer: accepted, then followed
        try:
            return self.apply_remote(payload)
        except IntegrityError:
            return False

    def look_failed(self, exc: ProviderError) -> None:
        """Try the look again soon; its error shows under the prediction's details."""
        now = timezone.now()
        self._update(
            Q(status=Status.SUBMIT_UNKNOWN),
            consecutive_errors=F("consecutive_errors") + 1,
            last_error=exc.message,
            last_polled_at=now,
            next_poll_at=now + error_backoff(self.consecutive_errors, exc.retry_after),
        )

    def note_unknown(self, finding: str) -> None:
        """Write what a look for the unknown outcome found under its reason, and when the next
        look is due, if any is left."""
        looks = self.polls + 1
        now = timezone.now()
        again = looks < len(RESOLVE_DELAYS)
        reason = self.error.rpartition("\n")[0] or self.error
        note = (
            f"Darkroom looked for it among the provider's predictions "
            f"({looks} time{'s' if looks > 1 else ''}, last at "
            f"{moment_text(now)}): {finding} "
            + ("Darkroom will look again." if again else CHECK_DASHBOARD)
        )
        self._update(
            Q(status=Status.SUBMIT_UNKNOWN),
            error=f"{reason}\n{note}",
            consecutive_errors=0,
            last_error="",
            polls=looks,
            last_polled_at=now,
            next_poll_at=now + timedelta(seconds=RESOLVE_DELAYS[looks]) if again else None,
        )

    # --- Polling ---------------------------------------------------------------------------

    def poll(self, client: ProviderClient) -> None:
        self._call_provider(client.get)

    def cancel_remote(self, client: ProviderClient) -> None:
        self._call_provider(client.cancel, refused=self.cancel_refused)

    def cancel_refused(self, exc: ProviderError) -> None:
        """The provider will not cancel: stop asking, and follow the prediction to its end."""
        self._update(
            Q(status__in=RUNNING),
            cancel_requested_at=None,
            last_error=f"The provider refused to cancel it: {exc.message}",
            next_poll_at=timezone.now(),
        )

    def _call_provider(self, method, refused=None) -> None:
        try:
            payload = method(self.get_provider(), self.provider_id)
        except ProviderError as exc:
            if refused and not exc.retryable and exc.status != 404:
                refused(exc)
            else:
                self.poll_failed(exc)
        except ProviderNotConfigured as exc:
            # The team's key was removed mid-flight: keep trying until one is back or the deadline.
            self.poll_failed(ProviderError(str(exc), retryable=True))
        except ValueError as exc:
            self._finish(Status.FAILED, error=str(exc))
        else:
            self.apply_remote(payload)

    def poll_failed(self, exc: ProviderError) -> None:
        if exc.status == 404 and self.tracked_unanswered:
            # Nothing of it ran for the team, so nothing is owed (no provider id: "never reached
            # the provider"), and the id may be tracked again once it is right.
            now = timezone.now()
            self._transition(
                Q(status__in=RUNNING),
                status=Status.FAILED,
                error=f"{exc.message} The provider does not know this prediction "
                f"({self.provider_id}): check its id, and that it was made with this provider "
                "and the key Darkroom uses.",
                provider_id="",
                next_poll_at=None,
                completed_at=now,
            )
            return
        if exc.status == 404:
            self._finish(
                Status.FAILED,
                error=f"{exc.message} The provider no longer knows this prediction.",
            )
            return
        self._update(
            Q(status__in=RUNNING),
            polls=F("polls") + 1,
            last_polled_at=timezone.now(),
            consecutive_errors=F("consecutive_errors") + 1,
            last_error=exc.message,
            next_poll_at=timezone.now() + error_backoff(self.consecutive_errors, exc.retry_after),
        )

    def apply_remote(self, payload: dict[str, Any]) -> bool:
        """Map a provider response onto this prediction; False if it would move it backwards
        or a newer claim owns the prediction now."""
        fields = self.remote_fields(payload)
        if fields is None:
            self.poll_failed(
                ProviderError(
                    f"The provider reported an unknown status {payload.get('status')!r}.",
                    retryable=True,
                )
            )
            return False
        return self.store_remote(fields)

    def remote_fields(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The fields a provider response sets, with when to poll next; None for a status
        Darkroom does not know (which the answer to a create is read as "starting")."""
        answers_create = self.status == Status.SUBMITTING
        status = payload.get("status")
        if not isinstance(status, str) or status not in REMOTE_STATUSES:
            if not answers_create:
                return None
            # The create went through whatever the provider calls its first state: track it.
            status = Status.STARTING
        metrics = well_typed_metrics(payload.get("metrics"))
        now = timezone.now()
        created_at = timestamp(payload.get("created_at"))
        accepted_at = self.accepted_at or self.submitted_at
        adopted = self.adopted_fields(payload, created_at) if self.tracked_unanswered else {}
        if answers_create:
            # Not before the submit nor after the answer, whatever the provider's clock says.
            told = created_at if created_at and timezone.is_aware(created_at) else now
            accepted_at = min(max(told, self.submitted_at), now)
        elif adopted:
            accepted_at = adopted["accepted_at"]
        fields = {
            "provider_id": str(payload["id"]),
            "status": status,
            # Whatever the provider wrote, stored as text and JSON columns hold it: one field
            # no database takes would stop the prediction from advancing until its deadline.
            "version": storable_text(str(payload.get("version") or ""))[:200],
            "logs": storable_text(str(payload.get("logs") or "")),
            "output": storable_json(payload.get("output")),
            "error": storable_text(describe_error(payload.get("error"))),
            "metrics": metrics,
            "predict_time": number_or_none(metrics.get("predict_time")),
            "image_count": number_or_none(metrics.get("image_count"), int),
            "created_at": created_at,
            "started_at": timestamp(payload.get("started_at")),
            "completed_at": timestamp(payload.get("completed_at")),
            "data_removed": bool(payload.get("data_removed")),
            "urls": storable_json(urls) if isinstance(urls := payload.get("urls"), dict) else {},
            "sending_since": None,
            "polls": F("polls") + (0 if answers_create else 1),
            "last_polled_at": now,
            "consecutive_errors": 0,
            "last_error": "",
            "next_poll_at": None,
            "poll_likelihood": 0.0,
        }
        if status in RUNNING:
            plan = self.plan_poll(fields, accepted_at, now)
            fields["next_poll_at"] = now + timedelta(seconds=plan.delay)
            fields["poll_likelihood"] = plan.likelihood
        if answers_create:
            fields["accepted_at"] = accepted_at
        return fields | adopted

    def store_remote(self, fields: dict[str, Any]) -> bool:
        """Store what `remote_fields()` read, unless it would move the prediction backwards."""
        if "accepted_at" in fields and not self.tracked:
            # The paid create's own answer is always kept, even if this worker's lease ran out
            # meanwhile and another one gave the prediction up as "submit outcome unknown".
            condition = Q(status__in=[Status.SUBMITTING, Status.SUBMIT_UNKNOWN])
            return self._transition(condition, bound_to_claim=False, **fields)
        return self._transition(Q(status__in=statuses_before(fields["status"])), **fields)

    def plan_poll(self, fields: dict[str, Any], accepted_at: datetime, now: datetime) -> Plan:
        """When to poll next, from the answer's `fields` (see predictions.schedule)."""
        started_at = fields["started_at"]
        running = fields["status"] == Status.PROCESSING
        run_age = (now - started_at).total_seconds() if running and started_at else None
        return schedule.plan(
            self.timing,
            age=(now - accepted_at).total_seconds(),
            run_age=run_age,
            remaining=remaining_seconds(fields["logs"], run_age) if running else None,
            deadline_in=(accepted_at + self.deadline - now).total_seconds(),
            webhook=self.webhook,
        )

    def chance_ended(self, now: datetime) -> float:
        """How likely this running prediction is to have ended by `now`, given that it was
        running when last seen: what decides whose poll goes first when the request budget is
        short (a poll that waits becomes likelier to find the end, so none starves)."""
        if self.poll_likelihood >= schedule.BAR_LIKELIHOOD:
            return self.poll_likelihood  # its progress bar said when
        seen = self.last_polled_at or self.accepted_at or self.submitted_at
        if self.status == Status.PROCESSING and self.started_at:
            times, start = self.timing.run, self.started_at
        else:
            times, start = self.timing.total, self.accepted_at or self.submitted_at
        alive = times.survival((seen - start).total_seconds())
        if alive <= 0:
            return 1.0
        return 1.0 - times.survival((now - start).total_seconds()) / alive

    @property
    def timing(self):
        """What Darkroom has learned of this model's queue and run times."""
        return learned_timing(self.provider, self.model)

    # --- Deadlines -------------------------------------------------------------------------

    @property
    def deadline(self) -> timedelta:
        """How long the provider may run it: the model's configured deadline, else
        POLL_DEADLINE, or longer where the model is learned to be slow."""
        if self.model in settings.POLL_DEADLINES:
            return timedelta(seconds=settings.POLL_DEADLINES[self.model])
        return timedelta(seconds=self.timing.deadline(settings.POLL_DEADLINE))

    def past_deadline(self) -> bool:
        """Whether the deadline, counted from the provider's acceptance, has passed."""
        return timezone.now() >= (self.accepted_at or self.submitted_at) + self.deadline

    def poll_before_timing_out(self, client: ProviderClient) -> None:
        """Poll once more past the deadline: a prediction the provider says has ended ends as
        it says; one still running is timed out."""
        self.poll(client)
        # A failed poll leaves its error only in the row, and the reason quotes it.
        self.refresh_from_db(fields=["status", "last_error"])
        if self.is_running:
            self.time_out()

    def time_out(self) -> bool:
        """Stop following it, and have the next step ask the provider to cancel it."""
        minutes = round(self.deadline.total_seconds() / 60, 2)
        now = timezone.now()
        return self._transition(
            Q(status__in=RUNNING),
            status=Status.TIMED_OUT,
            error=(
                f"No final status from the provider after {minutes:g} minutes "
                f"(last seen: {self.get_status_display().lower()}"
                + (f"; last error: {self.last_error}" if self.last_error else "")
                + "). Darkroom stopped polling it"
                + (" and asked the provider to cancel it." if self.provider_id else ".")
            ),
            sending_since=None,
            completed_at=now,
            next_poll_at=now if self.provider_id else None,
        )

    def cancel_timed_out(self, client: ProviderClient) -> None:
        """Send the cancel of a timed-out prediction, recording the attempt and its answer. A
        cancel that fails is tried again, at most TIMEOUT_CANCEL_ATTEMPTS times in all: the
        prediction is timed out already, whatever the provider answers."""
        attempt = self.timeout_cancel_attempts + 1
        if not self.provider_id or attempt > TIMEOUT_CANCEL_ATTEMPTS:
            self._update(Q(), next_poll_at=None)
            return
        if not self._update(
            Q(status=Status.TIMED_OUT),
            timeout_cancel_sent_at=timezone.now(),
            timeout_cancel_attempts=attempt,
        ):
            return
        retry_after = None
        try:
            payload = client.cancel(self.get_provider(), self.provider_id)
        except ProviderError as exc:
            answer, retryable, retry_after = exc.message, exc.retryable, exc.retry_after
            if exc.status == 404:
                answer, retryable = f"{exc.message} The provider no longer knows it.", False
        except ProviderNotConfigured as exc:
            # The team's key was removed meanwhile; it may be back for the next attempt.
            answer, retryable = str(exc), True
        except ValueError as exc:
            answer, retryable = str(exc), False
        else:
            answer, retryable = f"The provider answered: {payload.get('status')}.", False
        again = retryable and attempt < TIMEOUT_CANCEL_ATTEMPTS
        if retryable:
            answer += (
                " Darkroom will try again."
                if again
                else f" Darkroom gave up after {attempt} attempts."
            )
        self._update(
            Q(status=Status.TIMED_OUT),
            timeout_cancel_answer=answer,
            next_poll_at=timezone.now() + error_backoff(attempt - 1, retry_after)
            if again
            else None,
        )

    # --- Cancelling ------------------------------------------------------------------------

    def request_cancel(self) -> bool:
        """Ask for a cancel, sent by the next worker step. False if there is nothing to cancel."""
        now = timezone.now()
        if self._transition(
            Q(status=Status.SUBMITTING, sending_since=None),
            status=Status.CANCELED,
            cancel_requested_at=now,
            completed_at=now,
            next_poll_at=None,
        ):
            return True
        # The create is in flight: send() cancels as soon as the provider has answered.
        if self._update(
            Q(status=Status.SUBMITTING, cancel_requested_at=None), cancel_requested_at=now
        ):
            return True
        return self._update(
            Q(status__in=[Status.STARTING, Status.PROCESSING], cancel_requested_at=None),
            cancel_requested_at=now,
            next_poll_at=now,
        )

    # --- Writing ---------------------------------------------------------------------------

    def _finish(self, status: str, error: str = "", running: list[str] = RUNNING) -> bool:
        return self._transition(
            Q(status__in=running),
            status=status,
            error=error,
            sending_since=None,
            next_poll_at=None,
            completed_at=timezone.now(),
        )

    def _transition(self, condition: Q, bound_to_claim: bool = True, **fields: Any) -> bool:
        """`_update`, then tell the apps built on predictions (`signals.changed`) in the same
        transaction, so what they record (outputs, costs) is stored with it or not at all."""
        # What they read of this copy is what the row holds.
        fields = storable_fields(fields)
        with transaction.atomic():
            if not self._update(condition, bound_to_claim=bound_to_claim, **fields):
                return False
            # This copy now says what the row says (but for counters the database added to).
            for name, value in fields.items():
                if not isinstance(value, Combinable):
                    setattr(self, name, value)
            changed.send(type(self), prediction=self)
        return True

    def _update(self, condition: Q, bound_to_claim: bool = True, **fields: Any) -> bool:
        """Update this row only if `condition` still holds and, for a worker's copy, its claim
        is still the latest (a newer claim's result must not be overwritten); True if it did."""
        if bound_to_claim and self.claim is not None:
            condition &= Q(claims=self.claim)
        # An error's text may quote the provider, NULs and all.
        fields = storable_fields(fields)
        fields.setdefault("updated_at", timezone.now())
        listed = any(
            name in LISTED_FIELDS
            and not isinstance(value, Combinable)
            and getattr(self, name, None) != value
            for name, value in fields.items()
        )
        if not type(self).objects.filter(condition, pk=self.pk).update(**fields):
            return False
        if listed:
            team_changed(self.team_id)
        return True


def answer_key(pk: int) -> str:
    return f"create-answer:{pk}"


def keep_answer(pk: int, payload: dict[str, Any]) -> None:
    """Keep the answer to prediction `pk`'s create that the database would not take, for the
    next worker that takes the prediction (see Prediction.send()), and say so in the log."""
    log.error(
        "prediction %s: the provider created it as %s, but the database would not store that; "
        "the answer is kept in the cache for the next worker",
        pk,
        payload.get("id"),
    )
    try:
        cache.set(answer_key(pk), payload, KEPT_ANSWER_TTL)
    except Exception:  # noqa: BLE001 - the log line above is all that is left
        log.exception("prediction %s: the cache would not keep the answer either", pk)


def kept_answer(pk: int) -> dict[str, Any] | None:
    """The answer to prediction `pk`'s create that a worker kept; None if there is none (or
    the cache cannot say)."""
    try:
        return cache.get(answer_key(pk))
    except Exception:  # noqa: BLE001 - then the outcome is unknown, and looked for
        log.warning("prediction %s: the cache could not be asked for a kept answer", pk)
        return None


# What the team's lists show of a prediction: a change to one of these moves the team's change
# marker (predictions.live). A poll that only brings more log lines does not.
LISTED_FIELDS = {
    "status",
    "output",
    "error",
    "metrics",
    "predict_time",
    "image_count",
    "created_at",
    "started_at",
    "completed_at",
    "data_removed",
}


@receiver([post_save, post_delete], sender=Prediction)
def mark_team_changed(sender, instance: Prediction, **kwargs) -> None:
    """A new, saved or deleted prediction changes its team's lists."""
    team_changed(instance.team_id)


# What Prediction.store_polls() writes from each answer, with its type on PostgreSQL.
STORED_POLL_COLUMNS = {
    "id": "bigint",
    "claims": "integer",
    "status": "text",
    "version": "text",
    "logs": "text",
    "output": "jsonb",
    "error": "text",
    "metrics": "jsonb",
    "predict_time": "double precision",
    "image_count": "integer",
    "created_at": "timestamptz",
    "started_at": "timestamptz",
    "completed_at": "timestamptz",
    "data_removed": "boolean",
    "urls": "jsonb",
    "next_poll_at": "timestamptz",
    "poll_likelihood": "double precision",
    "updated_at": "timestamptz",
}


# What a text or JSON column cannot hold (see storable_text).
UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")
# How deeply a provider's JSON (an output, its URLs, a tracked prediction's input) is kept.
STORED_JSON_DEPTH = 32


def json_value(value: Any) -> str | None:
    """A JSON column's value for raw SQL: None stays SQL NULL, as the ORM stores it."""
    return None if value is None else json.dumps(value)


def db_datetime(value: datetime | None) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def describe_error(error: Any) -> str:
    if error in (None, ""):
        return ""
    if isinstance(error, dict):
        return str(error.get("detail") or error.get("message") or error)
    return str(error)


def storable_text(text: str) -> str:
    """`text` as a text or JSON column holds it: PostgreSQL stores no NUL, and no database a
    lone surrogate (half of a UTF-16 pair, which JSON's \\ud800 escapes bring). Each becomes
    U+FFFD, the replacement character."""
    if text.isascii():  # known without reading it: no surrogate, only a NUL to look for
        return text.replace("\x00", "\ufffd")
    return UNSTORABLE_RE.sub("\ufffd", text)


def storable_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Model fields to write, their text as a column holds it (see `storable_text`)."""
    return {
        name: storable_text(value) if isinstance(value, str) else value
        for name, value in fields.items()
    }


def storable_json(value: Any, depth: int = 0) -> Any:
    """Decoded JSON from a provider as a JSON column holds it and a page shows it: its text
    (keys too) storable, NaN and Infinity as null, and what nests deeper than
    STORED_JSON_DEPTH levels cut off as null (a page's snippets recurse through it)."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict | list) and depth >= STORED_JSON_DEPTH:
        return None
    if isinstance(value, dict):
        return {
            storable_text(str(key)): storable_json(item, depth + 1) for key, item in value.items()
        }
    if isinstance(value, list):
        return [storable_json(item, depth + 1) for item in value]
    return value


def well_typed_metrics(metrics: Any) -> dict[str, int | float]:
    """The provider's metrics that are what Replicate's are, finite numbers (a count, such as
    `image_count`, a whole one), under names a JSON column holds. Anything else (text, a list,
    NaN) is left out rather than stored as it came: the API and the costs read these."""
    if not isinstance(metrics, dict):
        return {}
    typed = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        if str(name).endswith("_count"):
            if value != int(value):
                continue
            value = int(value)
        typed[storable_text(str(name))] = value
    return typed


def number_or_none(value: Any, kind: type = float) -> Any:
    """A metric the provider reported, if it is one a charge can be made from and the database
    holds: a negative, endless or (for a count) too large number is none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value < 0 or (isinstance(value, float) and not math.isfinite(value)):
        return None
    try:
        number = kind(value)
    except OverflowError:  # an integer beyond any float
        return None
    # A count is stored in a 32-bit integer column.
    return None if kind is int and number >= 2**31 else number


def timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_datetime(trim_nanoseconds(value))
    except ValueError:
        return None


def trim_nanoseconds(value: str) -> str:
    """Replicate sends nanoseconds (`...58.232302833Z`); Python parses at most microseconds."""
    head, dot, rest = value.partition(".")
    if not dot:
        return value
    digits = len(rest) - len(rest.lstrip("0123456789"))
    return f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"


# Below this depth a snippet's input is written on one line (inputs are refused deeper than
# INPUT_MAX_DEPTH, but rows stored before that limit may nest hundreds deep).
LITERAL_MAX_DEPTH = 20


def python_literal(value: Any, indent: str = "") -> str:
    """Decoded JSON as Python source, one item a line, as black would write it; nested deeper
    than LITERAL_MAX_DEPTH, on one line."""
    if len(indent) >= 4 * LITERAL_MAX_DEPTH:
        # JSON text without true, false or null is Python too; with them, repr() writes them.
        return repr(value)
    inner = indent + "    "
    if isinstance(value, dict) and value:
        items = "".join(
            f"{inner}{python_literal(str(key))}: {python_literal(item, inner)},\n"
            for key, item in value.items()
        )
        return "{\n" + items + indent + "}"
    if isinstance(value, list) and value:
        items = "".join(f"{inner}{python_literal(item, inner)},\n" for item in value)
        return "[\n" + items + indent + "]"
    if isinstance(value, bool) or value is None:
        return repr(value)
    # A JSON string or number is also a valid Python literal.
    return json.dumps(value, ensure_ascii=False)
