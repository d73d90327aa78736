"""The WebSocket endpoints of docs/protocol.md section 4: the customer channel and the
admin feed. Each socket is a reader (this coroutine) and, while it has something to
send, a writer task draining its bounded queue; everything else is the hub's."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.websockets import WebSocket

from .. import metrics
from ..core.codec import JSON, MSGPACK, SUBPROTOCOLS, DecodeError, Encoded, Message, decode_frame
from ..core.machine import Cancel, Command, Interrupt, SeeOutcome, StartAttempt
from ..core.protocol import CloseCode, ErrorCode
from ..engine import EngineUnavailable
from ..errors import Refused
from ..fanout.hub import Subscriber, snapshot_message
from ..runtime import Runtime
from ..service.idempotency import Answer, request_digest, valid_key
from ..telemetry import context, tracing
from . import observe, validation
from .auth import ADMIN, CUSTOMER, Principal
from .errors import ENGINE_DOWN, close_code
from .http import answer, kept
from .tickets import Admit, Opening, opening_of

log = logging.getLogger("paylive.sockets")

ADMIN_QUEUE_FACTOR = 16
# A close reason is at most 123 bytes of UTF-8 (RFC 6455): longer ones are cut.
MAX_REASON_BYTES = 123
# A closing socket's last messages get this long to go out.
FLUSH_TIMEOUT_S = 2.0

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def origin_allowed(
    origin: str | None, host_header: str | None, allowed: tuple[str, ...] | None
) -> bool:
    """docs/protocol.md: the allow-list, or (unset) the same origin and localhost only.
    A client that sends no Origin is not a browser, and CSRF-style abuse needs one."""
    if origin is None:
        return True
    origin = origin.rstrip("/").lower()
    if allowed is not None:
        return "*" in allowed or origin in {o.rstrip("/").lower() for o in allowed}
    try:
        parts = urlsplit(origin)
        hostname = parts.hostname
    except ValueError:
        return False
    if hostname in _LOCAL_HOSTS:
        return True
    return bool(host_header) and parts.netloc == (host_header or "").lower()


def choose_subprotocol(offered: list[str]) -> str | None:
    """msgpack when asked for, else JSON; None when only unknown ones are offered."""
    if not offered:
        return JSON
    if MSGPACK in offered:
        return MSGPACK
    if JSON in offered:
        return JSON
    return None


def close_reason(text: str) -> str:
    return text.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


async def _refuse(ws: WebSocket, refusal: Refused, codec: str | None = None) -> None:
    # Accept first: a close before the handshake completes reaches the client as
    # HTTP 403, and the protocol promises close codes.
    await ws.accept(
        subprotocol=accepted_subprotocol(ws, codec) if codec else None, headers=_echoed()
    )
    await ws.close(code=close_code(refusal.code), reason=close_reason(refusal.message))


def _echoed() -> list[tuple[bytes, bytes]]:
    """The handshake's answer names its request id (and the trace it continues)."""
    request_id = context.request_id.get()
    if request_id is None:
        return []
    return observe.response_headers(request_id)


