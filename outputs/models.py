"""Darkroom's own copies of prediction outputs, and what teams collect and share of them.

Providers delete an output about an hour after its prediction ends, so every output is archived
as soon as its URL appears: downloaded through the safe downloader (`download.py`), checked,
stored once per SHA-256 in Django's default storage, with WebP thumbnails. The archive is a
state machine driven by the database, like the poller: `next_attempt_at` says what is due, a
claim counter makes a duplicate worker harmless, and every transition is a conditional update.
"""

import hashlib
import logging
import mimetypes
import random
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import models, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from dashboard import leases
from dashboard.paths import path_to
from predictions.models import Prediction

from . import images
from .download import DownloadError, fetch

log = logging.getLogger(__name__)

# How long providers keep an API prediction's files after it ends.
PROVIDER_RETENTION = timedelta(hours=1)

# The sizes of the two thumbnails, as the longest side in pixels: tiles in grids, and the
# history's 48-pixel icons (at twice the density, for sharp screens).
THUMB_SIZES = {"thumb": 512, "icon": 96}


class ArchiveState(models.TextChoices):
    PENDING = "pending", "Saving"
    ARCHIVED = "archived", "Saved"
    FAILED = "failed", "Not saved"
    EXPIRED = "expired", "Expired at the provider"


class Output(models.Model):
    """One file a prediction produced: where the provider put it, and Darkroom's copy."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="outputs")
    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="outputs")
    # Its place in the prediction's output list, from 0.
    index = models.PositiveSmallIntegerField()
    # Downloaded once and never shown once a copy exists: the provider deletes it within the hour.
    source_url = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    starred = models.BooleanField(default=False)

    # The archive.
    state = models.CharField(
        max_length=10, choices=ArchiveState.choices, default=ArchiveState.PENDING
    )
    reason = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # When the next archive attempt is due; None once nothing more will be tried.
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    claims = models.PositiveIntegerField(default=0)
    archived_at = models.DateTimeField(null=True, blank=True)

    # The copy: identical files share one stored file, named by their SHA-256.
    sha256 = models.CharField(max_length=64, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    extension = models.CharField(max_length=10, blank=True)
    bytes = models.PositiveBigIntegerField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["prediction", "index"]
        indexes = [
            # Output.claim_due(): next_attempt_at <= now among outputs still to archive.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(next_attempt_at__isnull=False),
                name="output_due_idx",
            ),
            # Deleting a file: does another output still share this SHA-256?
            models.Index(fields=["sha256"], condition=~Q(sha256=""), name="output_sha256_idx"),
            # The gallery filtered by star.
            models.Index(
                fields=["team", "prediction"], condition=Q(starred=True), name="output_starred_idx"
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["prediction", "index"], name="output_unique_index")
        ]

    # The claim a worker took this copy with (see take()); None outside workers.
    claim: int | None = None

    def __str__(self) -> str:
        return f"Output {self.index + 1} of prediction {self.prediction_id} ({self.state})"

    # --- Reading ---------------------------------------------------------------------------

    @property
    def is_archived(self) -> bool:
        return self.state == ArchiveState.ARCHIVED

    @property
    def kind(self) -> str:
        """How the output is shown: image, video, audio or text (text and JSON). Its stored type
        once archived, else a guess from the provider URL's extension (an image unless it says
        otherwise)."""
        content_type = self.content_type or mimetypes.guess_type(urlsplit(self.source_url).path)[0]
        major = (content_type or "image/").split("/")[0]
        return major if major in ("image", "video", "audio") else "text"

    @property
    def retrying(self) -> bool:
        """Whether the archive will try this output (again): pages showing it keep refreshing."""
        return self.next_attempt_at is not None

    @property
    def at_provider(self) -> bool:
        """Whether the provider likely still has the file, so a page may show it from there
        until the copy exists: not removed, not given up on, and within the provider's hour."""
        prediction = self.prediction
        ended = prediction.completed_at
        return (
            not self.is_archived
            and self.retrying
            and not prediction.data_removed
            and (ended is None or timezone.now() - ended < PROVIDER_RETENTION)
        )

    def stored_name(self, variant: str = "file") -> str:
        """The storage name of the copy (`file`) or of a thumbnail (`thumb`, `icon`)."""
        folder = f"{self.sha256[:2]}/{self.sha256}"
        if variant in THUMB_SIZES:
            return f"thumbs/{folder}-{THUMB_SIZES[variant]}.webp"
        return f"outputs/{folder}.{self.extension}"

    def stored_names(self) -> list[str]:
        """The names of the copy and, for an image, its thumbnails."""
        variants = ["file", *THUMB_SIZES] if self.content_type.startswith("image/") else ["file"]
        return [self.stored_name(variant) for variant in variants]

    def files(self, content: bytes) -> dict[str, bytes]:
        """The files to store for a copy whose content is `content`: it, and its thumbnails."""
        names = self.stored_names()
        if len(names) == 1:
            return {names[0]: content}
        # THUMB_SIZES is largest first, as thumbnails() makes them.
        files = [content, *images.thumbnails(content, [*THUMB_SIZES.values()])]
        return dict(zip(names, files, strict=True))

    def has_thumbnails(self) -> bool:
        return self.is_archived and self.kind == "image"

    def thumb_size(self, variant: str = "thumb") -> tuple[int, int]:
        """A thumbnail's width and height, for the <img> that shows it (nothing jumps)."""
        return images.fit(self.width or 1, self.height or 1, THUMB_SIZES[variant])

    def url(self, variant: str = "file") -> str:
        """The team's URL of the copy; `download` adds Content-Disposition: attachment. The
        version makes the URL immutable, so browsers cache it for good."""
        path = path_to("outputs:media", self.pk, variant)
        return f"{path}?v={self.sha256[:16]}"

    def file_name(self, hide_prompt: bool = False) -> str:
        """The download's file name: from the prompt, unless the prompt is to stay hidden."""
        stem = "" if hide_prompt else slugify(self.prediction.prompt)[:60].strip("-")
        stem = stem or f"darkroom-{self.prediction_id}"
        return f"{stem}-{self.index + 1}.{self.extension or 'bin'}"

    # --- Recording -------------------------------------------------------------------------

    @classmethod
    def record(cls, prediction: Prediction) -> int:
        """Make sure each of `prediction`'s output URLs has a row due for archiving; a URL that
        changed (a preview replaced while processing) is archived again. Returns the rows made
        due."""
        urls = prediction.output_urls
        if not urls:
            return 0
        now = timezone.now()
        existing = dict(
            cls.objects.filter(prediction=prediction).values_list("index", "source_url")
        )
        due = 0
        for index, url in enumerate(urls):
            if index not in existing:
                _, created = cls.objects.get_or_create(
                    prediction=prediction,
                    index=index,
                    defaults={"team_id": prediction.team_id, "source_url": url},
                )
                due += created
            elif existing[index] != url:
                # A new claim: a worker still fetching the old URL must not store its file.
                due += cls.objects.filter(prediction=prediction, index=index).update(
                    claims=F("claims") + 1,
                    source_url=url,
                    state=ArchiveState.PENDING,
                    reason="",
                    attempts=0,
                    next_attempt_at=now,
                )
        return due

    # --- Archiving -------------------------------------------------------------------------

    @classmethod
    def claim_due(cls, limit: int) -> list[tuple[int, int]]:
        """Lease due outputs to one worker; (pk, claim) pairs for `take()`."""
        return leases.claim_due(cls.objects.all(), "next_attempt_at", settings.ARCHIVE_LEASE, limit)

    @classmethod
    def take(cls, pk: int, claim: int) -> "Output | None":
        """The output, if `claim` is still its latest; renews the lease for this worker."""
        rows = cls.objects.select_related("prediction")
        return leases.take(rows, pk, claim, "next_attempt_at", settings.ARCHIVE_LEASE)

    def archive(self) -> None:
        """Download, check and store this output, or record why not and when to try again."""
        if self.is_archived:
            self._update(Q(), next_attempt_at=None)
            return
        if self.prediction.data_removed:
            self.expire("The provider removed it before Darkroom could save a copy.")
            return
        self._update(Q(), attempts=F("attempts") + 1)
        try:
            url, trusted = source_for_download(self.prediction, self.source_url)
            fetched = fetch(url, trusted_origins=trusted)
            copy = Output(
                sha256=hashlib.sha256(fetched.content).hexdigest(),
                content_type=fetched.content_type,
                extension=fetched.extension,
            )
            files = copy.files(fetched.content)
            store_files(copy.sha256, files)
        except DownloadError as exc:
            self.archive_failed(exc)
            return
        except Exception as exc:
            # Storage down, or a thumbnail Pillow could not make: worth another try, and said.
            log.exception("output %s: could not store the copy", self.pk)
            self.archive_failed(DownloadError(f"Could not store the copy: {exc}", retryable=True))
            return
        if self._update(
            ~Q(state=ArchiveState.ARCHIVED),
            state=ArchiveState.ARCHIVED,
            reason="",
            next_attempt_at=None,
            archived_at=timezone.now(),
            sha256=copy.sha256,
            content_type=copy.content_type,
            extension=copy.extension,
            bytes=len(fetched.content),
            width=fetched.width,
            height=fetched.height,
        ):
            # Until this row named the SHA-256, another worker (whose claim ran out) or the
            # deletion of an output with the same file may have removed or be writing a file:
            # now that the row protects them, make sure they are whole. A lost claim leaves its
            # files alone: an unused file costs little, a missing one loses an image.
            store_files(copy.sha256, files)

    def archive_failed(self, exc: DownloadError) -> None:
        if exc.expired:
            self.expire(exc.message)
        elif exc.retryable and self.attempts + 1 < settings.ARCHIVE_MAX_ATTEMPTS:
            self._update(
                ~Q(state=ArchiveState.ARCHIVED),
                state=ArchiveState.FAILED,
                reason=exc.message,
                next_attempt_at=timezone.now() + archive_backoff(self.attempts),
            )
        else:
            self._update(
                ~Q(state=ArchiveState.ARCHIVED),
                state=ArchiveState.FAILED,
                reason=exc.message,
                next_attempt_at=None,
            )

    def expire(self, reason: str) -> None:
        self._update(
            ~Q(state=ArchiveState.ARCHIVED),
            state=ArchiveState.EXPIRED,
            reason=reason,
            next_attempt_at=None,
        )

    def _update(self, condition: Q, **fields: Any) -> bool:
        """Update this row if `condition` holds and, for a worker's copy, its claim is still
        the latest; True if it did."""
        if self.claim is not None:
            condition &= Q(claims=self.claim)
        return bool(type(self).changed(type(self).objects.filter(condition, pk=self.pk), **fields))

    @classmethod
    def changed(cls, outputs: models.QuerySet, **fields: Any) -> int:
        """Update `outputs` and mark their predictions changed: a prediction's tiles, rows and
        page show its outputs, and their live refreshes compare the prediction's `updated_at`."""
        with transaction.atomic():
            # Predictions first, then outputs: the order the poller locks them in (a provider's
            # answer updates its prediction, then records its outputs), so the two never
            # deadlock. A touch for an update that then matches nothing costs nothing visible.
            touched = list(outputs.values_list("prediction_id", "team_id"))
            Prediction.mark_changed([pk for pk, _ in touched], *(team for _, team in touched))
            return outputs.update(**fields)


