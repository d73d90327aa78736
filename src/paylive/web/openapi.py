"""``GET /openapi.json``: the HTTP API described as OpenAPI 3.1 (docs/openapi.json).

The document is written by hand, as the contract it describes; a test holds it to
the routes and Schemathesis holds the server to it.
"""

from __future__ import annotations

import functools

from .pages import bundled


@functools.cache
def document_bytes() -> bytes:
    return (bundled("docs") / "openapi.json").read_bytes()
