"""Run all of Darkroom in one terminal, the way foreman or honcho run a Procfile.

Each process runs in its own process group, so Ctrl-C reaches only this command, which then stops
every group as a whole: that also takes down grandchildren such as runserver's autoreloaded server
and the Celery worker's pool.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.termcolors import colorize

# Seconds the processes get to finish after Ctrl-C before they are killed. A Celery worker on the
# filesystem broker takes about 7 s for a warm shutdown.
STOP_GRACE = 10.0
COLOURS = ["cyan", "yellow", "magenta", "green", "blue"]


class Command(BaseCommand):
    help = (
        "Start the demo provider simulator (when it is the default provider), a Celery worker, "
        "Celery beat and the development web server; stop them all on Ctrl-C."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="web server port (8000)")
        parser.add_argument(
            "--no-simulator", action="store_true", help="do not start the provider simulator"
        )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.output_lock = threading.Lock()
        self.environment = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def handle(self, *args, port: int, no_simulator: bool, **options) -> None:
        # Checked before anything starts: runserver would only fail last, with a bare "Error:
        # That port is already in use." below a line inviting the reader to open that port.
        if not port_is_free(port):
            raise CommandError(
                f"Port {port} is already in use by another program. Choose another for the web "
                f"server with PORT, as in `make run PORT={port + 1}`."
            )
        commands = self.commands(port, with_simulator=not no_simulator)
        colour = self.stdout.isatty() and not options["no_color"]
        # SIGTERM stops everything like Ctrl-C does. Installing a handler for SIGINT too, rather
        # than inheriting one, means the children start with SIGINT at its default even when this
        # command was launched in the background, where the shell makes it ignore SIGINT.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.default_int_handler)

        children: dict[str, subprocess.Popen] = {}
        readers: list[threading.Thread] = []
        exited = None
        try:
            width = max(map(len, commands))
            for index, (name, argv) in enumerate(commands.items()):
                prefix = f"{name:<{width}} | "
                if colour:
                    prefix = colorize(prefix, fg=COLOURS[index % len(COLOURS)])
                children[name] = self.start(argv)
                readers.append(self.relay(children[name].stdout, prefix))
            self.say(f"Darkroom: open http://127.0.0.1:{port}/ (Ctrl-C stops everything)")
            exited = self.wait_for_first_exit(children)
        except KeyboardInterrupt:
            self.say(f"Stopping (processes still running after {STOP_GRACE:g} s are killed)")
        finally:
            stop(list(children.values()))
            for reader in readers:
                reader.join(timeout=1)
        if exited:
            code = children[exited].returncode
            raise CommandError(f"{exited} exited with code {code}, so everything was stopped")

    def commands(self, port: int, *, with_simulator: bool) -> dict[str, list[str]]:
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        celery = [sys.executable, "-m", "celery", "-A", "dashboard"]
        commands = {}
        if with_simulator and settings.DEFAULT_PROVIDER == "simulator":
            simulator_port = self.simulator_port(port)
            commands["simulator"] = [*manage, "simulator", "--port", str(simulator_port)]
        queues = {"worker": settings.CELERY_TASK_DEFAULT_QUEUE, "archiver": settings.ARCHIVE_QUEUE}
        for name, queue in queues.items():
            commands[name] = [*celery, "worker", "-l", "info", "-Q", queue, "-n", f"{name}@%h"]
        commands["beat"] = [*celery, "beat", "-l", "info"]
        commands["web"] = [*manage, "runserver", f"127.0.0.1:{port}"]
        return commands

    def simulator_port(self, web_port: int) -> int:
        """The port the simulator listens on: SIMULATOR_URL's, unless that is the web server's
        port, in which case the simulator moves to the next free port and every process started
        here is told so through SIMULATOR_URL."""
        url = urlsplit(settings.PROVIDERS["simulator"]["base_url"])
        port = url.port or (443 if url.scheme == "https" else 80)
        if port != web_port:
            return port
        if os.environ.get("SIMULATOR_URL", "").strip():
            raise CommandError(
                f"SIMULATOR_URL ({url.geturl()}) and the web server's PORT ({web_port}) name the "
                "same port: change one of them."
            )
        moved = next((p for p in range(web_port + 1, web_port + 100) if port_is_free(p)), None)
        if moved is None:
            raise CommandError(
                f"No free port for the simulator near {web_port}: set SIMULATOR_URL to an address "
                "on a free port."
            )
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        self.environment["SIMULATOR_URL"] = url._replace(netloc=f"{host}:{moved}").geturl()
        self.say(f"The demo simulator listens on port {moved}: the web server takes {web_port}.")
        return moved

    def start(self, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            argv,
            cwd=settings.BASE_DIR,
            env=self.environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            process_group=0,
        )

    def relay(self, stream: IO[str], prefix: str) -> threading.Thread:
        def copy_lines() -> None:
            for line in stream:
                self.say(prefix + line.rstrip("\n"))

        thread = threading.Thread(target=copy_lines, daemon=True)
        thread.start()
        return thread

    def say(self, message: str) -> None:
        with self.output_lock:
            self.stdout.write(message)
            self.stdout.flush()

    def wait_for_first_exit(self, children: dict[str, subprocess.Popen]) -> str:
        """Block until a child exits and return its name."""
        while True:
            for name, child in children.items():
                if child.poll() is not None:
                    return name
            time.sleep(0.2)


def port_is_free(port: int) -> bool:
    """Whether a server can listen on `port` at 127.0.0.1, as runserver and the simulator do."""
    with socket.socket() as probe:
        # As those servers do, so that a port left in TIME_WAIT by a server just stopped counts
        # as free, and only one somebody listens on counts as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop(children: list[subprocess.Popen]) -> None:
    """Interrupt each child's process group, as Ctrl-C in a terminal would, then kill what is
    left after STOP_GRACE seconds."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    for child in children:
        signal_group(child, signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0, deadline - time.monotonic()))
    for child in children:
        # Even a child that exited may leave members of its group behind.
        signal_group(child, signal.SIGKILL)
        child.wait()


def signal_group(child: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signum)
