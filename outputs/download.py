"""The one module that downloads output files from providers.

Output URLs come from provider JSON, so they are untrusted input: a provider, or anyone who can
put a URL into a prediction, could point Darkroom at its own network (cloud metadata, databases,
admin pages). So a URL must be https on an allowed host, every address its name resolves to must
be public, the request goes to the address that was checked (DNS cannot change its answer between
the check and the connection), redirects are re-checked hop by hop, and the body is capped in size
and time and must be a file Darkroom stores: images decode with Pillow, JSON parses, text is UTF-8.
"""

import ipaddress
import json
import os
import socket
import time
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from io import BytesIO

import httpx
from django.conf import settings
from PIL import Image, UnidentifiedImageError

USER_AGENT = "Darkroom/0.1 (+https://github.com/darkroom)"

# Pillow format -> (content type, extension). Pillow only tries these decoders, which keeps the
# rarer, less hardened ones away from untrusted bytes.
IMAGE_FORMATS = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
}
PILLOW_FORMATS = tuple(IMAGE_FORMATS)
# What Pillow calls a JPEG that carries extra frames (phone cameras): still a JPEG to a browser.
DECODED_AS = {**IMAGE_FORMATS, "MPO": ("image/jpeg", "jpg")}
OTHER_TYPES = {
    "video/mp4": "mp4",
    "video/webm": "webm",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "text/plain": "txt",
    "application/json": "json",
}
# Only types that say nothing about the content; anything else declared is taken at its word.
UNDECLARED_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
TYPES_BY_EXTENSION = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "txt": "text/plain",
    "json": "application/json",
}
DEFAULT_PORTS = {"http": 80, "https": 443}
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
}
SHARED_NETWORK = ipaddress.ip_network("100.64.0.0/10")
NAT64_NETWORK = ipaddress.ip_network("64:ff9b::/96")
MIB = 1024 * 1024


