"""What the gallery shows: the history's filters and pages, over the outputs of succeeded
predictions."""

from django import forms
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet

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

    def shown(self, predictions: QuerySet) -> QuerySet:
        """Succeeded predictions with an output to show: a saved copy, or, until it is saved,
        the provider's file while the provider still has it."""
        outputs = self.shown_outputs().filter(prediction=OuterRef("pk"))
        saved = Exists(outputs.filter(state=ArchiveState.ARCHIVED))
        at_provider = Exists(outputs.exclude(state=ArchiveState.EXPIRED))
        return predictions.filter(
            Q(saved) | Q(at_provider, data_removed=False), status=Status.SUCCEEDED
        )

    def shown_outputs(self) -> QuerySet:
        outputs = Output.objects.all()
        if self.cleaned_data["starred"]:
            outputs = outputs.filter(starred=True)
        return outputs

    def outputs(self) -> Prefetch:
        return Prefetch("outputs", queryset=self.shown_outputs())
