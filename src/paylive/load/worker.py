"""One process of ``paylive load``: its share of sessions, sockets and state changes.

``paylive.load`` starts it as ``python -m paylive.load.worker``. It reads its
configuration, then one command per phase, as JSON lines on stdin, and answers
each phase on stdout, so that the parent can sample the server between phases
(after the sessions exist, after the sockets are open, after the drive). EOF on
stdin means the parent is gone: the process stops.

Everything is bounded: the drive fires at most ``rate * duration`` commands, every
wait has a deadline, reconnects and replacements are capped.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from array import array
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..core.protocol import DURABLE_TYPES, SUBPROTOCOLS, TERMINAL_STATUSES
from .http import HttpFailure, Pool, make_pool

# The sandbox never answers this card: the attempt stays `processing` until the
# load generator interrupts it, so the generator alone decides when states change.
NEVER_ANSWERS = "4000000000000408"
TERMINAL = TERMINAL_STATUSES
DURABLE = DURABLE_TYPES

MAX_STRIKES = 3  # consecutive refused commands before a session is given up
MAX_RECONNECTS = 3  # per customer, as a page would (with backoff)
OPEN_TIMEOUT_S = 15.0
HTTP_SETUP_CONCURRENCY = 32  # session creation and the final reads
OPEN_CONCURRENCY = 200  # WebSocket handshakes in flight at once
SETTLE_TIMEOUT_S = 15.0  # in-flight commands and retirements after the drive


def now_ms() -> float:
    return time.time() * 1000.0


def raise_nofile() -> int:
    """Lift the soft open-files limit to the hard one; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


@dataclass(frozen=True)
class Config:
    index: int
    base_url: str
    ws_url: str
    api_key: str
    admin_token: str | None
    sockets: int
    admins: int
    rate: float
    duration: float
    format: str
    mode: str  # "ws" | "poll"
    concurrency: int
    poll_interval: float
    poll_connections: int
    drain: float
    max_replacements: int
    report_finals: bool
    http_client: str  # "raw" | "httpx"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        return cls(**raw)


class Tracked:
    """One payment session: what the driver knows of it, and what its observer saw."""

    __slots__ = (
        "id",
        "secret",
        "status",
        "attempt",
        "retry_at",
        "seq",
        "strikes",
        "states",
        "seen",
        "base",
        "last",
        "gaps",
        "disorder",
        "waiter",
        "target",
        "observed",
        "final",
        "retired",
        "missed",
    )

    def __init__(self, body: dict[str, Any]) -> None:
        self.id: str = body["id"]
        self.secret: str = body["client_secret"]
        self.status = "created"
        self.attempt = 0
        self.retry_at: int | None = None
        self.seq = 0
        self.strikes = 0
        self.states: set[int] = set()  # seqs reached by the driver's commands
        self.seen: set[int] = set()  # durable seqs the socket delivered, or seqs a poll showed
        self.base: int | None = None  # seq of the first snapshot: events after it are owed
        self.last = -1  # the highest durable seq received in order
        self.gaps = 0
        self.disorder = 0
        self.missed = 0  # poll mode: seq jumps of more than one
        self.waiter: asyncio.Event | None = None
        self.target = 0
        self.observed = False  # the customer watched this session (socket open or polled)
        self.final: int | None = None
        self.retired = False
        self.apply(body)

    def apply(self, body: dict[str, Any]) -> None:
        seq = int(body.get("seq", self.seq))
        if seq < self.seq:
            return  # an older answer overtaken by a newer one
        if seq > self.seq:
            self.states.add(seq)
        self.seq = seq
        self.status = body.get("status", self.status)
        self.attempt = int(body.get("attempt") or 0)
        self.retry_at = body.get("retry_at")


class Customer:
    """One simulated checkout page: a session and its socket (or its poll timer)."""

    __slots__ = ("session", "conn", "reader", "closing", "reconnects", "next_session")

    def __init__(self, session: Tracked) -> None:
        self.session = session
        self.conn: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.closing = False
        self.reconnects = 0
        self.next_session: Tracked | None = None


