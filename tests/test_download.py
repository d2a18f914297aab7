"""The output downloader: only public https hosts on the allow-list, capped, and checked.

Files come from real HTTP servers on 127.0.0.1, trusted as the simulator's origin is in demo
mode; refusals of untrusted URLs happen before any connection is made.
"""

import gzip
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO

import pytest
from PIL import Image

from outputs.download import DownloadError, Fetched, fetch, host_is_allowed

Answer = Callable[[BaseHTTPRequestHandler], None]


class LocalServer:
    """A real HTTP server on a free port: each path answers as the test says, and every request
    is recorded. Handlers that stall wait for `release`, which is set at teardown."""

    def __init__(self) -> None:
        self.routes: dict[str, Answer] = {}
        self.requests: list[str] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests.append(self.path)
                self.close_connection = True
                server.routes.get(self.path, not_found)(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A client that hangs up on purpose breaks the handler's pipe: expected, not news.
        self.httpd.handle_error = lambda request, address: None
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def url(self, path: str) -> str:
        return self.origin + path

    def serve(
        self,
        path: str,
        body: bytes,
        content_type: str | None = None,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> str:
        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(status)
            if content_type is not None:
                handler.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(body)

        self.routes[path] = answer
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        return self.serve(path, b"", "text/plain", status, {"Location": location})

    def fetch(self, path: str) -> Fetched:
        return fetch(self.url(path), trusted_origins=[self.origin])


def not_found(handler: BaseHTTPRequestHandler) -> None:
    handler.send_error(404)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    local = LocalServer()
    local.thread.start()
    yield local
    local.release.set()
    local.httpd.shutdown()
    local.httpd.server_close()


def refusal(url: str, **kwargs) -> DownloadError:
    with pytest.raises(DownloadError) as caught:
        fetch(url, **kwargs)
    return caught.value


def image_bytes(image_format: str, size: tuple[int, int] = (3, 2)) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", size, "teal").save(buffer, image_format)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid one-bit PNG of `width` x `height` black pixels that compresses to a few KB."""
    row = bytes(1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        checksum = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", checksum)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def endless_body(content_length: int | None = None, chunked: bool = False) -> Answer:
    """Sends zeros until the client hangs up (64 MiB at most), honest about the length or not."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        if content_length is not None:
            handler.send_header("Content-Length", str(content_length))
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        block = bytes(65536)
        for _ in range(1024):
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)

    return answer


@pytest.mark.parametrize(
    ("image_format", "content_type", "extension"),
    [
        ("PNG", "image/png", "png"),
        ("WEBP", "image/webp", "webp"),
        ("JPEG", "image/jpeg", "jpg"),
        ("GIF", "image/gif", "gif"),
    ],
)
def test_it_fetches_an_image_from_a_trusted_origin(server, image_format, content_type, extension):
    body = image_bytes(image_format, (7, 5))
    server.serve(f"/out.{extension}", body, content_type)

    fetched = server.fetch(f"/out.{extension}")

    assert fetched == Fetched(body, content_type, 7, 5, extension)


def test_it_stores_an_image_as_the_format_it_decodes_to(server):
    server.serve("/out.webp", image_bytes("PNG"), "image/webp")

    fetched = server.fetch("/out.webp")

    assert (fetched.content_type, fetched.extension) == ("image/png", "png")


def test_it_recognises_an_image_sent_as_octet_stream(server):
    server.serve("/download", image_bytes("WEBP"), "application/octet-stream")

    fetched = server.fetch("/download")

    assert (fetched.content_type, fetched.extension, fetched.width) == ("image/webp", "webp", 3)


def test_it_guesses_an_undeclared_type_from_the_url_extension(server):
    server.serve("/result.json", b'{"caption": "a lighthouse"}')

    assert server.fetch("/result.json").content_type == "application/json"


def test_it_refuses_an_undeclared_type_it_cannot_recognise(server):
    server.serve("/blob", b"\x00\x01 something", "application/octet-stream")

    error = refusal(server.url("/blob"), trusted_origins=[server.origin])

    assert "could not be recognised" in error.message
    assert not error.retryable


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://replicate.delivery/x.png", "not https"),
        ("https://127.0.0.1/x.png", "127.0.0.1 is a loopback address"),
        ("https://169.254.169.254/latest/meta-data", "cloud metadata address"),
        ("https://[fd00:ec2::254]/latest/meta-data", "cloud metadata address"),
        ("https://[::1]/x", "::1 is a loopback address"),
        ("https://[::ffff:10.0.0.1]/x", "private address"),
        ("https://[::ffff:127.0.0.1]/x", "loopback address"),
        ("https://[2002:a00:1::]/x", "private address"),
        ("https://100.64.0.1/x.png", "shared"),
        ("https://0.0.0.0/x.png", "unspecified"),
        ("https://evil.example/x.png", "evil.example is not a host Darkroom downloads"),
        ("https://evilreplicate.delivery/x.png", "is not a host Darkroom downloads"),
        ("https://user:secret@replicate.delivery/x.png", "user name or password"),
        ("file:///etc/passwd", "not an http(s) URL"),
    ],
)
def test_it_refuses_urls_outside_the_rules(url, reason):
    error = refusal(url)

    assert error.message.startswith("Refused: ")
    assert reason in error.message
    assert "secret" not in error.message
    assert not error.retryable and not error.expired


def test_it_refuses_a_name_that_resolves_to_a_private_address(settings):
    settings.OUTPUT_ALLOWED_HOSTS = ["localhost"]

    error = refusal("https://localhost/x.png")

    assert "localhost resolves to" in error.message
    assert "loopback address" in error.message


def test_the_allow_list_covers_subdomains_of_a_wildcard_but_not_the_bare_domain():
    patterns = ["cdn.example", "*.replicate.delivery"]

    assert host_is_allowed("cdn.example", patterns)
    assert host_is_allowed("pbxt.replicate.delivery", patterns)
    assert not host_is_allowed("replicate.delivery", patterns)
    assert not host_is_allowed("evilreplicate.delivery", patterns)
    assert not host_is_allowed("sub.cdn.example", patterns)


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data", "cloud metadata address"),
        ("https://10.0.0.1/x.png", "10.0.0.1 is a private address"),
        ("https://localhost/x.png", "loopback address"),
    ],
)
def test_it_checks_where_a_redirect_goes_as_an_untrusted_url(server, settings, location, reason):
    settings.OUTPUT_ALLOWED_HOSTS = ["localhost", "*.replicate.delivery"]
    server.redirect("/out.png", location)

    error = refusal(server.url("/out.png"), trusted_origins=[server.origin])

    assert reason in error.message
    assert not error.retryable


def test_a_redirect_to_the_same_server_under_another_name_is_not_trusted(server):
    port = server.origin.rsplit(":", 1)[1]
    server.redirect("/out.png", f"http://localhost:{port}/real.png")
    server.serve("/real.png", image_bytes("PNG"), "image/png")

    error = refusal(server.url("/out.png"), trusted_origins=[server.origin])

    assert "not https" in error.message
    assert server.requests == ["/out.png"]


def test_it_follows_a_redirect_within_the_trusted_origin(server):
    server.redirect("/old", "/files/new.png", status=307)
    server.serve("/files/new.png", image_bytes("PNG"), "image/png")

    fetched = server.fetch("/old")

    assert fetched.extension == "png"
    assert server.requests == ["/old", "/files/new.png"]


def test_it_refuses_too_many_redirects(server, settings):
    settings.OUTPUT_MAX_REDIRECTS = 2
    server.redirect("/loop", "/loop")

    error = refusal(server.url("/loop"), trusted_origins=[server.origin])

    assert "more than 2 times" in error.message
    assert server.requests == ["/loop"] * 3


def test_it_refuses_a_redirect_without_a_location(server):
    server.serve("/moved", b"", "text/plain", status=302)

    error = refusal(server.url("/moved"), trusted_origins=[server.origin])

    assert "302" in error.message
    assert not error.retryable


def test_it_refuses_a_body_whose_declared_length_is_over_the_cap(server, settings):
    settings.OUTPUT_MAX_BYTES = 100_000
    server.routes["/big.mp4"] = endless_body(content_length=64 * 1024 * 1024)

    error = refusal(server.url("/big.mp4"), trusted_origins=[server.origin])

    assert "larger than 97.66 KiB" in error.message
    assert not error.retryable


# A Content-Length smaller than the body cannot smuggle more in: httpx stops reading at it.
@pytest.mark.parametrize(
    "answer", [endless_body(chunked=True), endless_body()], ids=["chunked", "no length"]
)
def test_it_stops_reading_a_body_once_it_passes_the_cap(server, settings, answer):
    settings.OUTPUT_MAX_BYTES = 100_000
    server.routes["/big.mp4"] = answer

    started = time.monotonic()
    error = refusal(server.url("/big.mp4"), trusted_origins=[server.origin])

    assert "larger than 97.66 KiB" in error.message
    assert not error.retryable
    assert time.monotonic() - started < 10  # the body never ends


def test_it_refuses_a_decompression_bomb(server):
    server.serve("/bomb.png", png_bomb(20000, 20000), "image/png")

    error = refusal(server.url("/bomb.png"), trusted_origins=[server.origin])

    assert "too large to decode safely" in error.message
    assert "400000000 pixels" in error.message


def test_pillows_bomb_warning_refuses_an_image_even_under_a_high_pixel_limit(server, settings):
    settings.OUTPUT_MAX_PIXELS = 200_000_000
    server.serve("/bomb.png", png_bomb(10000, 10000), "image/png")

    error = refusal(server.url("/bomb.png"), trusted_origins=[server.origin])

    assert "100000000 pixels" in error.message


def test_it_refuses_an_image_over_the_pixel_limit_before_decoding_it(server, settings):
    settings.OUTPUT_MAX_PIXELS = 10_000
    server.serve("/wide.png", image_bytes("PNG", (200, 100)), "image/png")

    error = refusal(server.url("/wide.png"), trusted_origins=[server.origin])

    assert "200 x 100 pixels" in error.message


@pytest.mark.parametrize(
    "body",
    [b"<html><script>alert(1)</script></html>", image_bytes("PNG", (40, 40))[:-60]],
    ids=["html", "truncated png"],
)
def test_it_refuses_a_file_that_claims_to_be_an_image_but_does_not_decode(server, body):
    server.serve("/out.png", body, "image/png")

    error = refusal(server.url("/out.png"), trusted_origins=[server.origin])

    assert error.message.startswith("Refused: the file is not a valid image (")


def test_it_refuses_html(server):
    server.serve("/out.png", b"<html></html>", "text/html; charset=utf-8")

    error = refusal(server.url("/out.png"), trusted_origins=[server.origin])

    assert error.message == "Refused: text/html is not an output type Darkroom stores."


def test_it_refuses_a_compressed_body_it_did_not_ask_for(server):
    server.serve(
        "/out.json", gzip.compress(b"{}"), "application/json", headers={"Content-Encoding": "gzip"}
    )

    error = refusal(server.url("/out.json"), trusted_origins=[server.origin])

    assert "compressed (gzip)" in error.message


def test_it_accepts_a_video_without_decoding_it(server):
    body = b"\x00\x00\x00\x18ftypmp42" + bytes(100)
    server.serve("/clip", body, "video/mp4")

    assert server.fetch("/clip") == Fetched(body, "video/mp4", None, None, "mp4")


def test_it_accepts_json_and_utf8_text(server):
    server.serve("/out.json", b'{"ok": true}', "application/json; charset=utf-8")
    server.serve("/out.txt", "a café".encode(), "text/plain; charset=utf-8")

    assert server.fetch("/out.json").extension == "json"
    assert server.fetch("/out.txt").content_type == "text/plain"


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b'{"ok": tru', "application/json", "not valid JSON"),
        (b"caf\xe9", "text/plain", "not valid UTF-8"),
    ],
)
def test_it_refuses_json_and_text_that_do_not_parse(server, body, content_type, reason):
    server.serve("/out", body, content_type)

    error = refusal(server.url("/out"), trusted_origins=[server.origin])

    assert reason in error.message


@pytest.mark.parametrize(
    ("status", "retryable", "expired"),
    [
        (404, False, True),
        (410, False, True),
        (503, True, False),
        (429, True, False),
        (403, False, False),
    ],
)
def test_it_says_whether_an_error_status_is_worth_retrying(server, status, retryable, expired):
    server.serve("/out.png", b"", "text/plain", status=status)

    error = refusal(server.url("/out.png"), trusted_origins=[server.origin])

    assert (error.retryable, error.expired) == (retryable, expired)
    assert str(status) in error.message


def test_a_server_that_stalls_past_the_read_timeout_is_retryable(server, settings):
    settings.OUTPUT_READ_TIMEOUT = 0.5
    server.routes["/slow.png"] = lambda handler: server.release.wait(5)

    started = time.monotonic()
    error = refusal(server.url("/slow.png"), trusted_origins=[server.origin])

    assert error.retryable and not error.expired
    assert "in time" in error.message
    assert time.monotonic() - started < 4  # the server stalls for 5 s


def test_a_download_that_trickles_past_the_deadline_is_retryable(server, settings):
    settings.OUTPUT_DOWNLOAD_DEADLINE = 0.3

    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(100):
            handler.wfile.write(bytes(10))
            if server.release.wait(0.05):
                return

    server.routes["/slow.mp4"] = trickle

    started = time.monotonic()
    error = refusal(server.url("/slow.mp4"), trusted_origins=[server.origin])

    assert error.retryable
    assert time.monotonic() - started < 3  # the trickle lasts 5 s


def test_a_refused_connection_is_retryable():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        origin = f"http://127.0.0.1:{unused.getsockname()[1]}"

    error = refusal(origin + "/x.png", trusted_origins=[origin])

    assert error.retryable
    assert error.message.startswith("Could not connect to 127.0.0.1")