def source_for_download(prediction: Prediction, url: str) -> tuple[str, list[str]]:
    """Where to fetch an output from, and the origins trusted for it: the simulator's own, for
    its outputs only (in demo mode it serves them over http on this machine, which the
    downloader refuses from anyone else). Its URLs may name the address browsers reach it at
    (SIMULATOR_PUBLIC_URL); workers fetch from the one they poll."""
    if prediction.provider != "simulator":
        return url, []
    config = settings.PROVIDERS["simulator"]
    origin = origin_of(config["base_url"])
    public = origin_of(config.get("public_url") or config["base_url"])
    if url.startswith(public + "/"):
        url = origin + url[len(public) :]
    return url, [origin]


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def archive_backoff(attempts: int) -> timedelta:
    seconds = min(settings.ARCHIVE_RETRY_DELAY * 2**attempts, settings.ARCHIVE_MAX_RETRY_DELAY)
    return timedelta(seconds=seconds * random.uniform(0.8, 1.2))


def store_copy(output: Output, content: bytes) -> None:
    """Store `content` and its thumbnails as `output`'s copy (tests and tools; workers archive)."""
    store_files(output.sha256, output.files(content))


def store_files(sha256: str, files: dict[str, bytes]) -> None:
    """Store the files not stored yet, and those of another size (a write cut short, by a full
    disk say). Names come from the SHA-256, so identical files are stored once. On a failure,
    what this call wrote is deleted again unless an output uses it."""
    written = []
    try:
        for name, data in files.items():
            if default_storage.exists(name):
                if default_storage.size(name) == len(data):
                    continue
                default_storage.delete(name)
            saved = default_storage.save(name, ContentFile(data))
            written.append(saved)
            if saved != name:
                # Another worker stored the same file at the same moment: keep theirs.
                default_storage.delete(saved)
    except Exception:
        discard_unused(sha256, written)
        raise


