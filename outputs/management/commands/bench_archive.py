"""How long archiving one output takes, and what it costs in CPU, against the download alone.

Runs the simulator in this process on a free port, makes its outputs (768 px WebP images, as
FLUX schnell's), and per run archives every one of them twice over: once only fetched through the
safe downloader (the baseline: socket, checks, decoding), once archived as a worker does (fetch,
SHA-256, two WebP thumbnails, storage, the conditional updates). Storage is a temporary folder;
the rows live in a team of their own, deleted at the end. The simulator serves from this
process, so the CPU figures include its side of each download (the same in both).
"""

import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.test import override_settings

from accounts.models import Team
from outputs.download import fetch
from outputs.models import Output, source_for_download
from predictions.models import Prediction
from predictions.simulator import Faults, Simulator


class Command(BaseCommand):
    help = "Time archiving outputs from the simulator against downloading them alone."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--outputs", type=int, default=40, help="outputs per run (40)")
        parser.add_argument("--runs", type=int, default=5, help="runs (5)")

    def handle(self, *args, outputs: int, runs: int, **options) -> None:
        with (
            Simulator(speed=10_000, faults=Faults(), seed=7) as simulator,
            tempfile.TemporaryDirectory() as media,
        ):
            providers = {
                **settings.PROVIDERS,
                "simulator": {**settings.PROVIDERS["simulator"], "base_url": simulator.base_url},
            }
            storages = {
                **settings.STORAGES,
                "default": {
                    "BACKEND": "django.core.files.storage.FileSystemStorage",
                    "OPTIONS": {"location": media},
                },
            }
            with override_settings(
                PROVIDERS=providers, STORAGES=storages, ARCHIVE_SIGNED_URLS=False
            ):
                team = Team.objects.create(name=f"bench-archive-{uuid.uuid4().hex[:8]}")
                try:
                    results = self.measure(simulator, team, outputs, runs)
                finally:
                    team.delete()
        self.report(results, outputs, runs)

    def measure(self, simulator: Simulator, team: Team, count: int, runs: int) -> dict:
        results: dict[str, list[tuple[float, float]]] = {"download only": [], "archive": []}
        for run in range(runs):
            rows = self.outputs(simulator, team, count, run)
            # The simulator renders an image on its first request: not what is measured here.
            download_all(rows)
            results["download only"].append(timed(partial(download_all, rows), count))
            results["archive"].append(timed(partial(archive_all, rows), count))
            archived = Output.objects.filter(pk__in=[o.pk for o in rows], state="archived")
            if archived.count() != count:
                raise RuntimeError(f"run {run}: only {archived.count()} of {count} archived")
        return results

    def outputs(self, simulator: Simulator, team: Team, count: int, run: int) -> list[Output]:
        """`count` succeeded predictions of one output each, recorded as the poller would."""
        rows = []
        for index in range(count):
            prompt = f"bench run {run} image {index}"
            created = simulator.engine.create(
                "black-forest-labs/flux-schnell", {"prompt": prompt}, simulator.url
            )
            while (answer := simulator.engine.get(created["id"], simulator.url))["status"] != (
                "succeeded"
            ):
                time.sleep(0.01)
            prediction = Prediction.objects.create(
                team=team,
                provider="simulator",
                model="black-forest-labs/flux-schnell",
                input={"prompt": prompt},
                status="succeeded",
                output=answer["output"],
                next_poll_at=None,
            )
            Output.record(prediction)
            rows.append(Output.objects.select_related("prediction").get(prediction=prediction))
        return rows

    def report(self, results: dict, count: int, runs: int) -> None:
        self.stdout.write(f"{count} outputs a run, {runs} runs; per output:")
        header = f"{'':<15}{'wall ms min':>12}{'median':>9}{'max':>9}{'cpu ms median':>15}"
        self.stdout.write(header)
        summary = {}
        for name, samples in results.items():
            walls = [wall for wall, _ in samples]
            cpus = [cpu for _, cpu in samples]
            summary[name] = {
                "wall_ms": {
                    "min": round(min(walls), 2),
                    "median": round(statistics.median(walls), 2),
                    "max": round(max(walls), 2),
                },
                "cpu_ms_median": round(statistics.median(cpus), 2),
            }
            row = summary[name]["wall_ms"]
            self.stdout.write(
                f"{name:<15}{row['min']:>12}{row['median']:>9}{row['max']:>9}"
                f"{summary[name]['cpu_ms_median']:>15}"
            )
        baseline = summary["download only"]["wall_ms"]["median"]
        ratio = summary["archive"]["wall_ms"]["median"] / baseline if baseline else None
        self.stdout.write(f"archive / download only (median): {ratio:.2f}x")
        line = {"bench": "archive", "outputs": count, "runs": runs, **summary, "ratio": ratio}
        self.stdout.write(json.dumps(line))


def download_all(outputs: list[Output]) -> None:
    for output in outputs:
        url, trusted = source_for_download(output.prediction, output.source_url)
        fetch(url, trusted_origins=trusted)


def archive_all(outputs: list[Output]) -> None:
    """As the sweep and the workers do: claim what is due, then take and archive each."""
    claims = dict(Output.claim_due(limit=len(outputs)))
    for output in outputs:
        Output.take(output.pk, claims[output.pk]).archive()


def timed(work: Callable[[], object], count: int) -> tuple[float, float]:
    """Wall and CPU milliseconds per item of `work` over `count` items."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return (
        (time.perf_counter() - wall) * 1000 / count,
        (time.process_time() - cpu) * 1000 / count,
    )
