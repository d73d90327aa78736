"""GET /api/admin/audit?session=...&staff=... (docs/protocol.md 8.2): "from the engine,
and from the archive for what the engine has forgotten". A session keeps its newest
200 entries; the archive keeps them all. With a session filter, the search once
counted the session's entries before applying the other filters (staff, from, to) and
skipped the archive once it had ``limit`` of them, so the older entries that match were
never found (found in a review, 2026-12-07). Pages read backwards (``before``) and
forwards (``after``) each read every entry once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from paylive.archive import AuditQuery, audit_order
from paylive.core.machine import ProviderResult, Refund, StartAttempt
from paylive.engine.memory import MemoryEngine
from paylive.service.audit import AuditTrail
from paylive.service.payments import PaymentService
from paylive.settings import load_settings

from ..support.core import CARD
from .test_service import ENV, Clock, ScriptedGateway

pytestmark = pytest.mark.anyio


class Archive:
    """The archive's audit table, as PostgreSQL answers it: every entry, by filter."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    async def audit_add(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            self.rows.setdefault(str(entry["id"]), entry)

    async def audit_search(self, query: AuditQuery) -> list[dict[str, Any]]:
        found = [e for e in self.rows.values() if query.matches(e)]
        # ORDER BY at, id: descending, or ascending from an `after` place (its oldest cut).
        found.sort(key=lambda e: (int(e["at"]), str(e["id"])), reverse=query.after is None)
        cut = found[: query.limit]
        return cut if query.after is None else cut[::-1]


def entry(n: int, who: str, role: str) -> dict[str, object]:
    return {
        "id": f"aud_{n:04d}",
        "staff": who,
        "role": role,
        "action": "refund",
        "address": "127.0.0.1",
        "details": {"amount": 1},
    }


async def busy_session(
    who: Callable[[int], tuple[str, str]],
) -> tuple[PaymentService, AuditTrail, Archive, str]:
    """A paid session refunded 1 250 times, the ``n``-th by ``who(n)`` (name, role),
    each entry copied to the trail (and the archive) as it is made."""
    settings = load_settings(ENV)
    clock = Clock()
    engine = MemoryEngine(settings.engine)
    service = PaymentService(settings.service, engine, ScriptedGateway(), clock)
    archive = Archive()
    trail = AuditTrail(engine, archive)  # type: ignore[arg-type]
    session = await service.create("o", 1_000, "EUR", {})
    await service.run(session.id, StartAttempt(CARD))
    await service.run(session.id, ProviderResult(1, "succeeded"))
    for n in range(250):
        name, role = who(n)
        clock.now += 1
        outcome = await service.run(session.id, Refund(1, None, name), entry(n, name, role))
        assert outcome.decision.refusal is None
        await trail.recorded(outcome.session.audit[-1])
    return service, trail, archive, session.id


async def test_older_entries_of_a_busy_session_are_found_in_the_archive() -> None:
    # otto (an operator) refunds 1 fifty times, then the shop refunds 1 two hundred times.
    service, trail, archive, session_id = await busy_session(
        lambda n: ("otto", "operator") if n < 50 else ("merchant", "merchant")
    )
    held = await service.get(session_id)
    assert len(held.audit) == 200 and len(archive.rows) == 250  # the engine forgot otto's
    # Each once in the trail of every session: the save added it, ``recorded`` did not.
    assert len(await trail.engine.audit_read(0, 1_000)) == 250

    by_otto = await trail.search(AuditQuery(session_id=session_id, staff="otto", limit=100))
    assert len(by_otto) == 50, f"otto's 50 refunds of the session: {len(by_otto)} found"

    first = int(archive.rows["aud_0000"]["at"])
    early = await trail.search(AuditQuery(session_id=session_id, at_to=first + 10, limit=100))
    assert len(early) == 10, f"the first 10 actions on the session: {len(early)} found"


def made(n: int, at: int) -> dict[str, object]:
    return {**entry(n, "otto", "operator"), "session": None, "at": at}


async def pages(trail: AuditTrail, limit: int) -> list[str]:
    """Every entry's id, page after page, as a client follows ``next``."""
    seen: list[str] = []
    before: tuple[int, str] | None = None
    while True:
        page = await trail.search(AuditQuery(before=before, limit=limit))
        seen += [str(e["id"]) for e in page]
        if len(page) < limit:
            return seen
        before = (int(page[-1]["at"]), str(page[-1]["id"]))


