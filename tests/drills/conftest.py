"""What every drill shares: a report of what it did and counted, printed at the end of the run
(in pytest's terminal summary, so it shows without `-s`)."""

from collections.abc import Iterator

import pytest

# (test id, lines) of every drill that reported, in the order they ran.
REPORTS: list[tuple[str, list[str]]] = []


class DrillReport:
    """What one drill did and counted, a line at a time."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture
def drill_report(request) -> Iterator[DrillReport]:
    report = DrillReport()
    yield report
    REPORTS.append((request.node.nodeid, report.lines))


def pytest_terminal_summary(terminalreporter) -> None:
    if not REPORTS:
        return
    terminalreporter.section("drills: what each did and counted")
    for test_id, lines in REPORTS:
        terminalreporter.write_line(test_id)
        for line in lines:
            terminalreporter.write_line(f"    {line}")


def wait_for_rows(condition, rows, timeout: float, message: str) -> None:
    """`wait_for`, and on a timeout, what `rows` (predictions) and their outputs are in."""
    from outputs.models import Output

    from ..conftest import wait_for

    try:
        wait_for(condition, timeout, message)
    except AssertionError as exc:
        counts: dict[str, int] = {}
        for status, sending, polls in rows.values_list("status", "sending_since", "polls"):
            key = f"{status}{' sending' if sending and status == 'submitting' else ''}"
            key += " polled" if polls else ""
            counts[key] = counts.get(key, 0) + 1
        outputs: dict[str, int] = {}
        for state, reason in Output.objects.filter(prediction__in=rows).values_list(
            "state", "reason"
        ):
            key = f"{state} {reason[:60]}".strip()
            outputs[key] = outputs.get(key, 0) + 1
        raise AssertionError(f"{exc}; predictions: {counts}; outputs: {outputs}") from None
