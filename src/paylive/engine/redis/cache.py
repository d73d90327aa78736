"""A worker's cache of the sessions it saved or read for a command.

A command needs the session as stored. Reading it from Redis is a round trip and a
decode; most of the time this worker already holds the current version, because it
made it. So ``Store.load_for_update`` answers from here, and the save script's
compare-and-set is the check: a stale entry makes the save fail, which costs nothing
but that round trip, and the failed save's reply carries the current record, which
replaces the entry for the next try. A decision that saves nothing has no such check,
so the service makes it again on a fresh ``load`` (which refreshes the entry).

The worker's own subscription keeps entries fresh: a message on a session's channel
that is not one of the events this worker saved last for it means another worker
changed the session, and the entry is dropped. Reads that must be current (a GET, a
socket's catch-up) never come here.

Bounded: the least recently used entries go past ``limit``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from ...core.session import Session


class SessionCache:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        # id -> (session, the event payloads this worker published with it)
        self._entries: OrderedDict[str, tuple[Session, tuple[bytes, ...]]] = OrderedDict()

    def get(self, session_id: str) -> Session | None:
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        self._entries.move_to_end(session_id)
        return entry[0]

    def put(self, session: Session, events: Sequence[bytes] = ()) -> None:
        if self._limit <= 0:
            return
        self._entries[session.id] = (session, tuple(events))
        self._entries.move_to_end(session.id)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def refresh(self, session_id: str, session: Session | None) -> None:
        """A fresh read: it replaces an entry held for the session (None: gone)."""
        if session_id in self._entries:
            if session is None:
                del self._entries[session_id]
            else:
                self._entries[session_id] = (session, ())

    def drop(self, session_id: str) -> None:
        self._entries.pop(session_id, None)

    def observe(self, session_id: str, payload: bytes) -> None:
        """An event of ``session_id`` came through the subscription: unless it is one
        this worker published with the cached version, the entry is stale."""
        entry = self._entries.get(session_id)
        if entry is not None and payload not in entry[1]:
            del self._entries[session_id]