class AdminFeed:
    __slots__ = ("conn", "reader", "types", "per_session", "disorder", "closed_code", "closing")

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.reader: asyncio.Task[None] | None = None
        self.types: Counter[str] = Counter()
        self.per_session: dict[str, list[int]] = {}  # id -> [last seq, distinct received]
        self.disorder = 0
        self.closed_code: int | None = None
        self.closing = False


class Worker:
    def __init__(self, conf: Config) -> None:
        self.conf = conf
        self.binary = conf.format == "msgpack"
        self.subprotocol = SUBPROTOCOLS[conf.format]
        self.merchant = {"Authorization": f"Bearer {conf.api_key}"}
        self.http: Pool | None = None  # state changes and set-up
        self.poll_http: Pool | None = None  # poll mode's GETs
        self.customers: list[Customer] = []
        self.sessions: list[Tracked] = []  # every session this process made, retired or not
        self.owner: dict[str, Customer] = {}
        self.ready: deque[Tracked] = deque()
        self.inflight: set[asyncio.Task[None]] = set()
        self.background: set[asyncio.Task[None]] = set()
        self.admin_feeds: list[AdminFeed] = []
        self.driving = False
        self.stopping = False
        # Counters -----------------------------------------------------------
        self.create_errors: Counter[str] = Counter()
        self.opened: Counter[str] = Counter()  # initial, replacement, reconnect
        self.open_failed: Counter[str] = Counter()
        self.close_codes: Counter[str] = Counter()
        self.reconnects = 0
        self.replaced = 0
        self.types: Counter[str] = Counter()
        self.latency = array("d")  # ms, state change (message ts) to receipt
        self.admin_latency = array("d")
        self.http_ms = array("d")
        self.sent = 0
        self.ok = 0
        self.conflicts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.skipped_busy = 0
        self.skipped_idle = 0
        self.late = 0
        self.max_lag = 0.0
        self.scheduled = 0
        self.polls = 0
        self.poll_errors: Counter[str] = Counter()
        self.polls_skipped = 0
        self.poll_delay = array("d")  # ms, poll answer time minus the session's updated_at
        self.phase_ms: dict[str, float] = {}
        self.drive_cpu: tuple[float, float] = (0.0, 0.0)
        self.held_at_end = 0
        self.peak_inflight = 0
        self.retired_closed = 0  # sockets the generator closed because their session ended
        self.open_files = raise_nofile()

    # Decoding ----------------------------------------------------------------

    def decode(self, raw: str | bytes) -> dict[str, Any]:
        if isinstance(raw, bytes):
            return msgpack.unpackb(raw, raw=False)  # type: ignore[no-any-return]
        return json.loads(raw)  # type: ignore[no-any-return]

    # Sessions ------------------------------------------------------------------

    async def create_session(self) -> Tracked | None:
        assert self.http is not None
        body = {
            "order_id": f"load-{self.conf.index}-{len(self.sessions)}",
            "amount": 1999,
            "currency": "EUR",
            "metadata": {"load": True},
        }
        try:
            status, data = await self.http.request("POST", "/api/sessions", body, self.merchant)
        except HttpFailure as exc:
            self.create_errors[exc.kind] += 1
            return None
        if status != 201:
            self.create_errors[str(status)] += 1
            return None
        session = Tracked(data)
        if self.conf.mode == "poll":
            # The page showed the new session when it loaded: seq 0 is seen, and
            # every later state has to be caught by a poll.
            session.base = session.last = 0
            session.seen.add(0)
            session.observed = True
        self.sessions.append(session)
        return session

    async def create_all(self) -> None:
        slots = asyncio.Semaphore(HTTP_SETUP_CONCURRENCY)

        async def one() -> None:
            async with slots:
                session = await self.create_session()
            if session is not None:
                self.customers.append(Customer(session))

        await asyncio.gather(*(one() for _ in range(self.conf.sockets)))

    # Customer sockets ------------------------------------------------------------

    async def open_socket(
        self, customer: Customer, purpose: str = "initial", since: int | None = None
    ) -> bool:
        """Open the customer's socket and read its first message; counted under ``purpose``
        (initial, replacement or reconnect)."""
        session = customer.session
        url = f"{self.conf.ws_url}/ws/sessions/{session.id}?token={session.secret}"
        if since is not None and since >= 0:
            url += f"&since={since}"
        try:
            conn = await connect(
                url,
                subprotocols=[self.subprotocol],  # type: ignore[list-item]
                open_timeout=OPEN_TIMEOUT_S,
                ping_interval=None,  # the server pings; answering is automatic
                compression=None,
                max_size=2**20,
                close_timeout=2,
            )
        except InvalidStatus as exc:
            self.open_failed[f"{purpose}:http_{exc.response.status_code}"] += 1
            return False
        except Exception as exc:  # noqa: BLE001 - every failure is a counted outcome
            self.open_failed[f"{purpose}:{type(exc).__name__}"] += 1
            return False
        try:
            first = await asyncio.wait_for(conn.recv(), OPEN_TIMEOUT_S)
        except ConnectionClosed:
            self.open_failed[f"{purpose}:closed_{conn.close_code}"] += 1
            return False
        except Exception as exc:  # noqa: BLE001
            self.open_failed[f"{purpose}:{type(exc).__name__}"] += 1
            await conn.close()
            return False
        customer.conn = conn
        customer.closing = False
        session.observed = True
        self.on_message(session, first)
        self.opened[purpose] += 1
        customer.reader = asyncio.create_task(self.read(customer, conn))
        return True

    async def open_all(self) -> None:
        slots = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def one(customer: Customer) -> None:
            async with slots:
                opened = await self.open_socket(customer)
            if opened:
                self.owner[customer.session.id] = customer
                self.ready.append(customer.session)

        await asyncio.gather(*(one(c) for c in self.customers))

    def on_message(self, session: Tracked, raw: str | bytes) -> None:
        received = now_ms()
        message = self.decode(raw)
        kind = message.get("type")
        self.types[str(kind)] += 1
        if kind in DURABLE:
            seq = int(message["seq"])
            self.latency.append(received - float(message.get("ts") or 0))
            if session.base is None:
                session.base = seq - 1  # a replay with no snapshot before it
            if seq <= session.last:
                session.disorder += 1  # a duplicate, or out of order: never allowed
                return
            if session.last >= 0 and seq > session.last + 1:
                session.gaps += seq - session.last - 1
            session.last = seq
            session.seen.add(seq)
            if session.waiter is not None and seq >= session.target:
                session.waiter.set()
        elif kind == "snapshot":
            seq = int(message["seq"])
            if session.base is None:
                session.base = seq
            # A snapshot after a resync stands for the events it skipped; they
            # stay unreceived, so they count as lost below.
            session.last = max(session.last, seq)
            if session.waiter is not None and seq >= session.target:
                session.waiter.set()

    async def read(self, customer: Customer, conn: ClientConnection) -> None:
        session = customer.session
        try:
            async for raw in conn:
                self.on_message(session, raw)
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - counted, then treated as a close
            self.close_codes[f"reader_{type(exc).__name__}"] += 1
        if customer.closing or self.stopping or customer.conn is not conn:
            return
        # The server (or the network) closed it: count it, then come back with
        # `since` as a page would, a bounded number of times.
        self.close_codes[str(conn.close_code)] += 1
        customer.conn = None
        if customer.reconnects >= MAX_RECONNECTS or session.retired:
            return
        customer.reconnects += 1
        self.reconnects += 1
        await asyncio.sleep(0.2 * customer.reconnects)
        if not self.stopping and not customer.closing:
            await self.open_socket(customer, "reconnect", since=session.last)

    async def close_customer(self, customer: Customer) -> None:
        customer.closing = True
        conn, reader = customer.conn, customer.reader
        customer.conn = None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 3)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        if reader is not None:
            reader.cancel()

    async def wait_caught_up(self, session: Tracked, target: int, timeout: float) -> None:
        if session.last >= target:
            return
        session.target = target
        session.waiter = asyncio.Event()
        try:
            await asyncio.wait_for(session.waiter.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            session.waiter = None

    # Admin feeds -------------------------------------------------------------------

    async def open_admins(self) -> None:
        token = self.conf.admin_token or ""
        for _ in range(self.conf.admins):
            try:
                conn = await connect(
                    f"{self.conf.ws_url}/ws/admin?token={token}",
                    subprotocols=[self.subprotocol],  # type: ignore[list-item]
                    open_timeout=OPEN_TIMEOUT_S,
                    ping_interval=None,
                    compression=None,
                    max_size=2**24,
                    close_timeout=2,
                )
                feed = AdminFeed(conn)
                self.on_admin(feed, await asyncio.wait_for(conn.recv(), OPEN_TIMEOUT_S))
            except InvalidStatus as exc:
                self.open_failed[f"admin_http_{exc.response.status_code}"] += 1
                continue
            except ConnectionClosed as exc:
                self.open_failed[f"admin_closed_{exc.rcvd.code if exc.rcvd else None}"] += 1
                continue
            except Exception as exc:  # noqa: BLE001
                self.open_failed[f"admin_{type(exc).__name__}"] += 1
                continue
            feed.reader = asyncio.create_task(self.read_admin(feed))
            self.admin_feeds.append(feed)

    def on_admin(self, feed: AdminFeed, raw: str | bytes) -> None:
        received = now_ms()
        message = self.decode(raw)
        kind = str(message.get("type"))
        feed.types[kind] += 1
        if kind not in DURABLE:
            return
        self.admin_latency.append(received - float(message.get("ts") or 0))
        seq = int(message["seq"])
        entry = feed.per_session.setdefault(str(message["session"]), [0, 0])
        if seq <= entry[0]:
            feed.disorder += 1
            return
        entry[0] = seq
        entry[1] += 1

    async def read_admin(self, feed: AdminFeed) -> None:
        try:
            async for raw in feed.conn:
                self.on_admin(feed, raw)
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001
            self.close_codes[f"admin_reader_{type(exc).__name__}"] += 1
        if not feed.closing and not self.stopping:
            feed.closed_code = feed.conn.close_code
            self.close_codes[f"admin_{feed.conn.close_code}"] += 1

    # The driver -------------------------------------------------------------------------

    async def drive(self, start_wall: float) -> None:
        """Fire ``rate * duration`` commands at their scheduled times (open loop)."""
        loop = asyncio.get_running_loop()
        t0 = loop.time() + (start_wall - time.time())
        if t0 > loop.time():
            await asyncio.sleep(t0 - loop.time())
        cpu0 = cpu_seconds()
        self.driving = True
        total = int(round(self.conf.rate * self.conf.duration))
        self.scheduled = total
        interval = 1.0 / self.conf.rate if self.conf.rate > 0 else 0.0
        k = 0
        end = t0 + self.conf.duration
        while k < total:
            now = loop.time()
            if now > end + 1.0:
                # Hopelessly behind (a starved process): what is left is not sent.
                self.skipped_busy += total - k
                break
            due = t0 + k * interval
            if due > now:
                await asyncio.sleep(due - now)
                continue
            # Everything due by now goes out now: a late loop catches up rather
            # than slowing the schedule down (that would hide the server's delay).
            while k < total and t0 + k * interval <= now:
                lag = now - (t0 + k * interval)
                self.max_lag = max(self.max_lag, lag)
                if lag > 0.1:
                    self.late += 1
                self.fire()
                k += 1
        if end > loop.time():
            await asyncio.sleep(end - loop.time())
        self.driving = False
        cpu1 = cpu_seconds()
        self.drive_cpu = (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])

    def fire(self) -> None:
        if len(self.inflight) >= self.conf.concurrency:
            self.skipped_busy += 1
            return
        session = self.pick()
        if session is None:
            self.skipped_idle += 1
            return
        self.spawn(self.command(session), self.inflight)
        self.peak_inflight = max(self.peak_inflight, len(self.inflight))

    def pick(self) -> Tracked | None:
        """The next idle session whose next command is allowed now (round robin)."""
        now = now_ms()
        for _ in range(min(len(self.ready), 16)):
            session = self.ready.popleft()
            if session.status == "interrupted" and session.retry_at and session.retry_at > now:
                self.ready.append(session)
                continue
            return session
        return None

    async def command(self, session: Tracked) -> None:
        assert self.http is not None
        body: dict[str, Any]
        if session.status == "processing":
            path, body = "interrupt", {"reason": "network_error"}
        elif session.status in ("created", "interrupted"):
            path, body = "attempts", {"payment_method": {"card": NEVER_ANSWERS}}
        else:
            self.after(session)
            return
        self.sent += 1
        started = time.perf_counter()
        try:
            status, data = await self.http.request(
                "POST", f"/api/sessions/{session.id}/{path}", body, self.merchant
            )
        except HttpFailure as exc:
            self.errors[exc.kind] += 1
            session.strikes += 1
            self.after(session)
            return
        self.http_ms.append((time.perf_counter() - started) * 1000)
        if status in (200, 202):
            self.ok += 1
            session.strikes = 0
            session.apply(data)
        elif status == 409:
            error = data.get("error") or {}
            self.conflicts[str(error.get("code"))] += 1
            session.strikes += 1
            if isinstance(data.get("session"), dict):
                session.apply(data["session"])
        else:
            self.errors[str(status)] += 1
            session.strikes += 1
        self.after(session)

    def after(self, session: Tracked) -> None:
        if session.status in TERMINAL or session.strikes >= MAX_STRIKES:
            self.spawn(self.retire(session), self.background)
        else:
            self.ready.append(session)

    async def retire(self, session: Tracked) -> None:
        """A finished session makes way for a fresh one on the same customer."""
        session.retired = True
        customer = self.owner.get(session.id)
        if customer is None:
            return
        if self.conf.mode == "ws":
            await self.wait_caught_up(session, session.seq, 3.0)
            await self.close_customer(customer)
            self.retired_closed += 1
        if not self.driving or self.replaced >= self.conf.max_replacements:
            return
        fresh = await self.create_session()
        if fresh is None:
            return
        self.replaced += 1
        self.owner[fresh.id] = customer
        if self.conf.mode == "ws":
            customer.session = fresh
            customer.reconnects = 0
            if await self.open_socket(customer, "replacement"):
                self.ready.append(fresh)
        else:
            # The poller shows the retired session's last state once more, then
            # switches (and only then is the new session driven).
            customer.next_session = fresh

    def spawn(self, coro: Any, into: set[asyncio.Task[None]]) -> None:
        task = asyncio.ensure_future(coro)
        into.add(task)
        task.add_done_callback(into.discard)

    # Polling baseline ----------------------------------------------------------------------

    async def poll_client(self, customer: Customer, first_at: float, stop_at: float) -> None:
        loop = asyncio.get_running_loop()
        interval = self.conf.poll_interval
        next_at = first_at
        while next_at < stop_at:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            session = customer.session
            await self.poll_once(session)
            if session.retired and customer.next_session is not None:
                customer.session, customer.next_session = customer.next_session, None
                if self.driving:
                    self.ready.append(customer.session)
            next_at += interval
            # A poller that fell behind skips the rounds it missed, like a page
            # that polls again only after its last answer.
            while next_at < loop.time() and next_at < stop_at:
                next_at += interval
                self.polls_skipped += 1

    async def poll_once(self, session: Tracked) -> None:
        assert self.poll_http is not None
        self.polls += 1
        try:
            # The page's own credential: a customer GET, as the old checkout polled.
            status, body = await self.poll_http.request(
                "GET",
                f"/api/sessions/{session.id}",
                None,
                {"Authorization": f"Bearer {session.secret}"},
            )
        except HttpFailure as exc:
            self.poll_errors[exc.kind] += 1
            return
        received = now_ms()
        if status != 200:
            self.poll_errors[str(status)] += 1
            return
        seq = int(body["seq"])
        session.observed = True
        if seq > session.last:
            session.missed += seq - session.last - 1
            session.last = seq
            session.seen.add(seq)
            self.poll_delay.append(received - float(body["updated_at"]))

    async def run_pollers(self, start_wall: float) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + (start_wall - time.time())
        # Poll one interval past the drive so every last state can be seen.
        stop_at = t0 + self.conf.duration + self.conf.poll_interval
        n = max(1, len(self.customers))
        for customer in self.customers:
            self.owner[customer.session.id] = customer
        await asyncio.gather(
            *(
                self.poll_client(c, t0 + self.conf.poll_interval * i / n, stop_at)
                for i, c in enumerate(self.customers)
            )
        )

    # After the drive --------------------------------------------------------------------------

    async def settle(self) -> None:
        if self.inflight:
            await asyncio.wait(set(self.inflight), timeout=SETTLE_TIMEOUT_S)
        if self.background:
            await asyncio.wait(set(self.background), timeout=SETTLE_TIMEOUT_S)

    async def fetch_finals(self) -> None:
        """The server's own seq for every session: the number of events it sent."""
        http = self.http
        assert http is not None
        slots = asyncio.Semaphore(HTTP_SETUP_CONCURRENCY)

        async def one(session: Tracked) -> None:
            async with slots:
                try:
                    status, data = await http.request(
                        "GET", f"/api/sessions/{session.id}", None, self.merchant
                    )
                except HttpFailure as exc:
                    self.errors[f"final_{exc.kind}"] += 1
                    return
            if status == 200:
                session.final = int(data["seq"])
            else:
                self.errors[f"final_{status}"] += 1

        await asyncio.gather(*(one(s) for s in self.sessions if s.observed))

    async def drain(self) -> None:
        """Give the sockets ``drain`` seconds to receive what the server says it sent."""
        behind = [
            s
            for s in self.sessions
            if s.observed and not s.retired and s.final is not None and s.last < s.final
        ]
        if behind:
            await asyncio.wait(
                [
                    asyncio.ensure_future(self.wait_caught_up(s, s.final or 0, self.conf.drain))
                    for s in behind
                ],
                timeout=self.conf.drain + 1,
            )

    async def close_all(self) -> None:
        if self.stopping:
            return  # once: the second call (from the final cleanup) finds nothing open
        self.stopping = True
        held = sum(1 for c in self.customers if c.conn is not None)
        await asyncio.gather(
            *(self.close_customer(c) for c in self.customers if c.conn is not None)
        )
        for feed in self.admin_feeds:
            feed.closing = True
            try:
                await asyncio.wait_for(feed.conn.close(), 3)
            except Exception:  # noqa: BLE001
                pass
            if feed.reader is not None:
                feed.reader.cancel()
        self.held_at_end = held

    # The report ----------------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        sent = received = lost = extra = gaps = disorder = missed = 0
        states = unobserved = 0
        counted = 0
        for s in self.sessions:
            if not s.observed or s.final is None or s.base is None:
                continue
            counted += 1
            owed = max(0, s.final - s.base)
            got = sum(1 for seq in s.seen if s.base < seq <= s.final)
            sent += owed
            received += got
            lost += owed - got
            extra += sum(1 for seq in s.seen if seq > s.final)
            gaps += s.gaps
            disorder += s.disorder
            missed += s.missed
            reached = {seq for seq in s.states if seq > s.base}
            states += len(reached)
            unobserved += len(reached - s.seen)
        user, system = cpu_seconds()
        out: dict[str, Any] = {
            "index": self.conf.index,
            "open_files": self.open_files,
            "phase_ms": self.phase_ms,
            "sessions": {
                "created": len(self.sessions),
                "create_errors": dict(self.create_errors),
                "counted": counted,
            },
            "sockets": {
                "opened": self.opened["initial"],
                "replacements_opened": self.opened["replacement"],
                "reconnected": self.opened["reconnect"],
                "failures": dict(self.open_failed),
                "closed_unexpectedly": sum(
                    v for k, v in self.close_codes.items() if not k.startswith("admin")
                ),
                "close_codes": dict(self.close_codes),
                "reconnects": self.reconnects,
                "replaced": self.replaced,
                "held_at_end": self.held_at_end,
                "closed_after_session_end": self.retired_closed,
            },
            "changes": {
                "scheduled": self.scheduled,
                "sent": self.sent,
                "ok": self.ok,
                "conflicts": dict(self.conflicts),
                "errors": dict(self.errors),
                "skipped_busy": self.skipped_busy,
                "skipped_no_session": self.skipped_idle,
                "late_100ms": self.late,
                "peak_in_flight": self.peak_inflight,
                "max_lag_ms": round(self.max_lag * 1000, 1),
                "http_ms": [round(x, 2) for x in self.http_ms],
            },
            "events": {
                "sent": sent,
                "received": received,
                "lost": lost,
                "extra": extra,
                "gaps": gaps,
                "out_of_order": disorder,
                "by_type": dict(self.types),
                "states": states,
                "states_unobserved": unobserved,
                "seq_jumps_missed": missed,
            },
            "latency_ms": [round(x, 2) for x in self.latency],
            "cpu": {
                "user_s": user,
                "sys_s": system,
                "drive_user_s": self.drive_cpu[0],
                "drive_sys_s": self.drive_cpu[1],
            },
        }
        if self.conf.mode == "poll":
            out["poll"] = {
                "clients": len(self.customers),
                "polls": self.polls,
                "errors": dict(self.poll_errors),
                "skipped_rounds": self.polls_skipped,
                "delay_ms": [round(x, 1) for x in self.poll_delay],
            }
        if self.admin_feeds or self.conf.admins:
            out["admin"] = {
                "requested": self.conf.admins,
                "opened": len(self.admin_feeds),
                "feeds": [
                    {
                        "types": dict(f.types),
                        "out_of_order": f.disorder,
                        "closed_code": f.closed_code,
                        "received": {sid: e[1] for sid, e in f.per_session.items()},
                    }
                    for f in self.admin_feeds
                ],
                "latency_ms": [round(x, 2) for x in self.admin_latency],
            }
        if self.conf.report_finals:
            out["finals"] = {s.id: s.final for s in self.sessions if s.final is not None}
        return out


