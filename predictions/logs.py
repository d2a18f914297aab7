"""A prediction's log as the log viewer shows it.

Models print tqdm progress bars: `  45%|████▌     | 9/20 [00:01<00:01,  8.73it/s]`, one line per
update on Replicate (or carriage-return updates within one line on a terminal). The updates of
one bar collapse into a single `Progress` with the latest state, shown where the bar started;
every other line passes through as a `Line`. ANSI escape codes are stripped.

The viewer fetches the log incrementally. Its cursor is the number of characters it has been
sent, plus where the latest bar's last finished line starts (`bar_line`), since later text may
still update that bar (`#log-bar-current` on the page). `read_log(logs, cursor, bar_line)`
parses from the start of the line the cursor is in, so a finished line is parsed once and a
line still being written once per fetch: the work is linear in the text read.

A bar is live while the viewer may still update it: the latest bar (or one in the line still
being written) of a running prediction. Only a live bar shows its ETA; any other bar below 100%
stopped there (see `log-bar` in templates/predictions/detail.html).
"""

import re
from dataclasses import dataclass, field

# What a first load renders: the log's tail, from the first whole line within this many
# characters of the end. Older text is one link away (the raw log).
TAIL = 128 * 1024
# A tqdm line is a terminal's width; longer lines are not tried as bars, which also keeps the
# patterns below from backtracking over a huge line.
LONGEST_BAR = 500

ESCAPE_RE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor movement, erase
    r"|\][^\x07\x1b\n]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|[@-Z\\-_])"  # two-character sequences
    r"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"  # other control characters; \t \n \r stay
)
PROGRESS_RE = re.compile(
    r"(?P<description>.*?)(?P<percent>\d{1,3})%\|[^|]*\|\s*"
    r"(?P<count>[^\s/]+)/(?P<total>\S+)\s+"
    r"\[(?P<elapsed>\d+:\d{2}(?::\d{2})?)<(?P<remaining>\d+:\d{2}(?::\d{2})?|\?)"
    r"(?:,\s*(?P<rate>[^,\]]*))?(?:,\s*(?P<postfix>[^\]]*))?\]"
)
# A bar without a total: `Downloading: 120MB [00:03, 40.0MB/s]`.
UNSIZED_RE = re.compile(
    r"(?P<description>.*?)(?P<count>\d[\d.]*\s?[A-Za-z]*)\s+"
    r"\[(?P<elapsed>\d+:\d{2}(?::\d{2})?),\s*(?P<rate>(?:[\d.]+|\?)\s?[A-Za-z]*/s|[\d.]+s/[A-Za-z]+)"
    r"(?:,\s*(?P<postfix>[^\]]*))?\]"
)
# How models say which seed they picked when the input left it blank.
SEED_RE = re.compile(r"Using seed:?\s*(\d+)", re.IGNORECASE)


@dataclass(slots=True)
class Line:
    text: str
    is_progress = False


@dataclass(slots=True)
class Progress:
    """The latest state of one tqdm bar."""

    description: str
    percent: int | None  # None for a bar without a total
    count: str
    total: str | None
    elapsed: str
    remaining: str | None  # None while tqdm cannot tell ("?")
    rate: str | None
    postfix: str = ""
    is_progress = True

    @property
    def is_unfinished(self) -> bool:
        """True while a bar with a total has not reached it."""
        return self.percent is not None and self.percent < 100

    def continues(self, earlier: "Progress") -> bool:
        """True if this is a later state of the bar `earlier`, not a new bar."""
        if (self.description, self.total) != (earlier.description, earlier.total):
            return False
        return self.percent is None or self.percent >= (earlier.percent or 0)


Item = Line | Progress


@dataclass
class OpenBar:
    """The latest bar before a chunk, which the chunk's progress lines may continue."""

    progress: Progress
    line: int  # where its last finished line starts in the log
    adjacent: bool  # nothing but this bar has been printed since

    def continued_by(self, progress: Progress) -> bool:
        """A bar continues while it updates; once at 100% only a directly following line (tqdm
        prints its final state again on close) updates it, and anything later is a new bar."""
        return progress.continues(self.progress) and (self.adjacent or self.progress.percent != 100)


@dataclass
class LogChunk:
    """What the viewer shows of the log from some line on, and the cursor to ask from next.

    `bar` is the bar the page already shows as `#log-bar-current`, in its state after this
    chunk; `items` are the finished lines after it, and `partial` the line still being written,
    unless it updated a bar. `current` is the latest bar, which carries `#log-bar-current`, and
    `bar_line` where its last finished line starts: the page sends it back with the cursor.
    """

    cursor: int
    start: int = 0
    skipped: int = 0
    bar: Progress | None = None
    items: list[Item] = field(default_factory=list)
    partial: Item | None = None
    current: Progress | None = None
    bar_line: int | None = None

    @property
    def is_empty(self) -> bool:
        return self.bar is None and not self.items and self.partial is None

    @property
    def partial_items(self) -> list[Item]:
        return [] if self.partial is None else [self.partial]


def printed_seed(logs: str) -> int | None:
    """The seed a log says the model used (`Using seed: 12345`); None if it names none."""
    match = SEED_RE.search(logs)
    return int(match[1]) if match else None


def strip_escapes(text: str) -> str:
    return ESCAPE_RE.sub("", text)


def shown_text(line: str) -> str:
    """What a terminal shows of `line`: the last carriage-return segment that is not blank."""
    end = len(line)
    while True:
        start = line.rfind("\r", 0, end) + 1
        if start == 0 or line[start:end].strip():
            return line[start:end].rstrip()
        end = start - 1


