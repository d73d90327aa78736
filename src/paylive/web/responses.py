"""The JSON response of the command and error paths, encoded by ``dumps_strict``.

Starlette's ``JSONResponse`` makes the same bytes (compact, UTF-8, no NaN) with
``json.dumps``, about a sixth as fast; every state change answers with one.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from ..core.codec import dumps_strict


class Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps_strict(content)
