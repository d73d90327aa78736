"""The HTTP edge by audience: each route has one home, found from its path, and the
audience modules share only ``web.http`` (and the modules under it), never each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

from starlette.routing import Route

from paylive.server.app import API_ROUTES
from paylive.web import customer, merchant, operations, staff, streams, tickets, webhooks

from ..support.source import parse

WEB = Path(staff.__file__).resolve().parent
AUDIENCES = {
    "customer": customer,
    "merchant": merchant,
    "staff": staff,
    "webhooks": webhooks,
    "operations": operations,
}


def _home(path: str) -> set[str]:
    """The audience modules whose route list serves ``path``."""
    return {
        name
        for name, module in AUDIENCES.items()
        for route in module.routes
        if isinstance(route, Route) and route.path == path
    }


def test_every_api_route_is_served_from_one_place() -> None:
    paths = [(route.path, tuple(sorted(route.methods or ()))) for route in API_ROUTES]
    assert len(paths) == len(set(paths)), "a route is assembled twice"
    transports = {route.path for route in [*streams.routes, *tickets.routes]}
    for route in API_ROUTES:
        assert isinstance(route, Route)
        if route.path in transports:
            continue
        homes = _home(route.path)
        assert len(homes) == 1, f"{route.path} is served from {sorted(homes)}"


def test_a_path_says_its_audience() -> None:
    for name, module in AUDIENCES.items():
        for route in module.routes:
            path = route.path
            if path.startswith("/api/admin/"):
                assert name == "staff", f"{path} is a staff route, served from {name}"
            elif path.startswith("/webhooks/"):
                assert name == "webhooks", f"{path} is a provider's, served from {name}"
            elif path.startswith("/api/"):
                assert name in ("customer", "merchant"), f"{path} served from {name}"
            else:
                assert name == "operations", f"{path} served from {name}"
    assert {r.path for r in staff.routes} >= {"/api/admin/search", "/api/admin/deliveries"}


def test_audience_modules_import_no_other_audience() -> None:
    for name in AUDIENCES:
        tree = parse((WEB / f"{name}.py").read_text())
        # "from .staff import x" and "from . import staff" both name a sibling.
        imported = {
            alias.name if node.module is None else node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1
            for alias in node.names
        }
        others = (set(AUDIENCES) - {name}) & imported
        assert not others, f"web/{name}.py imports {sorted(others)}: share it through web/http.py"
