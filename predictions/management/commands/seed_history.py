"""Fill a team with a year of made-up history, for demos and for benchmarks at scale.

Every prediction has ended, as a year-old history has: mostly succeeded, some failed, canceled,
aborted, timed out or with an unknown submit outcome, each with the fields the poller would have
stored (provider id, version, input, times, metrics, a short tqdm log, output URLs, errors). The
models are the catalog's, with the simulator's queue and run times; the submitters are the
team's members, a few of them much busier than the rest. Each output of a succeeded prediction
gets an `Output` row as the archive leaves it, without a file: mostly "archived" (its thumbnails
answer 404), a few "expired" (the provider removed the file before it was saved). Each prediction
gets its cost as its end would have recorded it, from the price rules in force when it was
submitted, and the team's daily roll-ups are rebuilt from those costs at the end.

`--seed` makes the content repeatable; ids and request keys are always new, so a second run adds
to the team. Rows are written in batches of 5,000 predictions with their outputs and costs, a
transaction each, so an interrupted run leaves whole predictions (and roll-ups to rebuild:
`DailyCost.rebuild`, or seed again).
"""

import functools
import itertools
import json
import math
import random
import time
import uuid
from bisect import bisect
from datetime import datetime, timedelta
from itertools import accumulate

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, models, transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import Membership, Role, Team
from costs.models import DailyCost, PredictionCost, PriceRule
from outputs.models import PROVIDER_RETENTION, ArchiveState, Output
from predictions.catalog import CATALOG
from predictions.models import Prediction, Status
from predictions.simulator.engine import FAILURE_MESSAGES, ID_ALPHABET, MODELS

BATCH = 5_000
YEAR = timedelta(days=365)

# How often each model and each end state occurs.
MODEL_WEIGHTS = {
    "black-forest-labs/flux-schnell": 50,
    "black-forest-labs/flux-dev": 20,
    "black-forest-labs/flux-1.1-pro": 15,
    "black-forest-labs/flux-kontext-pro": 8,
    "stability-ai/sdxl": 7,
}
STATUS_WEIGHTS = {
    Status.SUCCEEDED: 920,
    Status.FAILED: 40,
    Status.CANCELED: 15,
    Status.ABORTED: 10,
    Status.SUBMIT_UNKNOWN: 10,
    Status.TIMED_OUT: 5,
}
# The share of an output's copies the provider removed before the archive saved them.
EXPIRED_SHARE = 0.03
STARRED_SHARE = 0.02

# Prompts are "<look> <subject> <place>, <style>": about 2.5% of them name any one subject.
LOOKS = (
    "a tiny", "an ancient", "a glowing", "a rusty", "a misty", "a golden", "a lonely",
    "a crowded", "a floating", "a frozen", "a neon", "a quiet", "a ruined", "a giant",
    "a paper", "a crystal", "a wooden", "a sleepy", "a stormy", "a hidden", "a broken",
    "a painted", "a velvet", "a silver", "a wild", "a curious", "a sunlit", "a moonlit",
    "a forgotten", "a busy", "a smiling", "a tangled", "a bright", "a dusty", "an electric",
    "a gentle", "a haunted", "a polished", "a stained-glass", "a clockwork",
)  # fmt: skip
SUBJECTS = (
    "lighthouse", "fox", "owl", "teapot", "robot", "whale", "castle", "bicycle", "cat",
    "dragon", "greenhouse", "violin", "submarine", "tortoise", "windmill", "astronaut",
    "bookshop", "hummingbird", "tram", "octopus", "samurai", "cottage", "jellyfish", "market",
    "observatory", "heron", "typewriter", "carousel", "glacier", "gardener", "beetle",
    "airship", "pagoda", "lantern", "orchard", "raccoon", "cathedral", "diner", "kite",
    "mushroom",
)  # fmt: skip
PLACES = (
    "at dusk", "in the rain", "on a cliff", "under the sea", "in a snowstorm", "at dawn",
    "in a desert", "on the moon", "in a forest", "by a river", "in a city street",
    "on a rooftop", "in a library", "at a train station", "in a meadow", "inside a bottle",
    "on an island", "in the fog", "at night", "in autumn leaves", "in a cave", "on a beach",
    "in a jungle", "over the clouds", "in a kitchen", "at a harbour", "in a canyon",
    "in a swamp", "on a mountain", "in a garden",
)  # fmt: skip
STYLES = (
    "oil painting", "watercolor", "35mm photo", "studio lighting", "isometric render",
    "ukiyo-e print", "pencil sketch", "cinematic", "low poly", "film noir", "pastel colors",
    "macro photograph", "children's book illustration", "art nouveau", "pixel art",
    "long exposure", "vintage postcard", "3d render", "charcoal drawing", "gouache",
    "tilt-shift", "infrared photo", "bauhaus poster", "claymation", "linocut",
)  # fmt: skip

