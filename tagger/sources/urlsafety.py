"""Which URLs a worker may fetch, and how a URL is named where others can read it.

A photo URL comes from whoever submits work, so a worker must not become a proxy into its own
network (SSRF). Every hop of a download, redirects included, goes through :func:`check_url`
and :func:`resolve`: the scheme must be https (http only when allowed), the host is resolved
once with ``socket.getaddrinfo`` and *every* address it resolves to must be globally routable
unicast (no loopback, private, link-local, shared, multicast, reserved or unspecified address,
no cloud metadata endpoint, no IPv4 address hidden in an IPv6 one). The HTTP source then
connects to exactly those addresses (see :mod:`tagger.sources.http`), so a second, different
DNS answer can never be used.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from types import MappingProxyType
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from tagger.config import FetchSettings
from tagger.errors import FetchFailed, NotFound, RefusedReference

DEFAULT_PORTS = MappingProxyType({"http": 80, "https": 443})

# Named explicitly although the general rules below already cover them, so a change in those
# rules (or in Python's address tables) can never quietly open the metadata services.
_METADATA = frozenset(
    ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ip_network("64:ff9b::/96")


class Target(NamedTuple):
    """One hop of an HTTP download, parsed once so every part is used consistently."""

    scheme: str
    host: str  # for DNS and SNI: no brackets around IPv6
    port: int
    host_header: str
    request_uri: str


def redact_url(url: str) -> str:
    """The URL without credentials: no user info, and the query (presigned URLs carry their
    signature there) and fragment replaced by a marker, so reasons and logs can name it."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<malformed URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def is_public_address(address: str) -> bool:
    """True when a resolved address is safe to fetch from: deny by default, allow only globally
    routable unicast, looking inside IPv6 forms that embed an IPv4 address."""
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return _is_public(ip)


def _is_public(ip: IPv4Address | IPv6Address) -> bool:
    if ip in _METADATA:
        return False
    if isinstance(ip, IPv6Address):
        # An IPv4 address carried in IPv6 is reached as that IPv4 address, so it is judged as one.
        if ip.ipv4_mapped is not None:
            return _is_public(ip.ipv4_mapped)
        if ip in _NAT64:
            return _is_public(IPv4Address(int(ip) & 0xFFFFFFFF))
        tunnelled = [ip.sixtofour, *(ip.teredo or ())]
        if any(v4 is not None and not _is_public(v4) for v4 in tunnelled) or ip.is_site_local:
            return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_url(url: str, where: str, rules: FetchSettings) -> Target:
    """The parts of one hop's URL, or RefusedReference when its scheme or form is not allowed;
    nothing is resolved or connected yet."""
    try:
        parsed = parse_url(url)
    except LocationParseError:
        raise RefusedReference(f"{where}: malformed URL") from None
    scheme = (parsed.scheme or "").lower()
    if scheme == "http" and not rules.allow_http:
        raise RefusedReference(f"{where}: plain http is not allowed (fetch.allow_http)")
    if scheme not in DEFAULT_PORTS:
        raise RefusedReference(f"{where}: scheme {scheme or 'none'!r} is not fetchable")
    if not parsed.host:
        raise RefusedReference(f"{where}: URL has no host")
    port = parsed.port or DEFAULT_PORTS[scheme]
    host_header = (
        parsed.host
        if parsed.port in (None, DEFAULT_PORTS[scheme])
        else f"{parsed.host}:{parsed.port}"
    )
    return Target(
        scheme=scheme,
        host=parsed.host.strip("[]"),
        port=port,
        host_header=host_header,
        request_uri=parsed.request_uri,
    )


def resolve(target: Target, where: str, rules: FetchSettings) -> list[str]:
    """Every address of the host, all of them checked: a name with one private answer among
    public ones is refused, since the resolver may hand out either. The resolver has no
    timeout of its own; the system's applies."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise NotFound(f"{where}: host not found") from None
        raise FetchFailed(f"{where}: name resolution failed ({exc.strerror})") from None
    except (UnicodeError, OSError):
        raise RefusedReference(f"{where}: invalid host name") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not rules.allow_private_addresses:
        for address in addresses:
            if not is_public_address(address):
                raise RefusedReference(f"{where}: host resolves to non-public address {address}")
    return addresses
