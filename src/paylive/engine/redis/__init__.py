"""The Redis engine: any number of workers and hosts share sessions, timers and fan-out.

Read it module by module:

- ``keys``: the key schema, every key and channel name;
- ``scripts`` and ``lua/``: the Lua scripts, each file headed by its KEYS and ARGV;
- ``client``: the single-node or Cluster client, and which failures mean 503;
- ``store``: sessions, history, indexes, counters, timers and records (one save, and
  what is atomic on Cluster);
- ``shop``: the merchant events log and webhook delivery records;
- ``subscription``: the one subscription connection per engine and its supervisor;
- ``engine``: ``RedisEngine``, the three put together behind the engine interface.
"""

from __future__ import annotations

from .engine import RedisEngine

__all__ = ["RedisEngine"]