EXTENSIONS = {"webp": "image/webp", "jpg": "image/jpeg", "png": "image/png"}
# Width and height of a 1-megapixel image at each aspect ratio.
SIZES = {
    ratio: (round(1024 * math.sqrt(w / h) / 16) * 16, round(1024 * math.sqrt(h / w) / 16) * 16)
    for ratio in ("1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3", "21:9", "9:21")
    for w, h in [map(int, ratio.split(":"))]
}


class Command(BaseCommand):
    help = "Fill a team with a year of made-up finished predictions and their outputs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", required=True, help="team name or id (a name is created)")
        parser.add_argument("--count", type=int, required=True, help="predictions to add")
        parser.add_argument(
            "--members", type=int, default=5, help="submitters, created as needed (5)"
        )
        parser.add_argument("--seed", type=int, default=None, help="for repeatable content")

    def handle(self, *args, team: str, count: int, members: int, seed: int | None, **options):
        if count < 0 or members < 1:
            raise CommandError("--count must be 0 or more and --members 1 or more.")
        started = time.perf_counter()
        target = find_or_create_team(team)
        submitters = ensure_submitters(target, members)
        history = History(target, submitters, random.Random(seed), timezone.now(), count)
        outputs = 0
        for done in range(0, count, BATCH):
            size = min(BATCH, count - done)
            with transaction.atomic():
                predictions = insert(history.predictions(done, size))
                outputs += len(insert(history.outputs(predictions)))
                insert(history.costs(predictions))
            self.stdout.write(
                f"{done + size:>12,} / {count:,} predictions, {outputs:,} outputs "
                f"({time.perf_counter() - started:.1f} s)"
            )
        # Costs were written without moving the roll-ups one by one: one rebuild makes them
        # equal to the raw rows, the team's earlier history included.
        roll_ups = DailyCost.rebuild(target)
        if connection.vendor == "postgresql":
            # What autovacuum would do within minutes: statistics, without which the planner
            # plans for the tables as they were, and the visibility map that index-only scans
            # need. VACUUM cannot run inside a transaction (a caller's, or a test's).
            command = "ANALYZE" if connection.in_atomic_block else "VACUUM ANALYZE"
            with connection.cursor() as cursor:
                for model in (Prediction, Output, PredictionCost, DailyCost):
                    cursor.execute(f"{command} {connection.ops.quote_name(model._meta.db_table)}")
        self.stdout.write(
            f"Seeded {count:,} predictions with their costs and {outputs:,} outputs into team "
            f"{target.name!r} (id {target.pk}) by {len(submitters)} members, "
            f"{roll_ups:,} daily roll-up rows, in "
            f"{time.perf_counter() - started:.1f} s."
        )


def find_or_create_team(name_or_id: str) -> Team:
    if name_or_id.isdigit():
        team = Team.objects.filter(pk=int(name_or_id)).first()
        if team is None:
            raise CommandError(f"There is no team with id {name_or_id}.")
        return team
    return Team.objects.filter(name=name_or_id).first() or Team.objects.create(name=name_or_id)


def ensure_submitters(team: Team, count: int) -> list:
    """The team's members who may submit, with new members added until there are `count`."""
    submitters = Membership.objects.filter(team=team, role__in=[Role.OWNER, Role.MEMBER])
    users = [membership.user for membership in submitters.select_related("user")]
    prefix = f"{slugify(team.name)[:30] or 'team'}-{team.pk}"
    User = get_user_model()
    numbers = itertools.count(1)
    while len(users) < count:
        name = f"{prefix}-member-{next(numbers)}"
        user, created = User.objects.get_or_create(
            username=name, defaults={"email": f"{name}@example.com"}
        )
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        membership, _ = Membership.objects.get_or_create(
            team=team, user=user, defaults={"role": Role.MEMBER}
        )
        if membership.can_submit and user not in users:
            users.append(user)
    return users


class Weighted:
    """Draws from `weights` ({value: weight}) with one random number and a bisect."""

    def __init__(self, rng: random.Random, weights: dict) -> None:
        self.rng, self.values = rng, list(weights)
        self.cumulative = list(accumulate(weights.values()))

    def draw(self):
        return self.values[bisect(self.cumulative, self.rng.random() * self.cumulative[-1])]


