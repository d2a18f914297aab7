"""The simulator's HTTP side: Replicate's prediction API, output files and control endpoints."""

import contextlib
import email.utils
import json
import math
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

from .engine import TERMINAL, Engine, Faults, InvalidInput, UnknownModel
from .images import OUTPUT_FORMATS
from .webhooks import new_secret

# (method, path, endpoint); the endpoint names the handler method and the stats key.
ROUTES = [
    (method, re.compile(path), endpoint)
    for method, path, endpoint in (
        ("POST", r"/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/predictions", "create"),
        ("POST", r"/v1/predictions", "create"),
        ("GET", r"/v1/predictions", "list"),
        ("GET", r"/v1/predictions/(?P<prediction_id>[^/]+)", "get"),
        ("POST", r"/v1/predictions/(?P<prediction_id>[^/]+)/cancel", "cancel"),
        ("GET", r"/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)", "model"),
        ("GET", r"/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/versions", "versions"),
        (
            "GET",
            r"/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/versions/(?P<version_id>[^/]+)",
            "version",
        ),
        ("GET", r"/files/(?P<prediction_id>[^/]+)/out-(?P<index>\d+)\.(?P<extension>\w+)", "file"),
        ("GET", r"/v1/webhooks/default/secret", "webhook_secret"),
        ("GET", r"/_simulator/faults", "faults"),
        ("POST", r"/_simulator/faults", "faults"),
        ("GET", r"/_simulator/stats", "stats"),
    )
]
API_ENDPOINTS = {
    "create", "list", "get", "cancel", "webhook_secret", "model", "versions", "version",
}  # fmt: skip
COUNTED_ENDPOINTS = API_ENDPOINTS | {"file"}
# For tests and drills only: they change how the simulator behaves and show every token's
# prompts, so they answer 404 unless the simulator was started with `control=True`.
CONTROL_ENDPOINTS = {"faults", "stats"}
MAX_WAIT = 60  # Replicate holds a `Prefer: wait` request at most this many seconds
# http.server's limits on a request's headers.
MAX_HEADERS = 100
MAX_HEADER_LINE = 65536

GATEWAY_PAGES = {
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(data).encode(), headers=headers or {})


def problem(status: int, detail: str, title: str | None = None) -> Reply:
    """An error body as Replicate sends it; its authentication and lookup errors have no title."""
    data = {"title": title} if title else {}
    return json_reply(status, data | {"detail": detail, "status": status})


def server_error(status: int) -> Reply:
    """What a client sees when the provider or a proxy in front of it breaks."""
    if status in GATEWAY_PAGES:
        page = GATEWAY_PAGES[status]
        html = f"<html><head><title>{page}</title></head><body><h1>{page}</h1></body></html>\n"
        return Reply(status, html.encode(), "text/html")
    return problem(status, "Something went wrong on our end.", "Internal Server Error")


class Simulator:
    """A Replicate-format provider on a real socket, for demos and tests.

    Use it as `with Simulator(speed=50) as sim:` and point clients at `sim.base_url`
    (or `sim.url` for the official `replicate` client, which adds `/v1` itself).

    Each API token sees only the predictions it created. Output URLs name `public_url`, else
    the address it listens on (never a request's Host header). `control=True` opens the fault
    and stats endpoints (`/_simulator/...`) to anyone who can reach it: for tests only.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        retention: float = 3600.0,
        token: str | None = None,
        public_url: str | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        verbose: bool = False,
        control: bool = False,
    ):
        if speed <= 0:
            raise ValueError("speed must be above 0")
        self.host = host
        self.port = port
        self.token = token
        self.public_url = public_url.rstrip("/") if public_url else None
        self.verbose = verbose
        self.control = control
        self.engine = Engine(speed, retention, faults or Faults(), seed)
        # Set on stop, so stalled requests and `Prefer: wait` holds end at once.
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def faults(self) -> Faults:
        """The live fault settings; change their attributes to change behaviour."""
        return self.engine.faults

    @property
    def webhook_secret(self) -> str:
        """The key webhooks are signed with, as `GET /v1/webhooks/default/secret` gives it."""
        return self.engine.webhooks.secret

    def rotate_webhook_secret(self) -> str:
        """Sign webhooks with a new key from now on, as after a rotation at the provider."""
        self.engine.webhooks.secret = new_secret()
        return self.engine.webhooks.secret

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()

    def start(self) -> Self:
        """Listen (on a free port if port is 0) and serve from a daemon thread."""
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() waits for the loop to notice
            name=f"simulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self.engine.webhooks.start(name=f"simulator-{self.port}-webhooks")
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.engine.webhooks.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.hang_up()
            self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Headers(dict[str, str]):
    """A request's headers by lower-case name; `get` takes any case, as http.server's do."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


