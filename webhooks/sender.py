"""The one module that posts Darkroom's own webhooks to the URLs API clients gave.

A client's URL is untrusted input: anyone with a token could aim Darkroom at its own network
(cloud metadata, databases, admin pages). So unless WEBHOOKS_ALLOW_PRIVATE is on, every address
its host resolves to must be public, and the request goes to the address that was checked: DNS
cannot answer one thing to the check and another to the connection. Redirects are never
followed. The connection must open within 5 s and the whole exchange end within 10 s; the
receiver's body is never read.
"""

import asyncio
import ipaddress
import socket
import ssl
from functools import cache

import certifi
import httpx
from django.conf import settings

from outputs.download import address_refusal

CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 10.0
USER_AGENT = "Darkroom webhooks"
DEFAULT_PORTS = {"http": 80, "https": 443}


class WebhookError(Exception):
    """A webhook that was not delivered. `message` says why in words; `retryable` whether a
    later attempt may succeed (a URL Darkroom refuses to post to never will); `status` is the
    receiver's answer, if it answered."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status


def parse(url: str) -> httpx.URL:
    """`url`, if it is one Darkroom may post to: http or https, with a host."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise WebhookError(f"Not a valid URL ({exc}).", retryable=False) from exc
    if parsed.scheme not in DEFAULT_PORTS or not parsed.raw_host:
        raise WebhookError("Not an http or https URL with a host.", retryable=False)
    return parsed


def host_of(url: httpx.URL) -> str:
    """The host as DNS and certificates spell it: IDNA-encoded, lowercase, no trailing dot."""
    return url.raw_host.decode("ascii").lower().rstrip(".")


def literal_refusal(url: httpx.URL) -> None:
    """Refuse a URL whose host is a non-public address written out (or `localhost`), without
    asking DNS; a name is checked on what it resolves to."""
    if settings.WEBHOOKS_ALLOW_PRIVATE:
        return
    host = host_of(url)
    if host == "localhost" or host.endswith(".localhost"):
        raise refused(f"{host} is a loopback address")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return
    if reason := address_refusal(literal):
        raise refused(f"{host} is {reason}")


def checked_addresses(url: httpx.URL, infos: list) -> str:
    """The address to connect to among `infos` (getaddrinfo's answer for `url`'s host), once
    every one of them is public."""
    host = host_of(url)
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise WebhookError(f"Could not resolve {host}: no addresses.", retryable=True)
    # Every address, not just the first: the connection may not end up where we expect.
    for address in addresses:
        if reason := address_refusal(address):
            raise refused(f"{host} resolves to {address}, {reason}")
    return str(addresses[0])


def refused(what: str) -> WebhookError:
    return WebhookError(
        f"{what}: webhooks are only sent to public addresses (WEBHOOKS_ALLOW_PRIVATE).",
        retryable=False,
    )


def check_destination(url: str) -> None:
    """A WebhookError if Darkroom would refuse to post to `url` now. A name that does not
    resolve now is let through: it is checked again at every attempt."""
    parsed = parse(url)
    literal_refusal(parsed)
    if settings.WEBHOOKS_ALLOW_PRIVATE:
        return
    try:
        infos = socket.getaddrinfo(host_of(parsed), port_of(parsed), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return
    checked_addresses(parsed, infos)


def port_of(url: httpx.URL) -> int:
    return url.port or DEFAULT_PORTS[url.scheme]


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """Post `body` to `url` with `headers` (the signature's); the receiver's 2xx status, or a
    WebhookError saying why the webhook was not delivered."""
    parsed = parse(url)
    literal_refusal(parsed)
    try:
        return asyncio.run(_post(parsed, body, headers, settings.WEBHOOKS_ALLOW_PRIVATE))
    except TimeoutError:
        raise WebhookError(
            f"{host_of(parsed)} did not answer within {TOTAL_TIMEOUT:g} s.", retryable=True
        ) from None


async def _post(url: httpx.URL, body: bytes, headers: dict[str, str], allow_private: bool) -> int:
    host = host_of(url)
    extensions = {}
    headers = {**headers, "Content-Type": "application/json", "User-Agent": USER_AGENT}
    # One deadline for everything, the name's resolution included: httpx's timeouts are per
    # read, so a receiver that trickles its answer would outlast them.
    async with asyncio.timeout(TOTAL_TIMEOUT):
        if not allow_private:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port_of(url), type=socket.SOCK_STREAM
                )
            except (OSError, UnicodeError) as exc:
                raise WebhookError(f"Could not resolve {host}: {exc}", retryable=True) from exc
            # Connect to the checked address itself; the name goes in Host and in TLS's SNI,
            # so the certificate is still verified against it.
            ip = checked_addresses(url, infos)
            bracketed = f"[{host}]" if ":" in host else host
            headers["Host"] = bracketed if url.port is None else f"{bracketed}:{url.port}"
            extensions["sni_hostname"] = host
            url = url.copy_with(host=ip)
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(TOTAL_TIMEOUT, connect=CONNECT_TIMEOUT),
            follow_redirects=False,
            verify=ssl_context(),
            # Never a proxy from the environment: it would connect to names we have not checked.
            trust_env=False,
        ) as client:
            try:
                async with client.stream(
                    "POST", url, content=body, headers=headers, extensions=extensions
                ) as response:
                    status = response.status_code
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise WebhookError(
                    f"Could not connect to {host}: {describe(exc)}", retryable=True
                ) from exc
            except httpx.TimeoutException as exc:
                raise WebhookError(
                    f"{host} did not answer in time ({describe(exc)}).", retryable=True
                ) from exc
            except httpx.HTTPError as exc:
                raise WebhookError(
                    f"Posting to {host} failed: {describe(exc)}", retryable=True
                ) from exc
    if 200 <= status < 300:
        return status
    # Whatever else the receiver answers (a redirect included, which is not followed), it may
    # answer 2xx later: mid-deploy, overloaded, briefly misconfigured.
    raise WebhookError(f"{host} answered {status}.", retryable=True, status=status)


@cache
def ssl_context() -> ssl.SSLContext:
    """Built once: loading the CA bundle takes longer than a webhook's whole request."""
    return ssl.create_default_context(cafile=certifi.where())


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