class History:
    """`count` predictions submitted over the year before `now`, and their outputs."""

    def __init__(
        self, team: Team, members: list, rng: random.Random, now: datetime, count: int
    ) -> None:
        self.team, self.rng, self.now = team, rng, now
        self.models = Weighted(rng, {name: MODEL_WEIGHTS.get(name, 1) for name in CATALOG})
        self.statuses = Weighted(rng, STATUS_WEIGHTS)
        # A few members submit most of the predictions.
        self.members = Weighted(rng, {m: 1 / rank for rank, m in enumerate(members, start=1)})
        # Oldest first, as they were submitted: ids grow with time, as they would have.
        self.moments = sorted(rng.random() for _ in range(count))
        # The price rules of each (provider, model), as PredictionCost.recompute caches them.
        self.rules: dict[tuple[str, str], list[PriceRule]] = {}

    def predictions(self, start: int, count: int) -> list[Prediction]:
        """The `count` predictions from the `start`th oldest on."""
        return [
            self.prediction(self.now - YEAR * (1 - moment))
            for moment in self.moments[start : start + count]
        ]

    def prediction(self, submitted_at: datetime) -> Prediction:
        rng = self.rng
        model = self.models.draw()
        profile = MODELS[model]
        status = self.statuses.draw()
        seed = rng.getrandbits(32)
        input, images, extension = self.input(model, seed)
        provider_id = "" if status == Status.SUBMIT_UNKNOWN else replicate_id()
        created = submitted_at + timedelta(seconds=rng.uniform(0.2, 0.6))
        started = created + timedelta(seconds=rng.lognormvariate(math.log(profile.queue_median), 1))
        run = rng.lognormvariate(math.log(profile.run_median), 0.3)
        completed = started + timedelta(seconds=run)
        fields = {}
        if status == Status.SUCCEEDED:
            output = [
                f"https://replicate.delivery/xezq/{rng.getrandbits(160):040x}/out-{i}.{extension}"
                for i in range(images)
            ]
            fields = {
                "output": output,
                "metrics": {"image_count": images, "predict_time": round(run, 6)},
                "predict_time": round(run, 6),
                "image_count": images,
                "logs": tqdm_log(seed, profile.steps, profile.steps, run)
                + f"Total safe images: {images} out of {images}\n",
            }
        elif status == Status.FAILED:
            run *= rng.random()
            completed = started + timedelta(seconds=run)
            fields = {
                "error": rng.choice(FAILURE_MESSAGES),
                "metrics": {"predict_time": round(run, 6)},
                "predict_time": round(run, 6),
                "logs": tqdm_log(seed, rng.randrange(profile.steps), profile.steps, run),
            }
        elif status in (Status.CANCELED, Status.ABORTED):
            completed = created + timedelta(seconds=rng.uniform(0.5, 20))
            if completed < started:
                started = None
            fields = {"logs": tqdm_log(seed, 0, profile.steps, run) if started else ""}
        elif status == Status.TIMED_OUT:
            completed = submitted_at + timedelta(minutes=30)
            started = None
            fields = {
                "error": "No final status from the provider after 30 minutes (last seen: "
                "starting). Darkroom stopped polling it."
            }
        else:  # Status.SUBMIT_UNKNOWN: the create's answer never came.
            created = started = None
            completed = submitted_at + timedelta(seconds=rng.uniform(60, 90))
            fields = {
                "error": "The provider did not answer in time, so Darkroom cannot tell whether "
                "it was created. Check the provider's dashboard before submitting it again."
            }
        api = f"https://api.replicate.com/v1/predictions/{provider_id}"
        return Prediction(
            team=self.team,
            submitted_by=self.members.draw(),
            provider="replicate",
            request_key=uuid.uuid4(),
            submitted_at=submitted_at,
            provider_id=provider_id,
            model=model,
            version=profile.version if provider_id else "",
            input=input,
            status=status,
            created_at=created,
            started_at=started,
            completed_at=completed,
            data_removed=bool(provider_id) and self.now - completed > PROVIDER_RETENTION,
            urls={"get": api, "cancel": f"{api}/cancel"} if provider_id else {},
            next_poll_at=None,
            claims=1,
            submit_attempts=1,
            polls=0 if created is None else 2 + int(run),
            last_polled_at=completed if provider_id else None,
            **fields,
        )

    def input(self, model: str, seed: int) -> tuple[dict, int, str]:
        """A prompt and the inputs people change most; with how many images it asks for and
        their file extension."""
        rng = self.rng
        prompt = (
            f"{rng.choice(LOOKS)} {rng.choice(SUBJECTS)} {rng.choice(PLACES)}, {rng.choice(STYLES)}"
        )
        values = {"prompt": prompt, "seed": seed}
        fields = {field.name: field for field in CATALOG[model].inputs}
        if "aspect_ratio" in fields:
            values["aspect_ratio"] = rng.choice(("1:1", "1:1", "16:9", "3:2", "2:3", "9:16"))
        if "num_outputs" in fields:
            values["num_outputs"] = rng.choice((1, 1, 1, 1, 2, 4))
        if "input_image" in fields:
            values["input_image"] = f"https://example.com/photos/{rng.getrandbits(32):08x}.jpg"
        extension = "png"
        if "output_format" in fields:
            extension = fields["output_format"].default
        return values, values.get("num_outputs", 1), extension

    def outputs(self, predictions: list[Prediction]) -> list[Output]:
        rng = self.rng
        outputs = []
        for prediction in predictions:
            for index, url in enumerate(prediction.output or []):
                extension = url.rsplit(".", 1)[1]
                width, height = SIZES.get(prediction.input.get("aspect_ratio"), (1024, 1024))
                fields = {
                    "state": ArchiveState.ARCHIVED,
                    "archived_at": prediction.completed_at + timedelta(seconds=rng.uniform(1, 5)),
                    "attempts": 1,
                    "sha256": f"{rng.getrandbits(256):064x}",
                    "content_type": EXTENSIONS[extension],
                    "extension": extension,
                    "bytes": rng.randrange(60_000, 900_000),
                    "width": width,
                    "height": height,
                }
                if rng.random() < EXPIRED_SHARE:
                    fields = {
                        "state": ArchiveState.EXPIRED,
                        "reason": "The provider removed it before Darkroom could save a copy.",
                        "attempts": 3,
                    }
                outputs.append(
                    Output(
                        team_id=prediction.team_id,
                        prediction=prediction,
                        index=index,
                        source_url=url,
                        created_at=prediction.completed_at,
                        starred=rng.random() < STARRED_SHARE,
                        next_attempt_at=None,
                        claims=1,
                        **fields,
                    )
                )
        return outputs

    def costs(self, predictions: list[Prediction]) -> list[PredictionCost]:
        """What each of the (saved, ended) `predictions` cost, as `PredictionCost.record` would
        have stored it when it ended: priced by the rule in force when it was submitted."""
        # An estimate for a prediction that may have run comes from the team's latest successful
        # runs: read once a batch, after the batch is saved, as its end would have read them.
        typical = functools.cache(PriceRule.typical_seconds_per_image)
        costs = []
        for prediction in predictions:
            key = (prediction.provider, prediction.model)
            if key not in self.rules:
                self.rules[key] = PriceRule.candidates(*key, self.team)
            rule = PriceRule.choose(self.rules[key], prediction.submitted_at)
            costs.append(PredictionCost.compute(prediction, rule, typical))
        return costs