def _make_subscriber(
    ws: WebSocket, kind: str, subprotocol: str, runtime: Runtime, staff: bool = False
) -> Subscriber:
    async def send(frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_text(frame)

    async def close(code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await ws.close(code=code, reason=close_reason(reason))

    size = runtime.settings.send_queue_size
    if kind == "admin":
        # An admin feed carries every session's events: a burst (a batch of expiries,
        # a sale starting) is many times what one checkout socket ever queues.
        size *= ADMIN_QUEUE_FACTOR
    return Subscriber(kind, subprotocol, size, send, close, staff)


def accepted_subprotocol(ws: WebSocket, codec: str) -> str | None:
    """The subprotocol header to answer with: none when the client offered none."""
    return codec if ws.scope.get("subprotocols") else None


async def _handshake(ws: WebSocket, runtime: Runtime) -> str | None:
    """Origin and subprotocol checks; the codec to speak, or None after a refusal."""
    offered = list(ws.scope.get("subprotocols") or [])
    subprotocol = choose_subprotocol(offered)
    if runtime.draining:
        # This worker is stopping: come back (to another one) after the hint.
        await ws.accept(subprotocol=accepted_subprotocol(ws, subprotocol) if subprotocol else None)
        await ws.close(code=CloseCode.SERVICE_RESTART, reason=runtime.restart_reason)
        return None
    if not origin_allowed(
        ws.headers.get("origin"), ws.headers.get("host"), runtime.settings.allowed_origins
    ):
        await _refuse(ws, Refused(ErrorCode.ORIGIN_NOT_ALLOWED, "origin not allowed"))
        return None
    if subprotocol is None:
        message = f"unsupported subprotocol; use one of {list(SUBPROTOCOLS)}"
        await _refuse(ws, Refused(ErrorCode.INVALID_FIELD, message))
        return None
    repeated = validation.repeated_parameter(ws.scope.get("query_string", b""))
    if repeated is not None:  # since=1&since=5: which one did the client mean?
        await _refuse(ws, repeated, subprotocol)
        return None
    return subprotocol


def _reply(
    kind: str, data: dict[str, Any], session: str | None, seq: int | None, now: int
) -> Encoded:
    return Encoded.of(Message(kind, data, session, seq, now))


async def customer_socket(ws: WebSocket) -> None:
    runtime: Runtime = ws.app.state.runtime
    session_id: str = ws.path_params["session_id"]
    subprotocol = await _handshake(ws, runtime)
    if subprotocol is None:
        return

    def admit(principal: Principal) -> None:
        # Before a ticket is spent: a refusal here leaves it usable (see tickets.Opening).
        if principal.kind not in (CUSTOMER, ADMIN) or not principal.may_open(session_id):
            raise Refused(ErrorCode.UNAUTHORIZED, "missing or bad token")
        validation.parse_since(ws.query_params.get("since"))

    opening = await _opening(ws, runtime, subprotocol, admit)
    if opening is None:
        return
    since = validation.parse_since(ws.query_params.get("since"))
    # Held from the check on, in the same step: the opens awaiting their handshake or
    # their ticket meanwhile count against the cap.
    cap = runtime.settings.max_sockets_per_session
    place = runtime.hub.hold(session_id, cap)
    if place is None:
        message = f"at most {cap} sockets per session: close another one first"
        await _refuse(ws, Refused(ErrorCode.TOO_MANY_SOCKETS, message), subprotocol)
        return
    # Staff watching one session see it whole; commands are the customer's and the
    # merchant's.
    watching = opening.principal.kind == ADMIN
    subscriber = _make_subscriber(ws, "customer", subprotocol, runtime, staff=watching)
    address = ws.client.host if ws.client else None
    try:
        await ws.accept(subprotocol=accepted_subprotocol(ws, subprotocol), headers=_echoed())
        await runtime.hub.join(session_id, subscriber, place)
        if not await catch_up(runtime, subscriber, session_id, since, opening):
            subscriber.kill(CloseCode.UNKNOWN_SESSION, "unknown session")
        async for frame in _frames(ws, runtime, subscriber, subprotocol):
            await _traced(runtime, subscriber, session_id, frame, watching, address)
    except Refused as exc:  # its ticket, used already
        subscriber.kill(close_code(exc.code), exc.message)
    except EngineUnavailable:
        subscriber.kill(close_code(ENGINE_DOWN.code), ENGINE_DOWN.message)
    finally:
        place.release()
        await runtime.hub.leave(session_id, subscriber)
        await subscriber.flush(FLUSH_TIMEOUT_S)


async def _opening(
    ws: WebSocket, runtime: Runtime, subprotocol: str, admit: Admit | None = None
) -> Opening | None:
    """Who opens the socket (a ticket, not spent yet, or a token in the URL), once
    ``admit`` let it through, or a refusal sent."""
    try:
        opening = opening_of(runtime, ws.query_params, None, admit)
    except Refused as exc:
        await _refuse(ws, exc, subprotocol)
        return None
    if opening is None:
        await _refuse(ws, Refused(ErrorCode.UNAUTHORIZED, "missing or bad token"), subprotocol)
    return opening


async def catch_up(
    runtime: Runtime,
    subscriber: Subscriber,
    session_id: str,
    since: int | None,
    opening: Opening | None = None,
) -> bool:
    """Replay from ``since`` when every later event is still held (and fits the send
    queue), else a snapshot; False for an unknown session. The subscriber is already
    joined, so what happens meanwhile is held, not lost. Sockets and event streams
    start the same way. ``opening``'s ticket is spent once the session is found and
    before anything is sent: a 404 or an engine down leaves it good, and a ticket used
    already (Refused) is sent nothing."""
    start = await runtime.reads.catch_up(session_id, since)
    if start is None:
        return False
    if opening is not None:
        await opening.spend()
    runtime.hub.learn(start.session)
    # A replay longer than half the send queue would fill it before the socket sends
    # anything and close it 1013, and the client would reconnect with the same
    # ``since`` for ever: a snapshot says the same in one message.
    if start.replay is None or len(start.replay) > runtime.settings.send_queue_size // 2:
        subscriber.push(snapshot_message(start.session, runtime.clock()))
        gap = subscriber.begin(start.session.seq)
    else:
        last = since if since is not None else 0
        for event in start.replay:
            subscriber.push(event)
            last = event.seq or last
        gap = subscriber.begin(last)
    if gap:
        runtime.hub.request_fill(session_id)
    return True


def read_frame(
    message: Mapping[str, Any], subprotocol: str, limit: int, max_depth: int
) -> dict[str, Any] | Refused:
    """One received ASGI message as a client frame: the map, or a refusal to answer
    (a value JSON cannot carry, such as ``NaN``). Raises Refused for a frame that ends
    the socket: too big (``body_too_large``, 1009) or not a map in the socket's
    encoding (``invalid_json``, 1008)."""
    text: str | None = message.get("text")
    data: bytes | None = message.get("bytes")
    size = len(text.encode(errors="surrogatepass")) if text is not None else len(data or b"")
    if size > limit:
        raise Refused(ErrorCode.BODY_TOO_LARGE, f"messages may be at most {limit} bytes")
    try:
        return decode_frame(subprotocol, text, data, max_depth)
    except DecodeError as exc:
        raise Refused(ErrorCode.INVALID_JSON, str(exc)) from None
    except Refused as exc:
        return exc


async def _frames(
    ws: WebSocket, runtime: Runtime, subscriber: Subscriber, subprotocol: str
) -> AsyncIterator[dict[str, Any] | Refused]:
    """The client's frames (``read_frame``) until it goes or sends one that ends it."""
    settings = runtime.settings
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            frame = read_frame(
                message, subprotocol, settings.max_message_bytes, settings.max_json_depth
            )
        except Refused as exc:
            subscriber.kill(close_code(exc.code), exc.message)
            return
        yield frame


def _ref(frame: dict[str, Any]) -> str | int | None:
    ref = frame.get("ref")
    if ref is None or (isinstance(ref, str) and len(ref) <= 64):
        return ref
    if isinstance(ref, int) and not isinstance(ref, bool) and abs(ref) < 2**53:
        return ref
    raise validation.invalid("ref", "must be a string of at most 64 characters or an integer")


@dataclass(frozen=True)
class Check:
    """``check``: ask the provider about the attempt in flight now (after 3-D Secure)."""


def parse_command(
    frame: dict[str, Any], gateway: str = "sandbox", asked: str | None = None
) -> Command | Check | None:
    """The machine command for a client frame; None for ``ping``. ``asked`` names a
    keyed request (``request_digest``), as the HTTP routes give it. Raises Refused."""
    kind = frame.get("type")
    allowed = {"type", "ref"}
    command: Command | Check | None
    if kind == "ping":
        command = None
    elif kind == "pay":
        allowed.add("payment_method")
        method = validation.parse_payment_method(frame.get("payment_method"), True, gateway)
        command = StartAttempt(method, asked)
    elif kind == "retry":
        allowed.add("payment_method")
        method = validation.parse_payment_method(frame.get("payment_method"), False, gateway)
        command = StartAttempt(method, asked)
    elif kind == "check":
        command = Check()
    elif kind == "seen":
        allowed.add("status")
        command = SeeOutcome(validation.parse_seen({"status": frame.get("status")}), asked)
    elif kind == "cancel":
        command = Cancel(asked)
    elif kind == "interrupt":
        allowed.add("reason")
        command = Interrupt(
            validation.parse_interrupt({"reason": frame.get("reason", "network_error")}), asked
        )
    else:
        shown = repr(kind)[:40] if isinstance(kind, str) else "missing or not a string"
        raise Refused(ErrorCode.UNKNOWN_COMMAND, f"unknown command type {shown}")
    if kind != "ping":
        allowed.add("key")
    extra = sorted(set(frame) - allowed)
    if extra:
        raise validation.invalid(extra[0][:64], "is not a field of this command")
    return command


# The HTTP route (under /api/sessions/{id}/) of each command frame, and its success
# status there: a keyed frame is that route's request (protocol 4, v1.2).
_ROUTES: dict[str, tuple[str, int]] = {
    "pay": ("attempts", 202),
    "retry": ("attempts", 202),
    "cancel": ("cancel", 200),
    "interrupt": ("interrupt", 200),
    "check": ("check", 200),
    "seen": ("seen", 200),
}
_FRAME_ONLY = frozenset({"type", "ref", "key"})


def frame_key(frame: dict[str, Any]) -> str | None:
    """A command frame's ``key``, by the Idempotency-Key header's rules; None without one."""
    if "key" not in frame:
        return None
    key = frame["key"]
    if not valid_key(key):
        raise validation.invalid("key", "must be a string of 1 to 255 printable characters")
    return str(key)


def frame_body(frame: dict[str, Any]) -> dict[str, Any]:
    """The body the command's HTTP route would read: the frame's own fields, so that the
    same request sent there under the same key is known as the same."""
    return {name: value for name, value in frame.items() if name not in _FRAME_ONLY}


_COMMAND_TYPES = frozenset({"pay", "retry", "check", "cancel", "interrupt", "seen"})


async def _traced(
    runtime: Runtime,
    subscriber: Subscriber,
    session_id: str,
    frame: dict[str, Any] | Refused,
    watching: bool,
    address: str | None = None,
) -> None:
    """``_command`` in a span of its own, timed (a ping is neither: it is most frames)."""
    kind = frame.get("type") if isinstance(frame, dict) else None
    if kind == "ping":
        await _command(runtime, subscriber, session_id, frame, watching, address)
        return
    name = kind if isinstance(kind, str) and kind in _COMMAND_TYPES else "invalid"
    started = time.perf_counter()
    with tracing.span(f"socket {name}", kind="server", attributes={"paylive.command": name}):
        await _command(runtime, subscriber, session_id, frame, watching, address)
    metrics.socket_command(name, time.perf_counter() - started)


async def _command(
    runtime: Runtime,
    subscriber: Subscriber,
    session_id: str,
    frame: dict[str, Any] | Refused,
    watching: bool,
    address: str | None = None,
) -> None:
    seq = subscriber.last_seq if subscriber.last_seq >= 0 else None
    ref: str | int | None = None
    try:
        if isinstance(frame, Refused):
            raise frame
        ref = _ref(frame)
        # A keyed frame's fields are checked inside its request, as its route checks a
        # body: a refusal of them is the key's answer.
        key = frame_key(frame) if frame.get("type") in _ROUTES else None
        command = None if key is not None else parse_command(frame, runtime.settings.gateway)
        if command is None and key is None:
            subscriber.push(_reply("pong", {}, session_id, seq, runtime.clock()))
            return
        if watching:
            raise Refused(ErrorCode.FORBIDDEN, "an admin token watches this session: no commands")
        if not runtime.limiter.take(session_id):
            raise Refused(ErrorCode.RATE_LIMITED, "too many commands for this session; slow down")
        turned_away = runtime.admission.enter(session_id, address)
        if turned_away is not None:
            raise turned_away
        try:
            if key is not None or command is None:  # None here: keyed, parsed inside
                await _keyed(runtime, subscriber, session_id, frame, key, ref)
                return
            if isinstance(command, Check):
                session = await runtime.service.check(session_id)
                if ref is not None:
                    subscriber.push(
                        _reply("ack", {"ref": ref}, session_id, session.seq, runtime.clock())
                    )
                return
            outcome = await runtime.service.run(session_id, command)
        finally:
            runtime.admission.leave(session_id, address)
    except Refused as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            # The session is gone from the store since this socket opened.
            subscriber.kill(close_code(exc.code), exc.message)
            return
        _error(runtime, subscriber, session_id, seq, exc.code, exc.message, ref)
        return
    except EngineUnavailable:
        _error(runtime, subscriber, session_id, seq, ENGINE_DOWN.code, ENGINE_DOWN.message, ref)
        return
    refusal = outcome.decision.refusal
    if refusal is not None:
        _error(
            runtime, subscriber, session_id, outcome.session.seq, refusal.code, refusal.message, ref
        )
    elif ref is not None:
        subscriber.push(
            _reply("ack", {"ref": ref}, session_id, outcome.session.seq, runtime.clock())
        )


async def _keyed(
    runtime: Runtime,
    subscriber: Subscriber,
    session_id: str,
    frame: dict[str, Any],
    key: str | None,
    ref: str | int | None,
) -> None:
    """A keyed command frame, run as its HTTP route runs a request with this
    Idempotency-Key: the same store, scope, body and kept answer (``http.kept``), so
    the same request sent again on any socket or over HTTP is answered with what it
    did. The kept answer is sent as the ack or error the first got, with this ref."""
    route, status = _ROUTES[str(frame["type"])]
    body = frame_body(frame)

    async def handler() -> Answer:
        # Decided inside, as the route decides it: a refusal is kept for the key.
        command = parse_command(frame, runtime.settings.gateway, request_digest(key, body))
        if isinstance(command, Check):
            return 200, (await runtime.service.check(session_id)).to_public()
        assert command is not None  # a ping has no route
        return answer(await runtime.service.run(session_id, command), status)

    scope = f"POST /api/sessions/{session_id}/{route}"
    code, payload = await runtime.idempotency.run_once(scope, key, body, kept(handler))
    # A kept answer holds the session as it was then: the frame says the seq of now.
    shown = payload.get("session") if code >= 400 else payload
    seqs = [subscriber.last_seq]
    if isinstance(shown, dict) and isinstance(shown.get("seq"), int):
        seqs.append(shown["seq"])
    seq = max(seqs) if max(seqs) >= 0 else None
    if code < 400:
        if ref is not None:
            subscriber.push(_reply("ack", {"ref": ref}, session_id, seq, runtime.clock()))
        return
    error = payload["error"]
    _error(runtime, subscriber, session_id, seq, error["code"], error["message"], ref)


def _error(
    runtime: Runtime,
    subscriber: Subscriber,
    session_id: str | None,
    seq: int | None,
    code: str,
    message: str,
    ref: str | int | None,
) -> None:
    data: dict[str, Any] = {"code": str(code), "message": message}
    if ref is not None:
        data["ref"] = ref
    subscriber.push(_reply("error", data, session_id, seq, runtime.clock()))


async def admin_socket(ws: WebSocket) -> None:
    runtime: Runtime = ws.app.state.runtime
    subprotocol = await _handshake(ws, runtime)
    if subprotocol is None:
        return

    def admit(principal: Principal) -> None:
        # Before a ticket is spent: a customer's is refused and stays good.
        if principal.kind != ADMIN:
            raise Refused(ErrorCode.UNAUTHORIZED, "missing or bad admin token")

    opening = await _opening(ws, runtime, subprotocol, admit)
    if opening is None:
        return
    await ws.accept(subprotocol=accepted_subprotocol(ws, subprotocol), headers=_echoed())
    subscriber = _make_subscriber(ws, "admin", subprotocol, runtime)
    try:
        await runtime.hub.join_admin(subscriber)
        snapshot = await runtime.reads.admin_snapshot()
        # Spent once the engine answered, and before anything is sent.
        await opening.spend()
        subscriber.push(snapshot)
        subscriber.begin(0)
        async for frame in _frames(ws, runtime, subscriber, subprotocol):
            _admin_command(runtime, subscriber, frame)
    except Refused as exc:  # its ticket, used already
        subscriber.kill(close_code(exc.code), exc.message)
    except EngineUnavailable:
        subscriber.kill(close_code(ENGINE_DOWN.code), ENGINE_DOWN.message)
    finally:
        await runtime.hub.leave_admin(subscriber)
        await subscriber.flush(FLUSH_TIMEOUT_S)


def _admin_command(
    runtime: Runtime, subscriber: Subscriber, frame: dict[str, Any] | Refused
) -> None:
    if isinstance(frame, dict) and frame.get("type") == "ping":
        subscriber.push(_reply("pong", {}, None, None, runtime.clock()))
        return
    try:
        if isinstance(frame, Refused):
            raise frame
        ref = _ref(frame)
        refusal = Refused(
            ErrorCode.UNKNOWN_COMMAND, "the admin feed only takes ping; use the admin API"
        )
    except Refused as exc:
        ref, refusal = None, exc
    _error(runtime, subscriber, None, None, refusal.code, refusal.message, ref)