def discard_unused(sha256: str, names: list[str]) -> None:
    """Delete stored files that no output row refers to (any more)."""
    if sha256 and not Output.objects.filter(sha256=sha256).exists():
        for name in names:
            default_storage.delete(name)


# --- Boards and share links ----------------------------------------------------------------


class Board(models.Model):
    """A named collection of a team's outputs."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="boards")
    name = models.CharField(max_length=100)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now)
    outputs = models.ManyToManyField(Output, through="BoardItem", related_name="boards")

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="board_unique_team_name")
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("outputs:board", args=[self.pk])

    @classmethod
    def with_covers(cls, boards: models.QuerySet) -> list["Board"]:
        """`boards`, each with `item_count` and `cover` (the newest added image with a thumbnail,
        or None), in two queries whatever the number of boards."""
        newest_image = (
            BoardItem.objects.filter(
                board=models.OuterRef("pk"),
                output__state=ArchiveState.ARCHIVED,
                output__content_type__startswith="image/",
            )
            .order_by("-added_at", "-id")
            .values("output_id")[:1]
        )
        counted = boards.annotate(
            item_count=models.Count("items"), cover_id=models.Subquery(newest_image)
        )
        # Explicitly ordered: a query with an aggregate ignores the model's default ordering.
        boards = list(counted.order_by("name", "id"))
        covers = Output.objects.in_bulk([board.cover_id for board in boards if board.cover_id])
        for board in boards:
            board.cover = covers.get(board.cover_id)
        return boards

    def add(self, outputs: list[Output]) -> int:
        """Add the team's `outputs` that are not on the board yet; how many were added."""
        if any(output.team_id != self.team_id for output in outputs):
            raise ValueError("A board holds only its own team's outputs.")
        on_board = set(self.items.filter(output__in=outputs).values_list("output", flat=True))
        new = {o.pk: BoardItem(board=self, output=o) for o in outputs if o.pk not in on_board}
        # A concurrent add of the same output is not an error: the board holds it either way.
        BoardItem.objects.bulk_create(new.values(), ignore_conflicts=True)
        return len(new)

    def remove(self, outputs: list[Output]) -> int:
        """Take `outputs` off the board; how many were on it."""
        deleted, _ = self.items.filter(output__in=outputs).delete()
        return deleted

    def archived_outputs(self) -> models.QuerySet:
        """What a download of the board holds: its outputs that have a copy."""
        return self.outputs.filter(state=ArchiveState.ARCHIVED)


