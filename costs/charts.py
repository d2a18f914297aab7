"""The costs page's charts, drawn on the server as SVG: the geometry here, the markup in
templates/costs/_columns.html and, for each breakdown row's bar, _breakdown.html. No script and
no style attribute: colours come from classes (static/css/costs.css), so the charts follow the
page's light or dark theme, and every mark has a <title> with its figures in words.
"""

from dataclasses import dataclass
from decimal import Decimal

from .models import ZERO, money, plural
from .reports import Figure

# The column chart's drawing box; it stretches to the page's width, text stays in HTML around it.
WIDTH = 720
HEIGHT = 160
# A day with predictions but nothing charged still shows a sliver, so it reads as not empty.
SLIVER = 2


def coordinate(value: float) -> str:
    """An SVG coordinate: two decimals at most, a dot whatever the locale."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Column:
    """One day: its charged part at the bottom, what is possibly charged on top of it."""

    x: str
    width: str
    spent_y: str
    spent_height: str
    possibly_y: str
    possibly_height: str
    title: str
    href: str
    # Predictions, none of them charged (unpriced, free): drawn as a sliver.
    only_uncharged: bool


@dataclass(frozen=True)
class ColumnChart:
    width: int
    height: int
    columns: list[Column]
    # The tallest column's amount, the chart's scale; "—" when no column has a height.
    largest: str


def figure_title(figure: Figure, currency: str) -> str:
    """ "Mon 5 Jan: $1.20 spent, 40 predictions, 2 unpriced" """
    sums = figure.sums
    parts = [f"{sums.spent_text} spent"]
    if sums.possibly_charged:
        parts.append(f"{sums.possibly_text} possibly charged")
    parts.append(plural(sums.predictions, "prediction"))
    if sums.unpriced:
        parts.append(f"{sums.unpriced} unpriced")
    return f"{figure.label}: {', '.join(parts)}"


def day_columns(days: list[Figure], currency: str) -> ColumnChart:
    """A column a day, its height the day's charged amount in `currency` with what is possibly
    charged stacked on it, on a scale from 0 to the period's largest day."""
    stacks = [
        (day.sums.main_amount(currency), day.sums.possibly.get(currency, ZERO)) for day in days
    ]
    largest = max((spent + possibly for spent, possibly in stacks), default=ZERO)
    step = WIDTH / max(len(days), 1)
    gap = min(step * 0.2, 4)
    columns = []
    for n, (day, (spent, possibly)) in enumerate(zip(days, stacks, strict=True)):
        spent_height = height_of(spent, largest)
        possibly_height = height_of(possibly, largest)
        columns.append(
            Column(
                x=coordinate(n * step + gap / 2),
                width=coordinate(step - gap),
                spent_y=coordinate(HEIGHT - spent_height),
                spent_height=coordinate(spent_height),
                possibly_y=coordinate(HEIGHT - spent_height - possibly_height),
                possibly_height=coordinate(possibly_height),
                title=figure_title(day, currency),
                href=day.history or "",
                only_uncharged=bool(day.sums.predictions) and not spent_height + possibly_height,
            )
        )
    return ColumnChart(WIDTH, HEIGHT, columns, money(largest, currency) if largest else "—")


def height_of(amount: Decimal, largest: Decimal) -> float:
    if not amount or not largest:
        return 0.0
    return max(float(amount / largest) * HEIGHT, SLIVER / 2)
