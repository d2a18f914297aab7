"""Which address a request comes from: the one function the sign-in delays, the password-reset
limits and the access log ask.

Behind a proxy every request's peer is the proxy, so the client is named in X-Forwarded-For,
which each proxy extends with the address it received the request from. Only proxies listed in
TRUSTED_PROXIES are believed: walking the header from its right end, past the trusted proxies,
the first other address is the client. What a client wrote into the header itself sits left of
that and is never read; a peer that is not a trusted proxy is the client, whatever its header
says.
"""

from collections.abc import Mapping
from ipaddress import ip_address

from django.conf import settings


def is_trusted_proxy(address: str) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in settings.TRUSTED_PROXIES)


def client_address(meta: Mapping[str, str]) -> str:
    """The client's address from a request's META or a WSGI environ."""
    address = meta.get("REMOTE_ADDR", "")
    if not is_trusted_proxy(address):
        return address
    for hop in reversed(meta.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        hop = hop.strip()
        try:
            ip_address(hop)
        except ValueError:
            # Not written by a proxy of ours: the trusted hop before it is all that is known.
            return address
        address = hop
        if not is_trusted_proxy(hop):
            return hop
    return address
