"""New predictions, saved the one way every door uses: the New images form, Run again and the API.

The rows are saved before anything is sent (the poller sends them), in one transaction that also
asks the apps built on predictions (a budget) and counts the submit rate limits, so whatever the
door, a create is refused before any provider call and sent at most once.
"""

from collections.abc import Callable

from django.conf import settings
from django.db import IntegrityError, transaction

from accounts import ratelimit
from accounts.models import Team

from .models import Prediction
from .signals import submitting
from .tasks import wake_dispatcher

KEY_OF_ANOTHER_TEAM = (
    "This was already sent from another team's page, so nothing was sent to this team. "
    "Open the page again to send it here."
)


class Refused(Exception):
    """New predictions refused before anything was saved or sent: `why`, the status to answer
    with, and for a rate limit the seconds until it lets them through."""

    def __init__(self, why: str, status: int, retry_after: int | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.status = status
        self.retry_after = retry_after


def submitted_with(team: Team, key) -> list[Prediction]:
    """The predictions one form, run-again button or API create made, by its request key."""
    return list(Prediction.objects.filter(team=team, request_key=key).order_by("variation"))


def submitting_refusal(team: Team, member, variations: list[dict]) -> Refused | None:
    """Why an app built on predictions (a budget, in costs) refuses these new predictions, if
    one does: asked in the transaction that would save them, before the rate limits count
    them."""
    answers = submitting.send(Prediction, team=team, member=member, variations=variations)
    refusal = next((refusal for _receiver, refusal in answers if refusal), None)
    # 402 Payment Required: what stands in the way is money (a budget).
    return Refused(refusal, 402) if refusal else None


def rate_limit_refusal(team: Team, member, count: int) -> Refused | None:
    """Count `count` new predictions against the submit limits; why they may not be, if so."""
    for scope, subject, limit, whose in (
        ("submit-member", member.pk, settings.SUBMIT_RATE_LIMIT_MEMBER, "per member"),
        ("submit-team", team.pk, settings.SUBMIT_RATE_LIMIT_TEAM, "for the team"),
    ):
        decision = ratelimit.hit(scope, str(subject), limit, cost=count)
        if not decision.allowed:
            why = (
                f"Too many submissions: at most {limit[0]} predictions every {limit[1]} "
                f"seconds {whose}. Try again in {decision.retry_after:.0f} s."
            )
            return Refused(why, 429, decision.retry_after)
    return None


def save_predictions(
    team: Team,
    member,
    key,
    variations: list[dict],
    on_saved: Callable[[list[Prediction]], None] | None = None,
) -> list[Prediction]:
    """Save one prediction per variation, all or none, and wake the dispatcher for them once
    they are committed; Refused if an app built on predictions (a budget) or the submit limits
    refuse them. `on_saved` is called with the new predictions in the transaction that saves
    them (what it raises undoes them), and not for a twin's.

    The apps are asked in the transaction that saves the predictions, so what they check and
    what is saved are one step: a budget locks the team there, and two Generates at once cannot
    both pass a budget that fits only one. If a concurrent request with the same key won the
    race, its predictions are returned.
    """
    try:
        with transaction.atomic():
            if refused := submitting_refusal(team, member, variations):
                raise refused
            if refused := rate_limit_refusal(team, member, len(variations)):
                raise refused
            predictions = [
                Prediction.objects.create(request_key=key, team=team, submitted_by=member, **fields)
                for fields in variations
            ]
            if on_saved:
                on_saved(predictions)
    except (IntegrityError, Refused) as exc:
        # A twin request that saved the same key first: its predictions were sent, and now
        # count against the budget.
        twins = submitted_with(team, key)
        if twins:
            return twins
        # Or the key is another team's: a form sent again after its member switched teams
        # (keys are unique across teams). Anything else is a bug.
        if isinstance(exc, IntegrityError) and Prediction.objects.filter(request_key=key).exists():
            raise Refused(KEY_OF_ANOTHER_TEAM, 409) from None
        raise
    transaction.on_commit(wake_dispatcher)
    return predictions
