"""Who the client is: the connection's peer, or, when that peer is a trusted proxy
(``PAYLIVE_TRUSTED_PROXIES``), the client it names in ``X-Forwarded-For`` (and the
scheme in ``X-Forwarded-Proto``).

One rule, here, for every part of the server that asks: the connection protocol
(``server.connections``), which holds a command's place in its address's share before
any app runs, and the app's entry (``decide``, in ``server.app.SocketsFirst``), which
every socket handshake passes, and every HTTP request when the app runs under another
server. The rule is uvicorn's
``ProxyHeadersMiddleware``'s, which this replaces: the headers are believed only from a
trusted peer; the client is the right-most address of ``X-Forwarded-For`` that is not
itself a trusted proxy (each proxy appends the address it heard from, so the entries
left of it are whatever the client claimed), or the left-most when every entry is.
Before, the protocol counted the proxy and the app the client, and one client behind
the proxy took places in the share of every client behind it.

The rewritten address is the scope's ``client``: the door's shares, the demo's bucket,
the audit trail's ``address`` and the access log all read it there.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from starlette.types import Scope

FORWARDED_FOR = b"x-forwarded-for"
FORWARDED_PROTO = b"x-forwarded-proto"
_SCHEMES = {"http", "https", "ws", "wss"}
# Set in an HTTP scope whose client the connection protocol has decided already, so
# that the app does not read its headers a second time.
DECIDED = "paylive.client_decided"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _port(text: str) -> int | None:
    """A port as written (ASCII digits, at most five: a longer run is no port, and
    ``int`` refuses one past 4,300 digits with a ValueError, a 500), else None."""
    if text.isdecimal() and text.isascii() and len(text) <= 5:
        return int(text)
    return None


def _host_port(entry: str) -> tuple[str, int]:
    """An entry of X-Forwarded-For: a bare address, ``v4:port`` or ``[v6]:port``;
    anything else is kept whole, with no port (it is then trusted only as written)."""
    if entry.startswith("["):
        end = entry.find("]")
        if end == -1:
            return entry, 0
        host, rest = entry[1:end], entry[end + 1 :]
        if not rest:
            return host, 0
        if not rest.startswith(":"):
            return entry, 0
        return host, _port(rest[1:]) or 0
    if entry.count(":") == 1:
        host, text = entry.split(":")
        port = _port(text)
        return (entry, 0) if port is None else (host, port)
    return entry, 0


class TrustedProxies:
    """The proxies whose forwarding headers are believed: addresses and networks as
    ``Settings.trusted_proxies`` holds them (normalised), ``*`` for any, none for none."""

    def __init__(self, proxies: Sequence[str]) -> None:
        self._proxies = tuple(proxies)
        self.any = "*" in proxies
        self._networks: list[Network] = []
        addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        for proxy in proxies:
            if proxy == "*":
                continue
            if "/" in proxy:
                self._networks.append(ipaddress.ip_network(proxy, strict=False))
            else:
                addresses.add(ipaddress.ip_address(proxy))
        self._addresses = frozenset(addresses)
        self.none = not self.any and not addresses and not self._networks
        # Peers and forwarded entries repeat: each is parsed once (bounded).
        self._trusted = functools.lru_cache(maxsize=4096)(self._decide)

    def __reduce__(self) -> tuple[type[TrustedProxies], tuple[tuple[str, ...]]]:
        # Each worker gets the config pickled: it makes its own cache, from the list.
        return (TrustedProxies, (self._proxies,))

    def trusts(self, host: str | None) -> bool:
        """Whether ``host`` (a peer or a forwarded entry) is a trusted proxy."""
        if self.any:
            return True
        if not host or self.none:
            return False
        if len(host) > 64:  # no address is this long: not cached, not trusted
            return False
        return bool(self._trusted(host))

    def _decide(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return address in self._addresses or any(address in net for net in self._networks)

    def client(self, forwarded_for: Iterable[bytes]) -> tuple[str, int] | None:
        """The client a trusted peer names in its X-Forwarded-For headers (each one's
        value, in order); None when they name nobody."""
        entries = [
            entry.strip() for value in forwarded_for for entry in value.decode("latin-1").split(",")
        ]
        if not entries or not any(entries):
            return None
        if not self.any:
            for entry in reversed(entries):
                host, port = _host_port(entry)
                if not self.trusts(host):
                    return (host, port) if host else None
        # Every entry a trusted proxy (or any is): the client was one of them.
        host, port = _host_port(entries[0])
        return (host, port) if host else None

    def apply(self, scope: Scope, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Set the scope's ``client`` and ``scheme`` from ``headers``, whose peer (the
        scope's client as the connection had it) is trusted: the caller asked ``trusts``."""
        forwarded: list[bytes] = []
        proto: bytes | None = None
        for name, value in headers:
            if name == FORWARDED_FOR:
                forwarded.append(value)
            elif name == FORWARDED_PROTO:
                proto = value
        if proto is not None:
            scheme = proto.decode("latin-1").strip()
            if scheme in _SCHEMES:
                if scope["type"] == "websocket":
                    scheme = scheme.replace("http", "ws")
                scope["scheme"] = scheme
        if forwarded:
            client = self.client(forwarded)
            if client is not None:
                scope["client"] = client


def decide(scope: Scope, proxies: TrustedProxies) -> None:
    """The scope's client and scheme as ``proxies`` decide them, unless the connection
    protocol has already (every socket handshake, and every request when the app runs
    under another server, comes through here)."""
    if scope.get(DECIDED):
        return
    client = scope.get("client")
    if proxies.trusts(str(client[0]) if client else None):
        proxies.apply(scope, scope.get("headers") or ())