class _Server(ThreadingHTTPServer):
    # Room for a burst of connections from many workers polling at once.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], simulator: Simulator):
        super().__init__(address, _Handler)
        self.simulator = simulator
        # The connections open now: a stopped simulator closes them, rather than leave a
        # client's pooled keep-alive connection to a server that answers nothing (and whose port
        # another server may take: the client would send that one's requests here).
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def hang_up(self) -> None:
        """Close every connection still open: their clients read the end at once."""
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # closed meanwhile
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DarkroomSimulator/1.0"
    # An idle keep-alive connection holds a thread; let it go after a while.
    timeout = 60
    # A response leaves in one write (`_send`), so Nagle's algorithm would delay nothing; but
    # http.server's own replies (a malformed request's 400) still write headers and body apart,
    # and with it their body would wait for the client's delayed ACK, 40 ms on Linux.
    disable_nagle_algorithm = True
    server: _Server

    def parse_request(self) -> bool:
        """http.server's parsing, but of an HTTP/1.1 request's headers by hand: its own parser
        (the email package's) took a fifth of a poll's CPU. Anything but a plain HTTP/1.1
        request line goes to http.server, with its checks and error pages."""
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if len(words) != 3 or words[2] != "HTTP/1.1":
            return super().parse_request()
        self.requestline = requestline
        self.command, self.path, self.request_version = words
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")  # as http.server does, against open redirects
        headers = _Headers()
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE:
                self.send_error(431, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = str(line, "iso-8859-1").partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers
        self.close_connection = headers.get("Connection", "").lower() == "close"
        if headers.get("Expect", "").lower() == "100-continue":
            return self.handle_expect_100()
        return True

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def log_message(self, format: str, *args: Any) -> None:
        if self.simulator.verbose:
            super().log_message(format, *args)

    @property
    def simulator(self) -> Simulator:
        return self.server.simulator

    @property
    def engine(self) -> Engine:
        return self.server.simulator.engine

    def _handle(self, method: str) -> None:
        # Read the body even when refusing the request, or keep-alive would parse it as the next.
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.simulator.stopping.is_set():
            self.close_connection = True
            return
        endpoint, params, reply = self._route(method, urlsplit(self.path).path.rstrip("/"))
        if endpoint in CONTROL_ENDPOINTS and not self.simulator.control:
            endpoint, params, reply = None, {}, problem(404, "Not found.")
        counted = endpoint in COUNTED_ENDPOINTS
        if counted:
            # Counted on arrival, so a stalled request shows in the stats while it hangs.
            self.engine.count_request(endpoint)
        if endpoint in API_ENDPOINTS or endpoint == "file":
            reply = self._serve_api(endpoint, params)
        elif endpoint is not None:
            reply = getattr(self, f"_{endpoint}")(**params)
        if counted and reply is not None:
            # Before the reply leaves, so a client that reads the stats next sees this response.
            self.engine.count_response(reply.status)
        self._send(reply)

    def _route(self, method: str, path: str) -> tuple[str | None, dict[str, str], Reply | None]:
        """The endpoint and its path parameters, or an error reply."""
        known_path = False
        for route_method, pattern, endpoint in ROUTES:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                return endpoint, match.groupdict(), None
            known_path = known_path or match is not None
        if known_path:
            return None, {}, problem(405, f'Method "{method}" not allowed.')
        return None, {}, problem(404, "Not found.")

    def _serve_api(self, endpoint: str, params: dict[str, str]) -> Reply | None:
        """Authenticate (files need no token), inject any fault, and answer; None means hang up
        without a reply."""
        if endpoint in API_ENDPOINTS:
            refusal = self._authenticate()
            if refusal is not None:
                return refusal
            wait = self.engine.throttle(endpoint)
            if wait is not None:
                return self._throttled(math.ceil(wait))
        faults = self.engine.faults
        fault = self.engine.draw_fault(endpoint)
        kind = fault.kind if fault else None
        if kind == "rate_limit":
            return self._throttled(faults.retry_after)
        if kind == "slow" and not self._pause(faults.slow_seconds):
            return None

        lost_before_commit = (
            endpoint == "create"
            and kind in ("server_error", "stall")
            and not faults.create_error_after_commit
        )
        if lost_before_commit:
            reply = server_error(fault.status)
        else:
            reply = getattr(self, f"_{endpoint}")(**params)
        if faults.bad_payload and endpoint in ("create", "get", "cancel") and reply.status < 300:
            body = json.dumps(json.loads(reply.body) | json.loads(faults.bad_payload))
            reply = Reply(reply.status, body.encode(), reply.content_type, reply.headers)

        if kind == "server_error":
            return server_error(fault.status)
        if kind == "stall" and not self._pause(faults.stall_seconds):
            return None
        if kind == "malformed":
            return Reply(reply.status, reply.body[: len(reply.body) // 2], reply.content_type)
        return reply

    def _authenticate(self) -> Reply | None:
        """Check the API token, and keep it: it decides which predictions this request sees."""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        self.token = token.strip()
        if scheme != "Bearer" or not self.token:
            return problem(401, "You did not pass an authentication token")
        if self.simulator.token is not None and self.token != self.simulator.token:
            return problem(401, "Invalid token.")
        return None

    def _throttled(self, retry_after: float) -> Reply:
        seconds = max(1, math.ceil(retry_after))
        detail = f"Request was throttled. Expected available in {seconds} second"
        detail += "." if seconds == 1 else "s."
        return json_reply(
            429, {"detail": detail, "status": 429}, {"Retry-After": f"{retry_after:g}"}
        )

    def _pause(self, seconds: float) -> bool:
        """Wait; False if the simulator stopped meanwhile."""
        return not self.simulator.stopping.wait(seconds)

    def _file_base(self) -> str:
        """Where output files are served, from the configuration alone: a Host header chosen
        by a client must not decide the URLs that every other client is handed."""
        return self.simulator.public_url or self.simulator.url

    def _create(self, owner: str | None = None, name: str | None = None) -> Reply:
        try:
            body = json.loads(self.body or b"{}")
        except ValueError as error:
            return problem(400, f"The request body is not valid JSON: {error}", "Invalid JSON")
        if not isinstance(body, dict):
            return problem(400, "The request body must be a JSON object.", "Invalid JSON")
        version = body.get("version")
        if not owner and (not isinstance(version, str) or not version):
            return problem(422, "- version: version is required", "Input validation failed")
        try:
            model = f"{owner}/{name}" if owner else self.engine.resolve_version(version)
            prediction = self.engine.create(
                model,
                body.get("input", {}),
                self._file_base(),
                webhook=body.get("webhook"),
                webhook_events=body.get("webhook_events_filter"),
                token=self.token,
            )
        except UnknownModel as error:
            return problem(404, str(error), "Not found")
        except InvalidInput as error:
            return problem(422, str(error), "Input validation failed")
        wait = self._prefer_wait()
        if wait:
            prediction = self._hold_until_terminal(prediction, wait)
        return json_reply(201, prediction)

    def _prefer_wait(self) -> int:
        """Seconds asked for by `Prefer: wait` (all of them) or `Prefer: wait=N`; 0 if none."""
        match = re.search(r"\bwait(?:=(\d+))?", self.headers.get("Prefer", ""))
        if match is None:
            return 0
        return min(int(match[1] or MAX_WAIT), MAX_WAIT)

    def _hold_until_terminal(self, prediction: dict[str, Any], seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while prediction["status"] not in TERMINAL:
            left = deadline - time.monotonic()
            if left <= 0 or not self._pause(min(left, 0.05)):
                break
            prediction = self.engine.get(prediction["id"], self._file_base(), self.token)
        return prediction

    def _get(self, prediction_id: str) -> Reply:
        body = self.engine.get_body(prediction_id, self._file_base(), self.token)
        return Reply(200, body) if body else problem(404, "Not found.")

    def _cancel(self, prediction_id: str) -> Reply:
        prediction = self.engine.cancel(prediction_id, self._file_base(), self.token)
        return json_reply(200, prediction) if prediction else problem(404, "Not found.")

    def _webhook_secret(self) -> Reply:
        return json_reply(200, {"key": self.engine.webhooks.secret})

    def _list(self) -> Reply:
        results = self.engine.newest_first(self._file_base(), self.token)
        return json_reply(200, {"next": None, "previous": None, "results": results})

    def _model(self, owner: str, name: str) -> Reply:
        model = self.engine.model(f"{owner}/{name}")
        return json_reply(200, model) if model else problem(404, "Not found.")

    def _versions(self, owner: str, name: str) -> Reply:
        model = self.engine.model(f"{owner}/{name}")
        if model is None:
            return problem(404, "Not found.")
        page = {"next": None, "previous": None, "results": [model["latest_version"]]}
        return json_reply(200, page)

    def _version(self, owner: str, name: str, version_id: str) -> Reply:
        model = self.engine.model(f"{owner}/{name}")
        if model is None or model["latest_version"]["id"] != version_id:
            return problem(404, "Not found.")
        return json_reply(200, model["latest_version"])

    def _file(self, prediction_id: str, index: str, extension: str) -> Reply:
        image = self.engine.output_file(prediction_id, int(index), extension)
        if image is None:
            return problem(404, "Not found.")
        return Reply(200, image, OUTPUT_FORMATS[extension][1])

    def _faults(self) -> Reply:
        if self.command == "GET":
            return json_reply(200, self.engine.faults.as_json())
        try:
            changes = json.loads(self.body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of fault settings")
            return json_reply(200, self.engine.update_faults(changes))
        except ValueError as error:
            return problem(400, str(error), "Invalid faults")

    def _stats(self) -> Reply:
        return json_reply(200, self.engine.stats())

    def _send(self, reply: Reply | None) -> None:
        if reply is None:
            self.close_connection = True
            return
        self.log_request(reply.status, len(reply.body))
        lines = [
            f"{self.protocol_version} {reply.status} {self.responses[reply.status][0]}",
            f"Server: {self.version_string()}",
            f"Date: {_http_date()}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
            *(f"{name}: {value}" for name, value in reply.headers.items()),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            # One write: a client reading the answer finds all of it in one segment, and pays
            # no wake-up for a body that trails its headers.
            self.wfile.write(head + reply.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up, usually on a stall; there is no one left to answer.
            self.close_connection = True


_date: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header's value, formatted once a second rather than once a response."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]
