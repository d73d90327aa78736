"""paylive's exceptions, under one root.

Every exception paylive raises derives from ``PayliveError``; each is defined beside
the code that raises it and drawn here::

    PayliveError
    ├── Refused             a request or command is refused with an error code; nothing changed
    ├── SettingsError       a configuration variable is wrong          (paylive.settings)
    ├── EngineUnavailable   the session store cannot be reached        (paylive.engine)
    ├── GatewayError        the payment provider cannot be asked       (paylive.gateway)
    ├── ArchiveUnavailable  PostgreSQL cannot be reached now           (paylive.archive)
    │   ├── ArchiveRefused  PostgreSQL answers and refuses the work    (paylive.archive)
    │   └── MigrationLockTimeout  another start holds the migrations   (paylive.archive.schema)
    ├── ClientGone          the client left before its body arrived    (paylive.web.bodies)
    ├── SignatureError      a webhook is unsigned, badly signed or old (paylive.core.signature)
    ├── DecodeError         a client frame is not a map in its codec   (paylive.core.codec)
    ├── HeadersTooLarge     a request's line and headers pass 32 KiB   (paylive.server.connections)
    ├── LoadError           ``paylive load`` cannot start or failed    (paylive.load.config)
    └── HttpFailure         ``paylive load`` got no HTTP answer        (paylive.load.http)

``Refused`` carries a code of ``paylive.core.protocol.ErrorCode`` and no HTTP status:
the edge (``paylive.web.errors``) alone decides which status or close code a code gets.
"""

from __future__ import annotations

from typing import Any


class PayliveError(Exception):
    """The root of every paylive exception."""


class Refused(PayliveError):
    """A request or command refused with one of the protocol's error codes (``code``)
    and a sentence for people (``message``); ``extra`` goes beside the error in an
    answer (the paid session of ``already_paid``, say). Nothing was changed."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def __repr__(self) -> str:
        return f"Refused({self.code!r}, {self.message!r})"
