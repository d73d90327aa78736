"""The URLs of the bundled client: the library (``client/``) and the demo pages
(``client/pages/``) answer under ``/client/`` as they did when they shared one folder,
and the pages' folder is no URL of its own."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from paylive.web import pages

CLIENT = Path(__file__).resolve().parent.parent.parent / "client"

# Every URL under /client/: those before the pages had a folder (pages and library
# together), and the pages' modules added since.
URLS = {
    "package.json", "paylive.js", "paylive.d.ts",
    "checkout.html", "checkout.js", "stripe.js", "style.css",
    "admin.html", "admin.js", "admin-shop.js",
    "admin/actions.js", "admin/chart.js", "admin/drill.js", "admin/model.js", "checkout/messages.js",
    *(f"paylive/{name}.js" for name in (
        "backoff", "commands", "constants", "emitter", "fallback", "format", "http",
        "session", "socket", "state", "transport",
    )),
}  # fmt: skip


def files(folder: Path) -> dict[str, Path]:
    return {
        path.relative_to(folder).as_posix(): path
        for path in folder.rglob("*")
        if path.is_file() and "pages" not in path.relative_to(folder).parts[:1]
    }


pytestmark = pytest.mark.anyio


async def get(url: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=Starlette(routes=pages.routes))
    async with httpx.AsyncClient(transport=transport, base_url="http://paylive") as client:
        return await client.get(url)


async def test_every_file_answers_at_its_url() -> None:
    served = files(CLIENT) | files(CLIENT / "pages")
    assert set(served) == URLS
    for url, path in served.items():
        answer = await get(f"/client/{url}")
        assert answer.status_code == 200, url
        assert answer.content == path.read_bytes(), url


@pytest.mark.parametrize(
    "url", ["/client/pages/checkout.html", "/client/pages/admin/model.js", "/client/nope.js"]
)
async def test_no_other_url(url: str) -> None:
    assert (await get(url)).status_code == 404


async def test_admin_sends_to_the_dashboard() -> None:
    answer = await get("/admin")
    assert (answer.status_code, answer.headers["location"]) == (307, "/client/admin.html")
