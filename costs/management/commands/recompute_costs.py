"""Price every ended prediction again with the rules stored now, and rebuild the roll-ups.

For history from before costs existed, or written in bulk without them (a seeded history), to
check that the roll-ups still equal the raw rows, and after TIME_ZONE changed: costs count on the
deployment's calendar days, so each moves to its new day and the roll-ups of both days are
rebuilt. It works at once, batch by batch, while workers go on. Saving a price rule has the
predictions it covers priced again in the background, so this is not needed after a price change.
"""

import argparse
from datetime import date, datetime

from django.core.management.base import BaseCommand, CommandParser

from costs.models import PredictionCost, start_of_day
from predictions.models import Prediction


def local_day(value: str) -> datetime:
    try:
        return start_of_day(date.fromisoformat(value))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a day: give it as YYYY-MM-DD."
        ) from None


class Command(BaseCommand):
    help = "Price ended predictions again (one team's with --team) and rebuild their roll-ups."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", type=int, help="The id of the only team to price again.")
        parser.add_argument(
            "--since",
            type=local_day,
            help="Only predictions submitted from this day (YYYY-MM-DD, in TIME_ZONE) on.",
        )

    def handle(self, *args, team: int | None, since: datetime | None, **options) -> None:
        predictions = Prediction.objects.all()
        if team is not None:
            predictions = predictions.filter(team_id=team)
        rebuilt = PredictionCost.recompute(predictions, since)
        for team_id, day in sorted(rebuilt.items()):
            self.stdout.write(f"team {team_id}: costs changed from {day}, roll-ups rebuilt")
        if not rebuilt:
            self.stdout.write("Every cost was already up to date.")