async def test_the_newest_entry_is_found_though_it_reached_the_trail_after_an_older_one() -> None:
    # Two actions: the one done at 12 is copied to the engine's trail before the one done
    # at 11 (its request was slower between its save and its copy). The newest first is
    # the one at 12, whatever the trail's order.
    trail = AuditTrail(MemoryEngine(load_settings(ENV).engine), None)
    for n, at in ((1, 10), (2, 12), (3, 11)):
        await trail.added(made(n, at))
    newest = await trail.search(AuditQuery(limit=1))
    assert [e["id"] for e in newest] == ["aud_0002"]
    assert await pages(trail, 1) == ["aud_0002", "aud_0003", "aud_0001"]


async def trail_of_250() -> AuditTrail:
    """250 actions in three milliseconds, the oldest 50 only in the archive."""
    trail = AuditTrail(MemoryEngine(load_settings(ENV).engine), Archive())  # type: ignore[arg-type]
    for n in range(250):
        one = made(n, 1_000 + n // 100)
        if n < 50:
            await trail.archive.audit_add([one])  # type: ignore[union-attr]
        else:
            await trail.added(one)
    return trail


async def test_pages_of_the_trail_neither_skip_nor_repeat_entries_of_one_millisecond() -> None:
    # 250 actions in three milliseconds, 50 of them forgotten by the engine (kept in the
    # archive): paged 100 at a time, each is read exactly once, newest first.
    trail = await trail_of_250()
    read = await pages(trail, 100)
    assert len(read) == len(set(read)) == 250
    expected = sorted(
        (made(n, 1_000 + n // 100) for n in range(250)),
        key=lambda e: (int(e["at"]), str(e["id"])),  # type: ignore[call-overload]
        reverse=True,
    )
    assert read == [e["id"] for e in expected]


async def pages_forward(
    trail: AuditTrail, limit: int, after: tuple[int, str], session_id: str | None = None
) -> list[str]:
    """Every entry newer than ``after``, page after page as a client follows ``prev``,
    newest first like one page: each page is newest first and cut oldest first."""
    seen: list[str] = []
    while True:
        query = AuditQuery(session_id=session_id, after=after, limit=limit)
        page = await trail.search(query)
        assert page == sorted(page, key=audit_order, reverse=True), "a page is newest first"
        seen = [str(e["id"]) for e in page] + seen
        if len(page) < limit:
            return seen
        after = audit_order(page[0])


async def test_pages_read_forwards_neither_skip_nor_repeat_entries() -> None:
    # The same 250 actions in three milliseconds, 50 of them only in the archive: read
    # forwards from before the first, 100 at a time, each is read exactly once; the first
    # page is the oldest 100, not the newest.
    trail = await trail_of_250()
    first = await trail.search(AuditQuery(after=(0, "aud_"), limit=100))
    assert [e["id"] for e in first] == [f"aud_{n:04d}" for n in range(99, -1, -1)]
    read = await pages_forward(trail, 100, (0, "aud_"))
    assert len(read) == len(set(read)) == 250
    assert read == await pages(trail, 100)
    # From the middle of a millisecond: only what stands after that place.
    middle = await trail.search(AuditQuery(after=(1_001, "aud_0150"), limit=3))
    assert [e["id"] for e in middle] == ["aud_0153", "aud_0152", "aud_0151"]
    assert await trail.search(AuditQuery(after=(1_002, "aud_0249"), limit=3)) == []
    # Both places: what lies between them, the oldest first cut.
    between = AuditQuery(after=(1_000, "aud_0010"), before=(1_000, "aud_0020"), limit=3)
    assert [e["id"] for e in await trail.search(between)] == ["aud_0013", "aud_0012", "aud_0011"]


async def test_reading_forwards_finds_an_entry_copied_to_the_trail_late() -> None:
    # The action at 11 reached the engine's trail after the one at 12: reading forwards
    # from the one at 10 still reads 11 before 12.
    trail = AuditTrail(MemoryEngine(load_settings(ENV).engine), None)
    for n, at in ((1, 10), (2, 12), (3, 11)):
        await trail.added(made(n, at))
    assert await pages_forward(trail, 1, (10, "aud_0001")) == ["aud_0002", "aud_0003"]


async def test_reading_a_busy_session_forwards_reaches_into_the_archive() -> None:
    # A session keeps its newest 200 entries: reading it forwards from its first entry
    # starts with entries only the archive still holds for it.
    _, trail, archive, session_id = await busy_session(lambda n: ("otto", "operator"))
    start = audit_order(archive.rows["aud_0000"])
    query = AuditQuery(session_id=session_id, after=start, limit=100)
    assert [e["id"] for e in await trail.search(query)] == [
        f"aud_{n:04d}" for n in range(100, 0, -1)
    ]
    assert len(set(await pages_forward(trail, 100, start, session_id))) == 249