class DownloadError(Exception):
    """A download that did not give Darkroom a file it stores.

    `message` is shown to users as the output's failure reason. `retryable` says whether a later
    try may work; `expired` says the provider no longer has the file, so nothing will.
    """

    def __init__(self, message: str, *, retryable: bool, expired: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.expired = expired


@dataclass(frozen=True)
class Fetched:
    content: bytes
    content_type: str
    width: int | None
    height: int | None
    extension: str


@dataclass(frozen=True)
class DownloadSettings:
    """The settings a download runs under, read once per download so a change applies to the
    next one."""

    allowed_hosts: tuple[str, ...]
    max_bytes: int
    max_pixels: int
    connect_timeout: float
    read_timeout: float
    deadline: float
    max_redirects: int

    @classmethod
    def from_settings(cls) -> "DownloadSettings":
        return cls(
            allowed_hosts=tuple(settings.OUTPUT_ALLOWED_HOSTS),
            max_bytes=settings.OUTPUT_MAX_BYTES,
            max_pixels=settings.OUTPUT_MAX_PIXELS,
            connect_timeout=settings.OUTPUT_CONNECT_TIMEOUT,
            read_timeout=settings.OUTPUT_READ_TIMEOUT,
            deadline=settings.OUTPUT_DOWNLOAD_DEADLINE,
            max_redirects=settings.OUTPUT_MAX_REDIRECTS,
        )


def fetch(url: str, *, trusted_origins: Collection[str] = ()) -> Fetched:
    """Download the output file at `url` and check that it is one Darkroom stores.

    `trusted_origins` ("scheme://host:port") are fetched as they are, http and loopback included:
    the demo simulator's own origin. Raises DownloadError for every refusal and failure.
    """
    limits = DownloadSettings.from_settings()
    deadline = time.monotonic() + limits.deadline
    trusted = {origin_of(parse_url(origin)) for origin in trusted_origins}
    current = parse_url(url)
    chain_trusted = True
    for _ in range(limits.max_redirects + 1):
        # Trust ends at the first hop off a trusted origin, so an outside server cannot use a
        # redirect to reach the simulator's loopback address.
        chain_trusted = chain_trusted and origin_of(current) in trusted
        answer = send(current, trusted=chain_trusted, limits=limits, deadline=deadline)
        if isinstance(answer, httpx.URL):
            current = answer
            continue
        content, declared_type = answer
        return checked_file(content, declared_type, current, limits)
    raise DownloadError(
        f"Refused: the download was redirected more than {limits.max_redirects} times.",
        retryable=False,
    )


def parse_url(url: str | httpx.URL) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise DownloadError(f"Refused: not a valid URL ({exc}).", retryable=False) from exc
    if parsed.scheme not in DEFAULT_PORTS or not parsed.raw_host:
        raise DownloadError("Refused: not an http(s) URL with a host.", retryable=False)
    if parsed.userinfo:
        # Never echo them: they are credentials.
        raise DownloadError("Refused: the URL carries a user name or password.", retryable=False)
    return parsed


def origin_of(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, host_of(url), url.port or DEFAULT_PORTS[url.scheme]


def host_of(url: httpx.URL) -> str:
    """The host as DNS and certificates spell it: IDNA-encoded, lowercase, no trailing dot."""
    return url.raw_host.decode("ascii").lower().rstrip(".")


def host_is_allowed(host: str, patterns: Collection[str]) -> bool:
    """Whether `host` is on the allow-list; "*.example.com" covers subdomains, not the domain."""
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of non-public address `ip` is, or None when it is public."""
    # IPv6 forms that carry an IPv4 address reach that address (through a gateway, or the
    # kernel for ::ffff:0:0/96); checked first, so the message names what is really reached.
    embedded = []
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if ip in NAT64_NETWORK:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    for candidate in (*filter(None, embedded), ip):
        if candidate in METADATA_ADDRESSES:
            return "a cloud metadata address"
        if candidate.is_loopback:
            return "a loopback address"
        if candidate.is_unspecified:
            return "an unspecified address"
        if candidate.is_link_local:
            return "a link-local address"
        if candidate.is_multicast:
            return "a multicast address"
        if candidate in SHARED_NETWORK:
            return "a shared (carrier-grade NAT) address"
        if candidate.is_private:
            return "a private address"
        if candidate.is_reserved:
            return "a reserved address"
        if not candidate.is_global:
            return "not a public address"
    return None


def checked_address(url: httpx.URL, limits: DownloadSettings) -> str:
    """The public address to connect to for `url`, after every rule for untrusted URLs."""
    host = host_of(url)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and (reason := address_refusal(literal)):
        raise DownloadError(f"Refused: {host} is {reason}.", retryable=False)
    if url.scheme != "https":
        raise DownloadError(
            f"Refused: {url.scheme}://{host} is not https, and outputs are only downloaded "
            f"over https.",
            retryable=False,
        )
    if not host_is_allowed(host, limits.allowed_hosts):
        raise DownloadError(
            f"Refused: {host} is not a host Darkroom downloads outputs from "
            f"(OUTPUT_ALLOWED_HOSTS).",
            retryable=False,
        )
    if literal is not None:
        return str(literal)
    # The system resolver's own timeout applies here (resolv.conf); getaddrinfo takes none.
    try:
        infos = socket.getaddrinfo(host, url.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise DownloadError(f"Could not resolve {host}: {describe(exc)}", retryable=True) from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise DownloadError(f"Could not resolve {host}: no addresses.", retryable=True)
    # Every address, not just the first: the connection may not end up where we expect.
    for address in addresses:
        if reason := address_refusal(address):
            raise DownloadError(
                f"Refused: {host} resolves to {address}, {reason}.", retryable=False
            )
    return str(addresses[0])


def send(
    url: httpx.URL, *, trusted: bool, limits: DownloadSettings, deadline: float
) -> httpx.URL | tuple[bytes, str]:
    """One request: the next URL to try when redirected, else the body and its declared type."""
    host = host_of(url)
    if trusted:
        target, headers, extensions = url, {}, {}
    else:
        ip = checked_address(url, limits)
        # Connect to the checked address itself; the name goes in Host and in TLS's SNI, so the
        # certificate is still verified against it. The pool keys connections by address: two
        # allowed names on one CDN address may share one, which only ever reaches that CDN.
        bracketed = f"[{host}]" if ":" in host else host
        target = url.copy_with(host=ip, fragment=None)
        headers = {"Host": bracketed if url.port is None else f"{bracketed}:{url.port}"}
        extensions = {"sni_hostname": host}
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise timed_out(limits)
    timeout = httpx.Timeout(
        connect=min(limits.connect_timeout, remaining),
        read=min(limits.read_timeout, remaining),
        write=min(limits.read_timeout, remaining),
        pool=min(limits.connect_timeout, remaining),
    )
    try:
        with shared_client().stream(
            "GET", target, headers=headers, extensions=extensions, timeout=timeout
        ) as response:
            next_url = redirect_or_refusal(response, url, host)
            if next_url is not None:
                return next_url
            body = read_body(response, host, limits, deadline)
            content_type = response.headers.get("Content-Type", "")
            return body, content_type.split(";")[0].strip().lower()
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise DownloadError(
            f"Could not connect to {host}: {describe(exc)}", retryable=True
        ) from exc
    except httpx.TimeoutException as exc:
        raise DownloadError(
            f"{host} did not send the file in time ({describe(exc)}).", retryable=True
        ) from exc
    except httpx.HTTPError as exc:
        raise DownloadError(
            f"The download from {host} failed: {describe(exc)}", retryable=True
        ) from exc


def redirect_or_refusal(response: httpx.Response, url: httpx.URL, host: str) -> httpx.URL | None:
    """The URL a redirect points at, None for a 200, or a DownloadError for anything else."""
    status = response.status_code
    if status == 200:
        return None
    if status in (404, 410):
        raise DownloadError(
            f"The provider no longer has this file ({status}).", retryable=False, expired=True
        )
    if status == 429:
        raise DownloadError(f"{host} is rate limiting downloads (429).", retryable=True)
    if status >= 500:
        raise DownloadError(f"{host} had a server error ({status}).", retryable=True)
    if status >= 400:
        raise DownloadError(f"{host} refused the download ({status}).", retryable=False)
    location = response.headers.get("Location")
    if 300 <= status < 400 and location:
        try:
            return parse_url(url.join(location))
        except httpx.InvalidURL as exc:
            raise DownloadError(
                f"Refused: {host} redirected to an invalid URL ({exc}).", retryable=False
            ) from exc
    raise DownloadError(f"{host} answered {status} instead of the file.", retryable=False)


def read_body(
    response: httpx.Response, host: str, limits: DownloadSettings, deadline: float
) -> bytes:
    """The body, refused as soon as it is known to be too large or too slow."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Decompressing could turn one small chunk into gigabytes before the size cap sees it.
        raise DownloadError(
            f"Refused: {host} sent the file compressed ({encoding}) although Darkroom asked "
            f"for it uncompressed.",
            retryable=False,
        )
    too_large = DownloadError(
        f"Refused: the file is larger than {human_size(limits.max_bytes)}, the most Darkroom "
        f"stores (OUTPUT_MAX_BYTES).",
        retryable=False,
    )
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limits.max_bytes:
        raise too_large
    chunks, size = [], 0
    for chunk in response.iter_raw():
        size += len(chunk)
        if size > limits.max_bytes:
            raise too_large
        if time.monotonic() > deadline:
            raise timed_out(limits)
        chunks.append(chunk)
    return b"".join(chunks)


def timed_out(limits: DownloadSettings) -> DownloadError:
    return DownloadError(
        f"The download did not finish within {limits.deadline:g} s (OUTPUT_DOWNLOAD_DEADLINE).",
        retryable=True,
    )


def checked_file(
    content: bytes, declared_type: str, url: httpx.URL, limits: DownloadSettings
) -> Fetched:
    """`content` as a Fetched of a type Darkroom stores, or a DownloadError saying why not."""
    content_type = declared_type
    if content_type in UNDECLARED_TYPES:
        image = decoded_image(content, limits.max_pixels)
        if image is not None:
            return fetched_image(content, *image)
        extension = url.path.rsplit("/", 1)[-1].rpartition(".")[2].lower()
        content_type = TYPES_BY_EXTENSION.get(extension, "")
        if not content_type:
            raise DownloadError(
                "Refused: the file's type is not declared and could not be recognised.",
                retryable=False,
            )
    if content_type.startswith("image/"):
        image = decoded_image(content, limits.max_pixels)
        if image is None:
            raise DownloadError(
                "Refused: the file is not a valid image (not a PNG, JPEG, WebP or GIF).",
                retryable=False,
            )
        return fetched_image(content, *image)
    if content_type not in OTHER_TYPES:
        raise DownloadError(
            f"Refused: {content_type} is not an output type Darkroom stores.", retryable=False
        )
    if content_type == "application/json":
        try:
            json.loads(content)
        except (ValueError, RecursionError) as exc:
            raise DownloadError(
                f"Refused: the file is not valid JSON ({describe(exc)}).", retryable=False
            ) from exc
    if content_type == "text/plain":
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DownloadError(
                "Refused: the text file is not valid UTF-8.", retryable=False
            ) from exc
    normalised = "audio/wav" if content_type == "audio/x-wav" else content_type
    return Fetched(content, normalised, None, None, OTHER_TYPES[content_type])


def decoded_image(content: bytes, max_pixels: int) -> tuple[str, int, int] | None:
    """Pillow's format, width and height once the image has fully decoded; None if Pillow does
    not recognise it as any image Darkroom stores. A broken or oversized image is refused."""
    # Warning filters are process-wide, so a worker thread may run without this one; the pixel
    # check below still holds while OUTPUT_MAX_PIXELS is under Pillow's own limit.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(BytesIO(content), formats=PILLOW_FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    # Checked before any pixel is decoded: the header alone can claim gigabytes.
                    raise Image.DecompressionBombError(
                        f"{width} x {height} pixels, more than the {max_pixels:,} Darkroom "
                        f"decodes (OUTPUT_MAX_PIXELS)"
                    )
                image.verify()
            # verify() leaves the image unusable; decoding needs a fresh one.
            with Image.open(BytesIO(content), formats=PILLOW_FORMATS) as image:
                image.load()
                return image.format, width, height
        except UnidentifiedImageError:
            return None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DownloadError(
                f"Refused: the image is too large to decode safely ({exc}).", retryable=False
            ) from exc
        except Exception as exc:  # Pillow raises many types on malformed input, all a refusal.
            raise DownloadError(
                f"Refused: the file is not a valid image ({describe(exc)}).", retryable=False
            ) from exc


def fetched_image(content: bytes, image_format: str, width: int, height: int) -> Fetched:
    # The decoded format, not the declared type: a PNG served as image/webp is stored as a PNG.
    content_type, extension = DECODED_AS[image_format]
    return Fetched(content, content_type, width, height, extension)


def human_size(size: int) -> str:
    if size >= MIB:
        return f"{size / MIB:.4g} MiB"
    if size >= 1024:
        return f"{size / 1024:.4g} KiB"
    return f"{size} bytes"


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def make_client() -> httpx.Client:
    return httpx.Client(
        # Each request passes its own timeouts from the settings; this is only a backstop.
        timeout=httpx.Timeout(30.0, connect=5.0),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        follow_redirects=False,
        verify=True,
        # Never a proxy from the environment: it would connect to names we have not checked.
        trust_env=False,
        # One host's cookies must never travel to another that shares its address.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
    )


_shared: tuple[int, httpx.Client] | None = None


def shared_client() -> httpx.Client:
    """One pooled client per process; a forked worker child makes its own."""
    global _shared
    if _shared is None or _shared[0] != os.getpid():
        _shared = (os.getpid(), make_client())
    return _shared[1]