def parse_progress(text: str) -> Progress | None:
    if len(text) > LONGEST_BAR:
        return None
    if "%|" in text:
        match = PROGRESS_RE.fullmatch(text)
        if match:
            return Progress(
                description=describe(match["description"]),
                percent=min(int(match["percent"]), 100),
                count=match["count"],
                total=match["total"],
                elapsed=match["elapsed"],
                remaining=None if match["remaining"] == "?" else match["remaining"],
                rate=known(match["rate"]),
                postfix=(match["postfix"] or "").strip(),
            )
    elif text.endswith("]") and "/" in text:
        match = UNSIZED_RE.fullmatch(text)
        if match:
            return Progress(
                description=describe(match["description"]),
                percent=None,
                count=match["count"],
                total=None,
                elapsed=match["elapsed"],
                remaining=None,
                rate=known(match["rate"]),
                postfix=(match["postfix"] or "").strip(),
            )
    return None


def describe(prefix: str) -> str:
    return prefix.strip().removesuffix(":").strip()


def known(rate: str | None) -> str | None:
    rate = (rate or "").strip()
    return None if not rate or rate.startswith("?") else rate


def parse_line(line: str) -> Item:
    if not line.isprintable():  # escape codes, carriage returns, tabs: rare, so checked first
        line = strip_escapes(line)
    text = shown_text(line)
    return parse_progress(text) or Line(text)


def parse(text: str, offset: int = 0, bar: OpenBar | None = None) -> LogChunk:
    """Display items for `text`, found at `offset` in the log; `bar` is the latest bar before
    it. The chunk's cursor is relative to `text` (its length)."""
    chunk = LogChunk(cursor=len(text), bar=bar.progress if bar else None)
    where = -1 if bar else None  # where the open bar is: -1 for `chunk.bar`, else an item index

    def update(progress: Progress) -> None:
        if where == -1:
            chunk.bar = progress
        else:
            chunk.items[where] = progress

    position = 0
    while (end := text.find("\n", position)) != -1:
        item = parse_line(text[position:end])
        if not item.is_progress:
            chunk.items.append(item)
            if bar:
                bar.adjacent = False
        else:
            if bar and bar.continued_by(item):
                update(item)
            else:
                chunk.items.append(item)
                where = len(chunk.items) - 1
            bar = OpenBar(item, offset + position, adjacent=True)
        position = end + 1
    if bar:
        chunk.current, chunk.bar_line = bar.progress, bar.line
    if position < len(text):
        item = parse_line(text[position:])
        if item.is_progress and bar and bar.continued_by(item):
            update(item)  # shown, but the line is read again until it is finished
            chunk.current = item
        else:
            chunk.partial = item
    return chunk


def read_log(
    logs: str, cursor: int | None = None, bar_line: int | None = None, tail: int = TAIL
) -> LogChunk:
    """The viewer's content for `logs`: its tail for a first load (`cursor` None), else what
    follows `cursor`, re-reading the line the cursor is in; `bar_line` is the page's
    `bar_line` from the chunk it last got. The chunk's cursor is `len(logs)`."""
    if cursor is None:
        start = 0
        if len(logs) > tail:
            # From the first whole line within the tail; a single huge line is cut anyway.
            start = logs.find("\n", len(logs) - tail - 1) + 1 or len(logs) - tail
        bar = None
    else:
        start = logs.rfind("\n", 0, cursor) + 1
        bar = open_bar(logs, bar_line, start)
    chunk = parse(logs[start:], start, bar)
    chunk.cursor = len(logs)
    chunk.start = start
    if cursor is None:
        chunk.skipped = start
    return chunk


def open_bar(logs: str, line: int | None, start: int) -> OpenBar | None:
    """The bar whose finished line starts at `line`, before `start`; None if there is none."""
    if line is None or not 0 <= line < start or (line and logs[line - 1] != "\n"):
        return None
    end = logs.find("\n", line, start)
    if end == -1:
        return None
    item = parse_line(logs[line:end])
    return OpenBar(item, line, adjacent=end + 1 == start) if item.is_progress else None


RATE_RE = re.compile(r"(?P<number>[\d.]+)\s*(?P<unit>it/s|s/it)")


def remaining_seconds(logs: str, running_for: float | None = None) -> float | None:
    """How long the last progress bar of `logs` says its job has left, from its rate where it
    prints one (tqdm rounds the remaining time to whole seconds); 0 for a finished bar (the job
    is storing its outputs); None when the log's last line is not a bar with a total.

    A bar's line is as old as the step it reports: with `running_for` (seconds since the job
    started), the end is its whole length from the start, if that comes sooner. A bar that
    started late (after loading weights) makes that early, which costs a poll; counting from
    now would make every end up to a step late."""
    tail = logs[-LONGEST_BAR:].replace("\r", "\n").rstrip("\n")
    progress = parse_progress(shown_text(tail.rpartition("\n")[2]))
    if progress is None or progress.percent is None:
        return None
    if not progress.is_unfinished:
        return 0.0
    rate = RATE_RE.fullmatch(progress.rate or "")
    try:
        left = float(progress.total) - float(progress.count)
        per_step = float(rate["number"]) if rate else 0.0
    except (TypeError, ValueError):
        left = per_step = 0.0
    if per_step > 0 and left >= 0:
        step = 1 / per_step if rate["unit"] == "it/s" else per_step
        remaining = left * step
        if running_for is not None:
            remaining = min(remaining, max(float(progress.total) * step - running_for, 0.0))
        return remaining
    return clock_seconds(progress.remaining) if progress.remaining else None


def clock_seconds(clock: str) -> float:
    """`01:02:03` or `02:03` in seconds."""
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds
