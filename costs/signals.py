"""Receivers: a prediction's cost is recorded as it ends, roll-ups follow every cost row, and a
budget may refuse new predictions before anything is spent."""

from django.conf import settings
from django.db.models.signals import post_delete, pre_delete
from django.dispatch import receiver

from predictions.models import Prediction
from predictions.signals import changed, submitting

from .models import (
    Budget,
    DailyCost,
    PredictionCost,
    PriceRule,
    lock_team_budgets,
    lock_team_costs,
)


@receiver(changed, sender=Prediction)
def record_cost(sender, prediction: Prediction, **kwargs) -> None:
    """In the transaction that ended the prediction: its cost is stored with its end or not at
    all. Nothing happens while it runs."""
    PredictionCost.record(prediction)


@receiver(pre_delete, sender=PredictionCost)
def lock_roll_ups(sender, instance: PredictionCost, **kwargs) -> None:
    """Before the row goes: the team's costs lock, as `record` takes it before it writes, then
    the row itself as it is now. The deletion read the row before it waited for the lock, and a
    repricing batch holding the lock may have changed it meanwhile (or another deletion taken
    it away): the roll-ups lose what the row says once locked, if it is still there."""
    lock_team_costs(instance.team_id)
    instance.counted = PredictionCost.objects.select_for_update().filter(pk=instance.pk).first()


@receiver(post_delete, sender=PredictionCost)
def subtract_deleted_cost(sender, instance: PredictionCost, **kwargs) -> None:
    """A deleted cost (with its prediction) leaves the roll-ups in the same transaction."""
    DailyCost.move((instance.counted, None))


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL)
def keep_spend_of_deleted_user(sender, instance, **kwargs) -> None:
    DailyCost.forget_member(instance.pk)


@receiver(submitting, sender=Prediction)
def refuse_over_budget(sender, team, member, variations: list[dict], **kwargs) -> str | None:
    """New predictions that would take the month past the team's budget or the member's own
    limit, at their estimated cost, are refused before they are saved or sent.

    Asked in the transaction that saves them, which then holds the team's budgets lock until
    they are saved: the next submission counts them, running, at their estimate.
    """
    lock_team_budgets(team.pk)
    return Budget.refusal(team, member, PriceRule.estimate_all(team, variations))
