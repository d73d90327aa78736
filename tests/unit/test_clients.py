"""The client behind a trusted proxy (``web.clients``): the rule of uvicorn's
``ProxyHeadersMiddleware``, which it replaces, held against that middleware itself."""

from __future__ import annotations

from typing import Any

import pytest
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from paylive.settings import SettingsError, load_settings
from paylive.web.clients import DECIDED, TrustedProxies, decide

pytestmark = pytest.mark.anyio

CASES = [
    # (trusted proxies, peer, X-Forwarded-For values, X-Forwarded-Proto)
    (("127.0.0.1",), "127.0.0.1", [b"203.0.113.7"], b"https"),
    (("127.0.0.1",), "127.0.0.1", [b"198.51.100.1, 203.0.113.7"], None),
    # The right-most entry that is no trusted proxy, whatever the client put left of it.
    (("127.0.0.1", "10.0.0.0/8"), "127.0.0.1", [b"6.6.6.6, 203.0.113.7, 10.1.2.3"], None),
    (("127.0.0.1",), "127.0.0.1", [b"6.6.6.6", b"203.0.113.7"], None),  # two headers
    # Every entry a proxy: the left-most.
    (("127.0.0.0/8",), "127.0.0.1", [b"127.0.0.9, 127.0.0.5"], None),
    (("*",), "192.0.2.1", [b"203.0.113.7, 198.51.100.1"], b"http"),
    # Ports, IPv6, and what is no address at all.
    (("127.0.0.1",), "127.0.0.1", [b"203.0.113.7:4711"], None),
    (("::1",), "::1", [b"[2001:db8::1]:443"], b"wss"),
    (("::1",), "::1", [b"2001:db8::1"], None),
    (("127.0.0.1",), "127.0.0.1", [b"unknown"], b"gopher"),
    # A "port" too long for int() (Python's 4,300 digits): a 500 once, from any client
    # whose header reaches here unchanged (a socket's handshake, the app's entry).
    (("127.0.0.1",), "127.0.0.1", [b"203.0.113.7:" + b"9" * 5000], None),
    (("::1",), "::1", [b"[2001:db8::1]:" + b"9" * 5000], None),
    (("127.0.0.1",), "127.0.0.1", [b""], None),
    (("127.0.0.1",), "127.0.0.1", [b" , "], None),
    # A peer that is no trusted proxy: the headers are ignored.
    (("127.0.0.1",), "127.0.0.2", [b"203.0.113.7"], b"https"),
    ((), "127.0.0.1", [b"203.0.113.7"], b"https"),
]


def scope_of(peer: str, forwarded: list[bytes], proto: bytes | None, kind: str) -> dict[str, Any]:
    headers = [(b"host", b"x")] + [(b"x-forwarded-for", value) for value in forwarded]
    if proto is not None:
        headers.append((b"x-forwarded-proto", proto))
    return {"type": kind, "client": (peer, 40000), "scheme": "http", "headers": headers}


async def uvicorns(proxies: tuple[str, ...], scope: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(inner: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(inner)

    # uvicorn's own reading of "none": no proxy_headers at all.
    if proxies:
        await ProxyHeadersMiddleware(app, trusted_hosts=list(proxies))(scope, None, None)  # type: ignore[arg-type]
    else:
        seen.update(scope)
    return seen


@pytest.mark.parametrize("kind", ["http", "websocket"])
@pytest.mark.parametrize(("proxies", "peer", "forwarded", "proto"), CASES)
async def test_the_client_is_the_one_uvicorns_middleware_names(
    proxies: tuple[str, ...],
    peer: str,
    forwarded: list[bytes],
    proto: bytes | None,
    kind: str,
) -> None:
    ours = scope_of(peer, forwarded, proto, kind)
    decide(ours, TrustedProxies(proxies))
    theirs = await uvicorns(proxies, scope_of(peer, forwarded, proto, kind))
    assert (ours["client"], ours["scheme"]) == (theirs["client"], theirs["scheme"])


def test_a_scope_the_connection_decided_is_not_read_again() -> None:
    # The protocol decided from its peer; the app's entry must not apply the headers a
    # second time (the peer it would see is the client already).
    scope = scope_of("203.0.113.7", [b"6.6.6.6"], None, "http")
    scope[DECIDED] = True
    decide(scope, TrustedProxies(("*",)))
    assert scope["client"] == ("203.0.113.7", 40000)


def test_the_proxies_are_the_settings_ones() -> None:
    proxies = TrustedProxies(
        load_settings({"PAYLIVE_TRUSTED_PROXIES": "10.1.2.3/8, ::1"}).trusted_proxies
    )
    assert proxies.trusts("10.200.0.1") and proxies.trusts("::1")
    assert not proxies.trusts("11.0.0.1") and not proxies.trusts("") and not proxies.trusts(None)
    assert not TrustedProxies(()).trusts("127.0.0.1")
    with pytest.raises(SettingsError, match="PAYLIVE_TRUSTED_PROXIES"):
        load_settings({"PAYLIVE_TRUSTED_PROXIES": "proxy.internal"})
