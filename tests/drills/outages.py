"""What goes wrong in production, made to happen on purpose: the database going away, a Redis of
the drill's own restarted or flushed, a network that resets connections, storage that is full or
read-only. Nothing here patches Darkroom's code; each fault is real at its own layer.
"""

import errno
import random
import selectors
import shutil
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import redis
from django.core.files.storage import FileSystemStorage
from django.db import connection

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


# --- The database ------------------------------------------------------------------------------


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


def admin_connection() -> psycopg.Connection:
    """A connection to the server's `postgres` database, to act on the test database from
    outside it."""
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or "localhost",
        port=db["PORT"] or 5432,
        user=db["USER"],
        password=db["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )


def terminate_backends(keep_own: bool = False) -> int:
    """Cut every connection to the test database (all but this thread's own with `keep_own`),
    as a PostgreSQL restart or a failover does; how many were cut."""
    own = None
    if keep_own:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            own = cursor.fetchone()[0]
    with admin_connection() as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND pid IS DISTINCT FROM %s",
            [connection.settings_dict["NAME"], own],
        ).fetchall()
    return sum(1 for (cut,) in rows if cut)


class DatabaseOutage:
    """The test database unusable for a while, started with `begin(seconds)`.

    On PostgreSQL every connection to it is cut and new ones are refused until the outage ends.
    On SQLite another connection holds the write lock, so a write waits for its busy timeout and
    fails with "database is locked": use it with `short_busy_timeout`.
    """

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.began = threading.Event()

    def begin(self, seconds: float) -> None:
        """Start the outage; returns once it has begun, and it ends by itself."""
        self.began.clear()
        target = self._postgresql if is_postgresql() else self._sqlite
        self.thread = threading.Thread(target=target, args=(seconds,), daemon=True)
        self.thread.start()
        self.began.wait(10)

    def end(self) -> None:
        """Wait until the outage is over (and make sure it is, on PostgreSQL)."""
        if self.thread is not None:
            self.thread.join()
        if is_postgresql():
            allow_connections(True)

    def _postgresql(self, seconds: float) -> None:
        allow_connections(False)
        try:
            terminate_backends()
            self.began.set()
            time.sleep(seconds)
        finally:
            allow_connections(True)

    def _sqlite(self, seconds: float) -> None:
        locker = sqlite3.connect(connection.settings_dict["NAME"], timeout=20)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            self.began.set()
            time.sleep(seconds)
            locker.rollback()
        finally:
            locker.close()


def allow_connections(allowed: bool) -> None:
    name = connection.settings_dict["NAME"]
    with admin_connection() as admin:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')


# --- Redis ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateRedis:
    """A redis-server of the drill's own on a free port, without persistence: restarting it loses
    everything, as a Redis without an append-only file does. Never the shared one on 6379."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "PrivateRedis":
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def flush(self) -> None:
        redis.Redis(port=self.port).flushall()

    def keys(self) -> int:
        return redis.Redis(port=self.port).dbsize()


# --- The network ---------------------------------------------------------------------------------


class ResettingProxy:
    """A TCP proxy in front of a server that cuts connections with a reset (RST), as a load
    balancer or a flaky network does: each chunk the server sends back is, at `reset_rate`, not
    passed on and the connection reset instead, so the client reads a reset in the middle of an
    answer (and a create may have been acted on). With `only`, just the answers whose head holds
    those bytes are cut (b"Content-Type: image/": downloads). `counts` says what it did."""

    def __init__(
        self, upstream_port: int, reset_rate: float = 0.0, only: bytes = b"", seed: int = 7
    ) -> None:
        self.upstream_port = upstream_port
        self.reset_rate = reset_rate
        self.only = only
        self.random = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True, name="resetting-proxy")
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ResettingProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(5)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    def _pump(self, client: socket.socket) -> None:
        server = None
        for pause in (0.1, 0.3, 1.0, None):  # nothing is sent upstream yet: try again
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                server.settimeout(None)
                break
            except OSError:
                self._count("upstream refused")
                if pause is not None:
                    time.sleep(pause)
        if server is None:
            reset(client)
            return
        self._count("connections")
        ends = {client: server, server: client}
        cuttable = not self.only  # whether the answer being passed on may be cut
        cut = False  # a reset drawn: any other end is passed on as it came, a polite close
        # poll(2), not select(2): select cannot watch a descriptor numbered 1024 or more.
        watch = selectors.DefaultSelector()
        for end in ends:
            watch.register(end, selectors.EVENT_READ)
        try:
            while not self.stopping.is_set():
                for key, _ in watch.select(0.5):
                    source = key.fileobj
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is server and self.only and data.startswith(b"HTTP/"):
                        cuttable = self.only in data.split(b"\r\n\r\n", 1)[0]
                    if source is server and cuttable and self._draw():
                        self._count("resets")
                        cut = True
                        return
                    ends[source].sendall(data)
        except OSError:
            cut = True  # a side reset: the client hears of it as a reset too
            return
        finally:
            watch.close()
            if cut:
                reset(client)
            else:
                client.close()
            server.close()

    def _draw(self) -> bool:
        with self.lock:
            return self.random.random() < self.reset_rate

    def _count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


def reset(sock: socket.socket) -> None:
    """Close with a reset rather than a polite FIN: SO_LINGER on, with a zero timeout."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


# --- Storage -------------------------------------------------------------------------------------


class FailingStorage(FileSystemStorage):
    """Files on disk, with the disk made to fail on purpose (`FailingStorage.mode`): "full"
    writes half of each file, then fails with ENOSPC, as a disk that fills up mid-write does;
    "read-only" refuses every write and delete with EROFS. `FailingStorage.failures` counts
    the writes and deletes refused."""

    mode = "ok"
    failures: Counter[str] = Counter()

    def _save(self, name: str, content) -> str:
        if self.mode == "read-only":
            self.failures["read-only"] += 1
            raise OSError(errno.EROFS, "Read-only file system", name)
        if self.mode == "full":
            self.failures["full"] += 1
            data = content.read()
            path = Path(self.path(name))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", name)
        return super()._save(name, content)

    def delete(self, name: str) -> None:
        if self.mode == "read-only":
            self.failures["read-only"] += 1
            raise OSError(errno.EROFS, "Read-only file system", name)
        super().delete(name)
