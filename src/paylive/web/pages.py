"""Pages for people (HTML, redirects, static files), not the API: the bundled client
(the JS module, the demo checkout and the admin dashboard), the demo's fresh session
and the front door.

Served from the package (``paylive/client`` in a wheel) or, in a checkout, from the
repository's ``client/`` folder; ``docs/`` (the API descriptions) likewise. The library
sits in ``client/`` and the pages in ``client/pages/``, both under ``/client/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..core.protocol import ErrorCode
from ..engine import EngineUnavailable
from ..errors import Refused
from .auth import client_secret
from .errors import ENGINE_DOWN, error_response


def bundled(name: str) -> Path:
    """The folder ``name`` (``client``, ``docs``) shipped with paylive."""
    package = Path(__file__).resolve().parent.parent
    # In a wheel it sits inside the package; in a checkout, at the repository root.
    for candidate in (package / name, package.parent.parent / name):
        if candidate.is_dir():
            return candidate
    return package / name


def client_dir() -> Path:
    return bundled("client")


class ClientFiles(StaticFiles):
    """``/client/``: the pages' folder first, then the library's; the URLs are those of
    the time when both shared one folder, and ``/client/pages/...`` is not one of them."""

    def __init__(self) -> None:
        super().__init__(directory=client_dir(), check_dir=False)
        self.all_directories = [client_dir() / "pages", client_dir()]

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if Path(path).parts[:1] == ("pages",):
            return "", None
        return super().lookup_path(path)


async def index(request: Request) -> Response:
    runtime = request.app.state.runtime
    if runtime.settings.production:
        return JSONResponse({"service": "paylive", "docs": "/openapi.json"})
    return RedirectResponse("/demo", status_code=307)


async def demo(request: Request) -> Response:
    """A fresh demo session, handed to the checkout page in the URL fragment (which
    never reaches a server log). Not served in production; rate limited per client
    address, since each one is a session kept for a day."""
    runtime = request.app.state.runtime
    if runtime.settings.production:
        return error_response(Refused(ErrorCode.NOT_FOUND, "no demo in production"))
    address = request.client.host if request.client else "unknown"
    if not runtime.demo_limiter.take(address):
        return error_response(
            Refused(ErrorCode.RATE_LIMITED, "too many demo sessions from this address; wait a bit"),
            headers={"Retry-After": "60"},
        )
    try:
        session = await runtime.service.create(
            "demo-" + str(runtime.clock()), 1999, "EUR", {"demo": True}
        )
    except EngineUnavailable:
        return error_response(ENGINE_DOWN)
    secret = client_secret(runtime.settings.secret, session.id)
    return RedirectResponse(
        f"/client/checkout.html#session={session.id}&secret={secret}", status_code=303
    )


async def admin(request: Request) -> Response:
    return RedirectResponse("/client/admin.html", status_code=307)


routes: list[Route | Mount] = [
    Route("/", index, methods=["GET"]),
    Route("/demo", demo, methods=["GET"]),
    Route("/admin", admin, methods=["GET"]),
    Mount("/client", app=ClientFiles(), name="client"),
]
