"""Which URLs may receive webhooks. Live mode: https only, and never an address inside our own network
(loopback, private, link-local, CGNAT, multicast, reserved): a merchant must not make payorch's
workers call its neighbours (SSRF). Test mode allows http and loopback so local tools work."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

RESOLVE_TIMEOUT_SECONDS = 3.0


class RefusedUrl(ValueError):
    """The URL may not receive webhooks; the message says why (safe to show the merchant)."""


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def parse(url: str, *, livemode: bool) -> tuple[str, int]:
    """Check the URL's shape; return its host and port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise RefusedUrl("The URL is not valid.") from error
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise RefusedUrl("The URL must be an absolute http(s) URL.")
    if livemode and parts.scheme != "https":
        raise RefusedUrl("Live-mode webhook endpoints must use https.")
    if parts.username or parts.password:
        raise RefusedUrl("The URL must not carry credentials.")
    if parts.fragment:
        raise RefusedUrl("The URL must not have a fragment.")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check(url: str, *, livemode: bool) -> None:
    """Refuse ``url`` for this mode: shape always, resolved addresses in live mode."""
    host, port = parse(url, livemode=livemode)
    if not livemode:
        return
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as error:
            raise RefusedUrl("The URL's host does not resolve.") from error
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses or any(_forbidden(address) for address in addresses):
        raise RefusedUrl("Live-mode webhook endpoints must resolve to public addresses only.")
