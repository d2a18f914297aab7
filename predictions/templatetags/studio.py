import uuid

from django import template

from predictions.logs import Progress
from predictions.models import Prediction
from predictions.studio import latest_progress

register = template.Library()


# Run again keys are names in this space (uuid5).
RERUN_KEYS = uuid.UUID("0b6a5cc8-4d0b-4b8e-9a43-5a2f1c1d7e10")


@register.simple_tag
def rerun_key(prediction: Prediction, results) -> str:
    """The request key of a result's Run again: its own for each result, and the same across
    the results' refreshes until the member's next prediction, so a double click (even one
    that spans a refresh) runs it once, and a later click runs it again."""
    newest = results.predictions[0].pk if results.predictions else 0
    return str(uuid.uuid5(RERUN_KEYS, f"{prediction.submitted_by_id}:{prediction.pk}:{newest}"))


@register.simple_tag
def studio_progress(prediction: Prediction) -> Progress | None:
    return latest_progress(prediction)


@register.simple_tag
def studio_seed(prediction: Prediction) -> int | None:
    """The seed used, from the start of the log the results fetched (not the whole log)."""
    return prediction.seed_in(prediction.log_head)
