"""Which URLs may receive webhooks, and which addresses the dispatcher may connect to (SSRF).

A merchant must never make payorch's workers call their neighbours: the cloud's metadata service,
the database, anything on loopback or a private network. So, in both modes:

- the URL is ``https`` (live) or ``http(s)`` (test), without credentials or fragment;
- its host is a fully qualified DNS name or a canonical IP literal. Other spellings of an IPv4
  address (``2852039166``, ``0x7f.1``, ``017700000001``) are refused rather than interpreted, as
  are a trailing dot, non-ASCII names that are not valid IDNA 2008, single-label names
  (``metadata``, ``redis``) and special-use suffixes (``.internal``, ``.local``, ...);
- every address the host resolves to is public unicast: never loopback, private, CGNAT, link-local,
  multicast, reserved, unspecified or a cloud metadata address. Addresses that wrap an IPv4 one
  (IPv4-mapped and -compatible, 6to4, Teredo, NAT64) are judged by the address they wrap.

Loopback is allowed only with ``webhooks.allow_loopback_endpoints`` (development; production refuses
the setting). Endpoints are checked when created, and the dispatcher checks again at connect time
(``webhooks/transport.py``), connecting only to an address it checked.

Every refusal of an address says the same thing, whether the name does not resolve or resolves to a
private address: the answer must not let a caller map the names of payorch's own network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import idna

from payorch.webhooks.config import WebhooksConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NOT_PUBLIC = "Webhook endpoints must resolve to public addresses only."

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")
# Names that never lead to the public internet, and resolvers inside a cloud or a company often
# answer for: refused before any lookup.
_PRIVATE_SUFFIXES = (
    "localhost", "local", "internal", "localdomain", "lan", "home", "home.arpa", "intranet", "corp",
    "private", "invalid", "onion", "metadata.goog",
)  # fmt: skip
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server: a public address
        "fd00:ec2::254",  # AWS over IPv6
        "fd00:ec2::23",  # AWS DNS over IPv6
    )
)
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class RefusedUrl(ValueError):
    """The URL may not receive webhooks; the message says why (safe to show the merchant), ``detail``
    says more for the operator's log."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


class Resolver(Protocol):
    """Turns a host name into its addresses (IP strings). Raises ``OSError`` when it cannot."""

    async def resolve(self, host: str, port: int) -> Sequence[str]: ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), off the event loop."""

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True)
class Target:
    """A URL's parts as the dispatcher will use them."""

    scheme: str
    host: str
    """ASCII: an IDNA A-label name or an IP literal (without brackets)."""
    port: int
    literal: IPAddress | None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _SIX_TO_FOUR:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    packed = int(address)
    if packed >> 32 == 0 and packed > 1:  # ::a.b.c.d, IPv4-compatible (deprecated)
        return ipaddress.IPv4Address(packed)
    return None


