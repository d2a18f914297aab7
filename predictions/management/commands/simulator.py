"""`manage.py simulator`: serve the built-in provider until Ctrl-C."""

import threading
from argparse import BooleanOptionalAction
from dataclasses import fields
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from predictions.simulator import Faults, Simulator
from predictions.simulator.engine import FAULT_ENDPOINTS


class Command(BaseCommand):
    help = "Serve Replicate's prediction API with generated images, for demos and tests."
    # It uses no models or URLs, so it can serve while the rest of the project is misconfigured.
    requires_system_checks = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
        parser.add_argument(
            "--speed", type=float, default=1.0, help="run predictions this many times faster"
        )
        parser.add_argument(
            "--retention",
            type=float,
            default=3600.0,
            help="seconds after completion until outputs and logs are removed",
        )
        parser.add_argument(
            "--public-url",
            default=settings.PROVIDERS["simulator"]["public_url"],
            help="scheme and host for output file URLs "
            "(default: SIMULATOR_PUBLIC_URL, else the address it listens on)",
        )
        parser.add_argument("--seed", type=int, help="make durations and faults reproducible")
        parser.add_argument("--token", help="accept only this API token (default: any)")
        parser.add_argument(
            "--control",
            action="store_true",
            help="open /_simulator/faults and /_simulator/stats to anyone (tests and drills only)",
        )

        # One flag per Faults field, so a new fault reaches the command line by being defined.
        faults = parser.add_argument_group("faults")
        for knob in fields(Faults):
            flag = "--" + knob.name.replace("_", "-")
            help = knob.metadata["help"]
            if knob.type is bool:
                faults.add_argument(flag, action=BooleanOptionalAction, help=help)
            elif knob.type == list[str]:
                faults.add_argument(flag, nargs="+", choices=FAULT_ENDPOINTS, help=help)
            else:
                faults.add_argument(flag, type=knob.type, help=help)

    def handle(self, *args: Any, **options: Any) -> None:
        faults = Faults()
        try:
            faults.update(
                {
                    knob.name: options[knob.name]
                    for knob in fields(Faults)
                    if options[knob.name] is not None
                }
            )
            simulator = Simulator(
                host=options["host"],
                port=options["port"],
                speed=options["speed"],
                retention=options["retention"],
                token=options["token"],
                public_url=options["public_url"],
                faults=faults,
                seed=options["seed"],
                verbose=options["verbosity"] >= 2,
                control=options["control"],
            ).start()
        except (ValueError, OSError) as error:
            raise CommandError(str(error)) from error

        self.stdout.write(f"Simulator serving {simulator.base_url} (Ctrl-C to stop)")
        # Flushed so a parent process reading a pipe learns the URL now, not at exit.
        self.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            simulator.stop()
