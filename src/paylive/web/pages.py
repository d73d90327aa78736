"""The bundled client: the JS module, the demo checkout and the admin dashboard.

Served from the package (``paylive/client`` in a wheel) or, in a checkout, from the
repository's ``client/`` folder.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..engine import EngineUnavailable
from .auth import client_secret


def client_dir() -> Path:
    package = Path(__file__).resolve().parent.parent
    # In a wheel the client sits inside the package; in a checkout, at the repository root.
    for candidate in (package / "client", package.parent.parent / "client"):
        if candidate.is_dir():
            return candidate
    return package / "client"


async def index(request: Request) -> Response:
    runtime = request.app.state.runtime
    if runtime.settings.production:
        return JSONResponse({"service": "paylive", "docs": "see README.md"})
    return RedirectResponse("/demo", status_code=307)


async def demo(request: Request) -> Response:
    """A fresh demo session, handed to the checkout page in the URL fragment (which
    never reaches a server log). Not served in production."""
    runtime = request.app.state.runtime
    if runtime.settings.production:
        return JSONResponse(
            {"error": {"code": "not_found", "message": "no demo in production"}}, status_code=404
        )
    try:
        session = await runtime.service.create(
            "demo-" + str(runtime.clock()), 1999, "EUR", {"demo": True}
        )
    except EngineUnavailable:
        return JSONResponse(
            {
                "error": {
                    "code": "engine_unavailable",
                    "message": "the session store is unavailable",
                }
            },
            status_code=503,
        )
    secret = client_secret(runtime.settings.secret, session.id)
    return RedirectResponse(
        f"/client/checkout.html#session={session.id}&secret={secret}", status_code=303
    )


async def admin(request: Request) -> Response:
    return RedirectResponse("/client/admin.html", status_code=307)


def routes() -> list[Route | Mount]:
    return [
        Route("/", index, methods=["GET"]),
        Route("/demo", demo, methods=["GET"]),
        Route("/admin", admin, methods=["GET"]),
        Mount("/client", app=StaticFiles(directory=client_dir(), check_dir=False), name="client"),
    ]
