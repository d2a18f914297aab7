"""Price every ended prediction again with the rules stored now, and rebuild the roll-ups.

For history from before costs existed, or written in bulk without them (a seeded history), and
to check that the roll-ups still equal the raw rows. Saving a price rule does the same for the
predictions it covers, so this is not needed after a price change.
"""

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandParser

from costs.models import PredictionCost
from predictions.models import Prediction


class Command(BaseCommand):
    help = "Price ended predictions again (one team's with --team) and rebuild their roll-ups."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", type=int, help="The id of the only team to price again.")
        parser.add_argument(
            "--since",
            type=lambda value: datetime.fromisoformat(value).replace(tzinfo=UTC),
            help="Only predictions submitted from this UTC date (YYYY-MM-DD) on.",
        )

    def handle(self, *args, team: int | None, since: datetime | None, **options) -> None:
        predictions = Prediction.objects.all()
        if team is not None:
            predictions = predictions.filter(team_id=team)
        if since is not None:
            predictions = predictions.filter(submitted_at__gte=since)
        rebuilt = PredictionCost.recompute(predictions)
        for team_id, day in sorted(rebuilt.items()):
            self.stdout.write(f"team {team_id}: costs changed from {day}, roll-ups rebuilt")
        if not rebuilt:
            self.stdout.write("Every cost was already up to date.")