# The control loop: one JSON line per phase ------------------------------------------------------


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def next_command() -> dict[str, Any]:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        return {"cmd": "abort"}
    return json.loads(line)  # type: ignore[no-any-return]


async def serve(conf: Config) -> None:
    worker = Worker(conf)
    worker.http = make_pool(
        conf.http_client, conf.base_url, max(conf.concurrency, HTTP_SETUP_CONCURRENCY)
    )
    worker.poll_http = make_pool(
        conf.http_client, conf.base_url, conf.poll_connections if conf.mode == "poll" else 1
    )
    try:
        await run_phases(worker)
    finally:
        await worker.close_all()
        await worker.http.aclose()
        await worker.poll_http.aclose()


async def run_phases(worker: Worker) -> None:
    conf = worker.conf
    emit({"phase": "ready", "open_files": worker.open_files})
    while True:
        command = await next_command()
        name = command.get("cmd")
        started = time.perf_counter()
        if name == "admins":
            await worker.open_admins()
            emit({"phase": "admins", "opened": len(worker.admin_feeds)})
        elif name == "create":
            await worker.create_all()
            emit(
                {
                    "phase": "create",
                    "created": len(worker.customers),
                    "errors": dict(worker.create_errors),
                }
            )
        elif name == "open":
            if conf.mode == "ws":
                await worker.open_all()
            emit(
                {
                    "phase": "open",
                    "opened": worker.opened["initial"],
                    "failures": dict(worker.open_failed),
                }
            )
        elif name == "go":
            start = float(command["start"])
            pollers = None
            if conf.mode == "poll":
                pollers = asyncio.ensure_future(worker.run_pollers(start))
                worker.ready.extend(c.session for c in worker.customers)
            await worker.drive(start)
            emit({"phase": "drove"})
            await worker.settle()
            if pollers is not None:
                await asyncio.wait([pollers], timeout=conf.poll_interval + SETTLE_TIMEOUT_S)
                pollers.cancel()
            await worker.fetch_finals()
            await worker.drain()
            await worker.close_all()
            worker.phase_ms["go"] = round((time.perf_counter() - started) * 1000, 1)
            emit({"phase": "done", "result": worker.result()})
            return
        else:  # "abort", or EOF: the parent is gone
            return
        worker.phase_ms[str(name)] = round((time.perf_counter() - started) * 1000, 1)


def main() -> int:
    line = sys.stdin.readline()
    if not line:
        return 1
    conf = Config.from_dict(json.loads(line))
    asyncio.run(serve(conf))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
