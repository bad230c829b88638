"""Who is asking: the client key the KMS meters a request under (server side).

A client is its peer address; an IPv6 client is its /64 (one host holds a whole
/64, so its addresses are one client). Only when the peer is a configured
trusted proxy, and a client header is configured (``X-Forwarded-For`` style:
the rightmost entry is the one that proxy added), is the address in that header
the client instead; a header from anyone else is ignored, so a client cannot
pick its own key. A client whose address lies in a reserved network (the
deployment's frontends and workers) draws on a budget of its own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from trustserve.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _networks(values: Iterable[str], what: str) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc} (give addresses or CIDR networks)") from None


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Requester:
    """``key``: what a budget is kept under; ``reserved``: from a reserved network."""

    key: str
    reserved: bool = False


@dataclass(frozen=True)
class Peers:
    trusted_proxies: tuple[Network, ...] = ()
    client_header: str | None = None
    reserved: tuple[Network, ...] = ()

    @classmethod
    def configured(
        cls,
        trusted_proxies: Iterable[str] = (),
        client_header: str | None = None,
        reserved: Iterable[str] = (),
    ) -> Peers:
        proxies = _networks(trusted_proxies, "trusted proxy")
        if client_header is not None and not client_header.strip():
            raise ConfigError("the client header name is empty")
        if proxies and client_header is None:
            raise ConfigError("trusted proxies need the client header they set (--client-header)")
        header = client_header.strip().lower() if client_header else None
        return cls(proxies, header, _networks(reserved, "reserved network"))

    def requester(self, peer: str, headers: Mapping[str, str]) -> Requester:
        address = _address(peer)
        if address is not None and self.client_header and _within(address, self.trusted_proxies):
            forwarded = headers.get(self.client_header, "").rsplit(",", 1)[-1]
            address = _address(forwarded) or address
        if address is None:
            return Requester(peer[:100])
        return Requester(_key(address), _within(address, self.reserved))


def _within(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def _key(address: Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
