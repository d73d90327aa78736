"""The Lua scripts, read from the ``lua/`` files shipped inside the package.

Each file's header says its KEYS and ARGV. ``store.lua`` is the shared head of the
two save scripts: ``save.lua`` (Cluster, the session's slot only) and
``save_one_node.lua`` (everything in one script) each follow it. ``plain.lua`` or
``sharded.lua`` goes first, and says whether events go out with PUBLISH or SPUBLISH.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib.resources import files

_LUA = files(__package__).joinpath("lua")


@dataclass(frozen=True)
class Script:
    """A script's source and the SHA1 that EVALSHA runs it by."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    @classmethod
    def load(cls, *names: str) -> Script:
        """The files ``names`` of ``lua/``, one after the other, as one script."""
        return cls("".join(_read(name) for name in names))


def _read(name: str) -> str:
    return _LUA.joinpath(name).read_text(encoding="utf-8")


CREATE = Script.load("create.lua")
CREATE_GLOBAL = Script.load("plain.lua", "create_global.lua")
# One node: both steps of a create in one script and one round trip, each file the
# body of a function whose KEYS and ARGV are its own part of the script's; the second
# step only when the first made the session.
CREATE_ONE_NODE = Script(
    _read("plain.lua")
    + "local function own(KEYS, ARGV)\n"
    + _read("create.lua")
    + "end\nlocal function global(KEYS, ARGV)\n"
    + _read("create_global.lua")
    + "end\nif own({KEYS[1], KEYS[2]}, {ARGV[1], ARGV[2], ARGV[3], ARGV[4]}) == 0 then\n"
    + "  return 0\nend\nreturn global({unpack(KEYS, 3)}, {unpack(ARGV, 5)})\n"
)
CREATE_GLOBAL_SHARDED = Script.load("sharded.lua", "create_global.lua")
# Cluster: the global step of a create that found its session made, unless it ran.
CREATE_GLOBAL_AGAIN = Script.load("plain.lua", "create_again.lua", "create_global.lua")
CREATE_GLOBAL_AGAIN_SHARDED = Script.load("sharded.lua", "create_again.lua", "create_global.lua")
SAVE = Script.load("plain.lua", "store.lua", "save.lua")
SAVE_SHARDED = Script.load("sharded.lua", "store.lua", "save.lua")
SAVE_ONE_NODE = Script.load("plain.lua", "store.lua", "save_one_node.lua")
SAVE_GLOBAL = Script.load("save_global.lua")
HISTORY = Script.load("history.lua")
CLAIM = Script.load("claim.lua")
CLAIM_EFFECTS = Script.load("claim_effects.lua")
PURGE = Script.load("purge.lua")
FORGET = Script.load("forget.lua")
PUT_IF_ABSENT = Script.load("put_if_absent.lua")
CLAIM_RECORD = Script.load("claim_record.lua")
# The log's cursors: each script that gives or moves them starts from the same head.
LOG_APPEND = Script.load("log_floor.lua", "log_append.lua")
LOG_READ = Script.load("log_read.lua")
LOG_TRIM = Script.load("log_trim.lua")
LOG_SEED = Script.load("log_floor.lua", "log_seed.lua")
LOG_LAST = Script.load("log_floor.lua", "log_last.lua")
DELIVERY_PUT = Script.load("delivery_put.lua")