class BoardItem(models.Model):
    board = models.ForeignKey(Board, on_delete=models.CASCADE, related_name="items")
    output = models.ForeignKey(Output, on_delete=models.CASCADE, related_name="board_items")
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-added_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["board", "output"], name="board_item_unique")
        ]

    def __str__(self) -> str:
        return f"Output {self.output_id} on board {self.board_id}"


def new_share_token() -> str:
    """256 bits from `secrets`; only its hash is stored."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ShareLink(models.Model):
    """A public, read-only link to a board or to a selection of outputs."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="shares")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now)
    title = models.CharField(max_length=100)
    # A board's link shows the board as it is now; a selection's, the outputs chosen.
    board = models.ForeignKey(
        Board, null=True, blank=True, on_delete=models.CASCADE, related_name="shares"
    )
    outputs = models.ManyToManyField(Output, blank=True, related_name="shares")
    # The SHA-256 of the token: a leaked database opens no share.
    token_hash = models.CharField(max_length=64, unique=True)
    # The token's first characters, so people can tell their links apart (the other 230-odd
    # bits stay secret).
    token_hint = models.CharField(max_length=4, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    hide_prompts = models.BooleanField(default=False)
    views = models.PositiveIntegerField(default=0)
    last_viewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.title

    @classmethod
    def create(cls, **fields: Any) -> tuple["ShareLink", str]:
        """A new link and its token, which is shown once and never stored."""
        token = new_share_token()
        link = cls.objects.create(token_hash=hash_token(token), token_hint=token[:4], **fields)
        return link, token

    @classmethod
    def active(cls) -> models.QuerySet:
        now = timezone.now()
        return cls.objects.filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now), revoked_at__isnull=True
        )

    @classmethod
    def find(cls, token: str) -> "ShareLink | None":
        """The active link with this token, else None (revoked, expired or never made)."""
        return cls.active().filter(token_hash=hash_token(token)).first()

    @property
    def is_active(self) -> bool:
        expired = self.expires_at is not None and self.expires_at <= timezone.now()
        return self.revoked_at is None and not expired

    def shared_outputs(self) -> models.QuerySet:
        """What the link shows: archived copies only, and only the team's own."""
        outputs = self.board.outputs.all() if self.board_id else self.outputs.all()
        return outputs.filter(team_id=self.team_id, state=ArchiveState.ARCHIVED)

    def record_view(self) -> None:
        type(self).objects.filter(pk=self.pk).update(
            views=F("views") + 1, last_viewed_at=timezone.now()
        )

    @property
    def status(self) -> str:
        """active, expired or revoked (a revoked link stays revoked once it also expires)."""
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.is_active else "expired"

    def revoke(self) -> bool:
        """Revoke the link now; False if it already was."""
        now = timezone.now()
        revoked = type(self).objects.filter(pk=self.pk, revoked_at=None).update(revoked_at=now)
        if revoked:
            self.revoked_at = now
        return bool(revoked)
