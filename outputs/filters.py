"""What the gallery shows: the history's filters and pages, over the outputs of succeeded
predictions."""

from django import forms
from django.db.models import Prefetch, Q, QuerySet

from predictions.filters import HistoryFilterForm
from predictions.models import Status

from .models import ArchiveState, Output


class GalleryFilterForm(HistoryFilterForm):
    """The history's filters, for a gallery of finished outputs: there is no status to pick, and
    the outputs can be narrowed to the starred ones."""

    page_size = 24
    filter_names = ["q", "model", "member", "since", "until", "starred"]
    status = None
    starred = forms.BooleanField(label="Starred only", required=False)

    @property
    def shows_running(self) -> bool:
        """The team's running predictions hold their places until their images come; none
        can be starred yet."""
        return not self.cleaned_data.get("starred")

    def shown(self, predictions: QuerySet) -> QuerySet:
        """Succeeded predictions with an output to show: a saved copy, or, until it is saved,
        the provider's file while the provider still has it."""
        # One IN over the outputs, not two EXISTS joined by OR: PostgreSQL can then answer it
        # either way round, probing each prediction's outputs as it walks the page's index, or
        # starting from the starred outputs when a team has few. The OR had it hash every
        # starred output of every team first (110 ms of the starred gallery's 170 at 1,000,000
        # predictions), and a team with few stars would have had its whole history read.
        at_provider = ~Q(state=ArchiveState.EXPIRED) & Q(prediction__data_removed=False)
        outputs = self.shown_outputs().filter(Q(state=ArchiveState.ARCHIVED) | at_provider)
        return predictions.filter(pk__in=outputs.values("prediction"), status=Status.SUCCEEDED)

    def shown_outputs(self) -> QuerySet:
        outputs = Output.objects.all()
        if self.cleaned_data["starred"]:
            outputs = outputs.filter(starred=True)
        return outputs

    def outputs(self) -> Prefetch:
        return Prefetch("outputs", queryset=self.shown_outputs(), to_attr="listed_outputs")