def insert(rows: list[models.Model]) -> list[models.Model]:
    """Save new `rows` of one model and set their primary keys (unless they have theirs, as a
    cost has its prediction's).

    On PostgreSQL with a COPY, as ids taken from the table's sequence first: `bulk_create` spends
    three quarters of its time turning values into SQL parameters, and COPY takes them as text.
    Values are each field's Python value (JSON encoded for JSON fields), which holds for the
    fields these rows have: text, numbers, decimals, booleans, dates, datetimes, UUIDs and JSON.
    """
    if not rows:
        return rows
    model = type(rows[0])
    if connection.vendor != "postgresql":
        return model.objects.bulk_create(rows)
    meta = model._meta
    fields = meta.concrete_fields
    stamped = [
        f for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
    ]
    with connection.cursor() as cursor:
        if isinstance(meta.pk, models.AutoField):
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                [meta.db_table, meta.pk.column, len(rows)],
            )
            for row, (pk,) in zip(rows, cursor.fetchall(), strict=True):
                row.pk = pk
        columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
        with cursor.copy(
            f"COPY {connection.ops.quote_name(meta.db_table)} ({columns}) FROM STDIN"
        ) as copy:
            for row in rows:
                for field in stamped:
                    field.pre_save(row, add=True)
                copy.write_row([copy_value(field, getattr(row, field.attname)) for field in fields])
    return rows


def copy_value(field: models.Field, value):
    if isinstance(field, models.JSONField) and value is not None:
        return json.dumps(value, cls=field.encoder)
    return value


def replicate_id() -> str:
    """26 characters of Crockford base32, from fresh random bits: unique across runs."""
    bits = uuid.uuid4().int
    return "".join(ID_ALPHABET[(bits >> (5 * i)) & 31] for i in range(26))


def tqdm_log(seed: int, done: int, steps: int, run: float) -> str:
    """A short log as the models print it: the seed, then the progress bar's first and last
    states (a real log has one line per step)."""
    rate = max(done, 1) / max(run, 0.001)
    bar = "█" * (10 * done // steps)
    return (
        f"Using seed: {seed}\n"
        f"  0%|          | 0/{steps} [00:00<?, ?it/s]\n"
        f"{100 * done // steps:3d}%|{bar:<10}| {done}/{steps} "
        f"[00:{min(int(run), 59):02d}<00:00, {rate:.2f}it/s]\n"
    )