def _public(address: IPAddress) -> bool:
    """Global unicast, judged by the IPv4 address a wrapping IPv6 one carries."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _TEREDO:
            teredo = address.teredo
            return teredo is not None and all(_public(part) for part in teredo)
        if address in _NAT64_LOCAL:
            return False
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return _public(embedded)
    if address in _METADATA_ADDRESSES:
        return False
    return address.is_global and not (
        address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    allow_loopback: bool = False
    """Development only: endpoints on this machine (local tools). Never through a wrapped address."""

    def permits(self, address: IPAddress) -> bool:
        if address.is_loopback:
            return self.allow_loopback
        return _public(address)


def canonical_host(raw: str) -> tuple[str, IPAddress | None]:
    """The host as the dispatcher will connect to it: ``(ascii name or IP, literal or None)``."""
    host = raw.lower()
    if not host or host.endswith("."):
        raise RefusedUrl("The URL's host must not end with a dot.")
    if "%" in host:
        raise RefusedUrl("The URL's host must not be percent-encoded or carry a zone id.")
    if ":" in host:  # only an IPv6 literal has colons
        try:
            return host, ipaddress.IPv6Address(host)
        except ValueError as error:
            raise RefusedUrl("The URL's host is not a valid IPv6 address.") from error
    if not host.isascii():
        try:
            host = idna.encode(host).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError) as error:
            raise RefusedUrl("The URL's host is not a valid internationalised domain name.") from error
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):  # a URL parser reads this as an IPv4 address
        try:
            return host, ipaddress.IPv4Address(host)
        except ValueError as error:
            raise RefusedUrl("Write an IPv4 address in dotted-decimal form (four numbers 0-255).") from error
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise RefusedUrl("The URL's host is not a valid domain name.")
    return host, None


def parse(url: str, *, livemode: bool) -> Target:
    """Check the URL's shape and its host's spelling; no lookup."""
    try:
        parts = urlsplit(url)
        port = parts.port
        hostname = parts.hostname
    except ValueError as error:
        raise RefusedUrl("The URL is not valid.") from error
    if parts.scheme not in ("https", "http") or not hostname:
        raise RefusedUrl("The URL must be an absolute http(s) URL.")
    if livemode and parts.scheme != "https":
        raise RefusedUrl("Live-mode webhook endpoints must use https.")
    if parts.username is not None or parts.password is not None:
        raise RefusedUrl("The URL must not carry credentials.")
    if parts.fragment:
        raise RefusedUrl("The URL must not have a fragment.")
    if "%" in parts.netloc or "\\" in parts.netloc:
        raise RefusedUrl("The URL's host must not be percent-encoded.")
    host, literal = canonical_host(hostname)
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), literal)


class UrlGuard:
    """The SSRF rules with their resolver: at endpoint creation (``check``) and at connect time
    (``addresses``). The resolver is a constructor argument so tests can give it any answer."""

    def __init__(
        self, policy: AddressPolicy, resolver: Resolver | None = None, *, resolve_timeout_seconds: float = 3.0
    ) -> None:
        self.policy = policy
        self._resolver = resolver or SystemResolver()
        self._timeout = resolve_timeout_seconds

    @classmethod
    def for_config(cls, config: WebhooksConfig, resolver: Resolver | None = None) -> UrlGuard:
        policy = AddressPolicy(allow_loopback=config.allow_loopback_endpoints)
        return cls(policy, resolver, resolve_timeout_seconds=config.resolve_timeout_seconds)

    async def check(self, url: str, *, livemode: bool) -> Target:
        """Refuse ``url`` unless its shape is right and every address of its host is permitted."""
        target = parse(url, livemode=livemode)
        await self.addresses(target.host, target.port)
        return target

    async def addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once (with a timeout) and return its addresses, every one of them checked."""
        try:
            canonical, literal = canonical_host(host)
        except RefusedUrl as spelling:
            raise RefusedUrl(NOT_PUBLIC, detail=f"host {host!r}: {spelling}") from None
        found = [literal] if literal is not None else await self._resolve(canonical, port)
        refused = [str(address) for address in found if not self.policy.permits(address)]
        if not found or refused:
            raise RefusedUrl(NOT_PUBLIC, detail=f"host {canonical!r} resolves to refused addresses {refused}")
        return list(dict.fromkeys(str(address) for address in found))

    async def _resolve(self, name: str, port: int) -> list[IPAddress]:
        if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
            if not self.policy.allow_loopback:
                raise RefusedUrl(NOT_PUBLIC, detail=f"host {name!r} is loopback")
        elif "." not in name or any(name == s or name.endswith("." + s) for s in _PRIVATE_SUFFIXES):
            raise RefusedUrl(NOT_PUBLIC, detail=f"host {name!r} is not a public name")
        try:
            async with asyncio.timeout(self._timeout):
                answers = await self._resolver.resolve(name, port)
            return [ipaddress.ip_address(answer.split("%", 1)[0]) for answer in answers]
        except (OSError, TimeoutError, ValueError, UnicodeError) as error:
            raise RefusedUrl(NOT_PUBLIC, detail=f"host {name!r} does not resolve ({type(error).__name__})") from error
