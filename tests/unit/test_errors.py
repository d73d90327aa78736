"""One exception root, and error codes with no HTTP in them below the edge."""

from __future__ import annotations

import subprocess
import sys

from paylive.core.protocol import ErrorCode
from paylive.errors import PayliveError, Refused
from paylive.web.errors import CLOSE_CODE, HTTP_STATUS, close_code, error_body, http_status

PROBE = """
import inspect, pkgutil, paylive
from paylive.errors import PayliveError
strays = []
for info in pkgutil.walk_packages(paylive.__path__, "paylive."):
    if info.name.endswith("__main__"):
        continue
    module = __import__(info.name, fromlist=["_"])
    for name, value in vars(module).items():
        if (inspect.isclass(value) and issubclass(value, BaseException)
                and value.__module__ == info.name and not name.startswith("_")
                and not issubclass(value, PayliveError)):
            strays.append(f"{info.name}.{name}")
print(",".join(strays))
"""


def test_every_paylive_exception_derives_from_one_root() -> None:
    # Private exceptions never leave their module (control flow inside one loop).
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "", f"not under PayliveError: {done.stdout.strip()}"


def test_the_known_exceptions_are_under_the_root() -> None:
    from paylive.core.codec import DecodeError
    from paylive.core.signature import SignatureError
    from paylive.engine import EngineUnavailable
    from paylive.gateway import GatewayError
    from paylive.settings import SettingsError

    for exc in (DecodeError, SignatureError, EngineUnavailable, GatewayError, SettingsError):
        assert issubclass(exc, PayliveError), exc
    assert issubclass(SettingsError, ValueError), "still a ValueError for older callers"


def test_the_drawn_tree_names_where_each_exception_lives() -> None:
    """The tree in ``paylive.errors``' docstring is read by newcomers: each named
    exception is defined in the module it names."""
    import importlib
    import re

    import paylive.errors

    drawn = re.findall(r"── (\w+) .*\((paylive[\w.]*)\)", paylive.errors.__doc__ or "")
    assert len(drawn) >= 8, drawn
    for name, module in drawn:
        value = getattr(importlib.import_module(module), name, None)
        assert isinstance(value, type) and issubclass(value, PayliveError), (name, module)
        assert value.__module__.startswith(module), (name, module, value.__module__)


def test_every_code_has_one_status_and_refusals_that_close_have_a_close_code() -> None:
    assert set(HTTP_STATUS) == set(ErrorCode)
    assert all(400 <= status < 600 for status in HTTP_STATUS.values())
    assert close_code(ErrorCode.NOT_FOUND) == 4404
    assert close_code(ErrorCode.UNAUTHORIZED) == 4401
    assert close_code(ErrorCode.TOO_MANY_SOCKETS) == 1013
    assert close_code(ErrorCode.INVALID_JSON) == 1008, "anything else is a policy violation"
    assert set(CLOSE_CODE) <= set(ErrorCode)


def test_the_error_body_is_built_in_one_shape() -> None:
    refused = Refused(ErrorCode.ALREADY_PAID, "paid", session={"id": "ps_x"})
    assert http_status(refused.code) == 409
    assert error_body(refused.code, refused.message, **refused.extra) == {
        "error": {"code": "already_paid", "message": "paid"},
        "session": {"id": "ps_x"},
    }
