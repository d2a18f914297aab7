from datetime import timedelta

from django import forms
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from accounts.models import Team
from accounts.teams import for_team

from .models import Board, Output

EXPIRY_CHOICES = [("", "Never expires"), (1, "1 day"), (7, "7 days"), (30, "30 days")]


def errors_as_text(form: forms.Form) -> str:
    """A form's errors as one sentence or a few, for a message on the page it goes back to."""
    return " ".join(error for errors in form.errors.values() for error in errors)


class ReturnForm(forms.Form):
    """A POST that goes back where it came from: `next`, if it is a page of this site."""

    next = forms.CharField(required=False, max_length=2000)

    def __init__(self, data=None, *, request: HttpRequest, default: str = "") -> None:
        super().__init__(data)
        self.request = request
        self.default = default or reverse("outputs:gallery")

    def clean_next(self) -> str:
        url = self.cleaned_data["next"]
        safe = url_has_allowed_host_and_scheme(
            url, allowed_hosts={self.request.get_host()}, require_https=self.request.is_secure()
        )
        # A path: anything else (`abc`) is read by redirect() as the name of a URL to reverse.
        return url if url.startswith("/") and safe else self.default

    @property
    def return_url(self) -> str:
        """`next` when valid, else the default: also when the rest of the form is not."""
        self.is_valid()
        return getattr(self, "cleaned_data", {}).get("next") or self.default


class BoardForm(forms.Form):
    """A board's name, unique in its team."""

    name = forms.CharField(max_length=100, label="Board name")

    def __init__(self, data=None, *, team: Team, board: Board | None = None) -> None:
        super().__init__(data, initial={"name": board.name} if board else None)
        self.team = team
        self.board = board

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        others = Board.objects.filter(team=self.team, name__iexact=name)
        if self.board is not None:
            others = others.exclude(pk=self.board.pk)
        if others.exists():
            raise forms.ValidationError(
                f"The team already has a board called “{name}”. Choose another name.",
                code="unique",
            )
        return name

    def save(self, user) -> Board | None:
        """The new or renamed board; None (with the error on the form) if another request took
        the name meanwhile."""
        board = self.board or Board(team=self.team, created_by=user)
        board.name = self.cleaned_data["name"]
        try:
            with transaction.atomic():
                board.save()
        except IntegrityError:
            self.add_error("name", f"The team already has a board called “{board.name}”.")
            return None
        return board


class ShareForm(forms.Form):
    """How a new share link behaves: when it expires, and whether prompts show."""

    expires_in = forms.TypedChoiceField(
        choices=EXPIRY_CHOICES,
        coerce=int,
        empty_value=None,
        required=False,
        label="Expires",
        error_messages={"invalid_choice": "Choose when the link expires: never, 1, 7 or 30 days."},
    )
    hide_prompts = forms.BooleanField(required=False, label="Hide prompts and parameters")

    def link_fields(self) -> dict:
        """ShareLink fields from the cleaned options."""
        days = self.cleaned_data["expires_in"]
        return {
            "expires_at": timezone.now() + timedelta(days=days) if days else None,
            "hide_prompts": self.cleaned_data["hide_prompts"],
        }


class TeamOutputsField(forms.ModelMultipleChoiceField):
    """An id past the largest 64-bit integer names no output, like another team's: it is an
    unknown choice before any query (which the database would refuse with an error)."""

    def _check_values(self, value):
        for pk in value:
            if str(pk).isdigit() and int(pk) >= 2**63:
                raise forms.ValidationError(
                    self.error_messages["invalid_choice"],
                    code="invalid_choice",
                    params={"value": pk},
                )
        return super()._check_values(value)


class SelectionForm(ShareForm, ReturnForm):
    """The selection toolbar: what to do with the ticked tiles. Outputs and boards are looked up
    in the request's team only, so another team's pk is an unknown one (see `names_unknown`)."""

    ACTIONS = ["add", "remove", "star", "unstar", "delete", "download", "share"]

    outputs = TeamOutputsField(
        queryset=Output.objects.none(),
        error_messages={"required": "Select at least one image first."},
    )
    action = forms.ChoiceField(
        choices=[(action, action) for action in ACTIONS],
        error_messages={
            "required": "Choose what to do with the selected images.",
            "invalid_choice": "There is no action called %(value)s.",
        },
    )
    board = forms.ModelChoiceField(queryset=Board.objects.none(), required=False)
    new_board = forms.CharField(max_length=100, required=False, label="New board")

    def __init__(self, data=None, *, request: HttpRequest) -> None:
        super().__init__(data, request=request)
        self.fields["outputs"].queryset = for_team(
            request, Output.objects.select_related("prediction")
        )
        self.fields["board"].queryset = for_team(request, Board.objects.all())

    def names_unknown(self) -> bool:
        """True if an output or board is not one of the team's (or does not exist): a 404."""
        return any(
            error.code == "invalid_choice"
            for name in ("outputs", "board")
            for error in self.errors.as_data().get(name, [])
        )

    def clean(self) -> dict:
        cleaned = super().clean()
        action = cleaned.get("action")
        board, new_board = cleaned.get("board"), cleaned.get("new_board")
        if action == "add":
            if board and new_board:
                raise forms.ValidationError("Choose a board or name a new one, not both.")
            if not board and not new_board:
                raise forms.ValidationError("Choose a board, or name a new one, to add to.")
            if (
                new_board
                and Board.objects.filter(
                    team_id=self.request.membership.team_id, name__iexact=new_board
                ).exists()
            ):
                raise forms.ValidationError(
                    f"The team already has a board called “{new_board}”: choose it from the list."
                )
        if action == "remove" and not board:
            raise forms.ValidationError("Choose the board to remove the images from.")
        return cleaned


class StarForm(ReturnForm):
    starred = forms.TypedChoiceField(
        choices=[("1", "Starred"), ("0", "Not starred")],
        coerce=lambda value: value == "1",
        error_messages={"required": "Say whether to star or unstar the image."},
    )
