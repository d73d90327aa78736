"""The WebSocket endpoints of docs/protocol.md section 4: the customer channel and the
admin feed. Each socket is a reader (this coroutine) and one writer task draining
its bounded queue; everything else is the hub's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..core.codec import JSON, MSGPACK, SUBPROTOCOLS, DecodeError, Encoded, Message, decode_frame
from ..core.machine import Cancel, Command, Interrupt, StartAttempt
from ..engine import EngineUnavailable
from ..errors import ApiError
from ..fanout.hub import Subscriber, snapshot_message
from ..runtime import Runtime
from . import validation
from .auth import ADMIN, CUSTOMER, principal_for

log = logging.getLogger("paylive.sockets")

CLOSE_BAD_TOKEN = 4401
CLOSE_ORIGIN = 4403
CLOSE_UNKNOWN = 4404
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013

ADMIN_QUEUE_FACTOR = 16

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
    parts = urlsplit(origin)
    if parts.hostname in _LOCAL_HOSTS:
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


async def _refuse(ws: WebSocket, code: int, reason: str, codec: str | None = None) -> None:
    # Accept first: a close before the handshake completes reaches the client as
    # HTTP 403, and the protocol promises close codes.
    await ws.accept(subprotocol=accepted_subprotocol(ws, codec) if codec else None)
    await ws.close(code=code, reason=reason)


def _make_subscriber(ws: WebSocket, kind: str, subprotocol: str, runtime: Runtime) -> Subscriber:
    async def send(frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_text(frame)

    async def close(code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await ws.close(code=code, reason=reason)

    size = runtime.settings.send_queue_size
    if kind == "admin":
        # An admin feed carries every session's events: a burst (a batch of expiries,
        # a sale starting) is many times what one checkout socket ever queues.
        size *= ADMIN_QUEUE_FACTOR
    return Subscriber(kind, subprotocol, size, send, close)


def accepted_subprotocol(ws: WebSocket, codec: str) -> str | None:
    """The subprotocol header to answer with: none when the client offered none."""
    return codec if ws.scope.get("subprotocols") else None


async def _handshake(ws: WebSocket, runtime: Runtime) -> str | None:
    """Origin and subprotocol checks; the codec to speak, or None after a refusal."""
    offered = list(ws.scope.get("subprotocols") or [])
    subprotocol = choose_subprotocol(offered)
    if not origin_allowed(
        ws.headers.get("origin"), ws.headers.get("host"), runtime.settings.allowed_origins
    ):
        await _refuse(ws, CLOSE_ORIGIN, "origin not allowed")
        return None
    if subprotocol is None:
        await _refuse(ws, CLOSE_POLICY, f"unsupported subprotocol; use one of {list(SUBPROTOCOLS)}")
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
    principal = principal_for(ws.query_params.get("token"), runtime.settings)
    if (
        principal is None
        or principal.kind not in (CUSTOMER, ADMIN)
        or not principal.may_open(session_id)
    ):
        await _refuse(ws, CLOSE_BAD_TOKEN, "missing or bad token", subprotocol)
        return
    try:
        since = validation.parse_since(ws.query_params.get("since"))
    except ApiError as exc:
        await _refuse(ws, CLOSE_POLICY, exc.message, subprotocol)
        return
    await ws.accept(subprotocol=accepted_subprotocol(ws, subprotocol))
    subscriber = _make_subscriber(ws, "customer", subprotocol, runtime)
    writer = asyncio.create_task(subscriber.run_writer())
    try:
        await runtime.hub.join(session_id, subscriber)
        await _catch_up(runtime, subscriber, session_id, since)
        async for frame in _frames(ws, runtime, subscriber, subprotocol):
            await _command(runtime, subscriber, session_id, frame)
    except EngineUnavailable:
        subscriber.kill(CLOSE_TRY_LATER, "the session store is unavailable")
    finally:
        await runtime.hub.leave(session_id, subscriber)
        await _finish(subscriber, writer)


async def _catch_up(
    runtime: Runtime, subscriber: Subscriber, session_id: str, since: int | None
) -> None:
    """Replay from ``since`` when every later event is still held, else a snapshot.
    The subscriber is already joined, so what happens meanwhile is held, not lost."""
    session = await runtime.engine.load(session_id)
    if session is None:
        subscriber.kill(CLOSE_UNKNOWN, "unknown session")
        return
    runtime.hub.learn(session)
    replay = None
    if since is not None and since <= session.seq:
        replay = await runtime.engine.history(session_id, since)
    if replay is None:
        subscriber.push(snapshot_message(session, runtime.clock()))
        gap = subscriber.begin(session.seq)
    else:
        last = since if since is not None else 0
        for raw in replay:
            event = Encoded.from_json(raw)
            subscriber.push(event)
            last = event.seq or last
        gap = subscriber.begin(last)
    if gap:
        runtime.hub.request_fill(session_id)


async def _frames(
    ws: WebSocket, runtime: Runtime, subscriber: Subscriber, subprotocol: str
) -> AsyncIterator[dict[str, Any]]:
    """The client's frames as maps, until it goes; a frame too big or not a map in the
    socket's encoding closes the socket (1009, 1008)."""
    limit = runtime.settings.max_message_bytes
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        text: str | None = message.get("text")
        data: bytes | None = message.get("bytes")
        size = len(text.encode()) if text is not None else len(data or b"")
        if size > limit:
            subscriber.kill(CLOSE_TOO_BIG, f"messages may be at most {limit} bytes")
            return
        try:
            yield decode_frame(subprotocol, text, data)
        except DecodeError as exc:
            subscriber.kill(CLOSE_POLICY, str(exc)[:120])
            return


def _ref(frame: dict[str, Any]) -> str | int | None:
    ref = frame.get("ref")
    if ref is None or (isinstance(ref, str) and len(ref) <= 64):
        return ref
    if isinstance(ref, int) and not isinstance(ref, bool) and abs(ref) < 2**53:
        return ref
    raise validation.invalid("ref", "must be a string of at most 64 characters or an integer")


def parse_command(frame: dict[str, Any]) -> Command | None:
    """The machine command for a client frame; None for ``ping``. Raises ApiError."""
    kind = frame.get("type")
    allowed = {"type", "ref"}
    command: Command | None
    if kind == "ping":
        command = None
    elif kind == "pay":
        allowed.add("payment_method")
        command = StartAttempt(validation.parse_payment_method(frame.get("payment_method"), True))
    elif kind == "retry":
        allowed.add("payment_method")
        command = StartAttempt(validation.parse_payment_method(frame.get("payment_method"), False))
    elif kind == "cancel":
        command = Cancel()
    elif kind == "interrupt":
        allowed.add("reason")
        command = Interrupt(
            validation.parse_interrupt({"reason": frame.get("reason", "network_error")})
        )
    else:
        raise ApiError(400, "unknown_command", f"unknown command type {kind!r}")
    extra = sorted(set(frame) - allowed)
    if extra:
        raise validation.invalid(extra[0], "is not a field of this command")
    return command


async def _command(
    runtime: Runtime, subscriber: Subscriber, session_id: str, frame: dict[str, Any]
) -> None:
    seq = subscriber.last_seq if subscriber.last_seq >= 0 else None
    ref: str | int | None = None
    try:
        ref = _ref(frame)
        command = parse_command(frame)
        if command is None:
            subscriber.push(_reply("pong", {}, session_id, seq, runtime.clock()))
            return
        if not runtime.limiter.take(session_id):
            raise ApiError(429, "rate_limited", "too many commands for this session; slow down")
        outcome = await runtime.service.run(session_id, command)
    except ApiError as exc:
        _error(runtime, subscriber, session_id, seq, exc.code, exc.message, ref)
        return
    except EngineUnavailable:
        message = "the session store is unavailable; retry shortly"
        _error(runtime, subscriber, session_id, seq, "engine_unavailable", message, ref)
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


def _error(
    runtime: Runtime,
    subscriber: Subscriber,
    session_id: str | None,
    seq: int | None,
    code: str,
    message: str,
    ref: str | int | None,
) -> None:
    data: dict[str, Any] = {"code": code, "message": message}
    if ref is not None:
        data["ref"] = ref
    subscriber.push(_reply("error", data, session_id, seq, runtime.clock()))


async def admin_socket(ws: WebSocket) -> None:
    runtime: Runtime = ws.app.state.runtime
    subprotocol = await _handshake(ws, runtime)
    if subprotocol is None:
        return
    principal = principal_for(ws.query_params.get("token"), runtime.settings)
    if principal is None or principal.kind != ADMIN:
        await _refuse(ws, CLOSE_BAD_TOKEN, "missing or bad admin token", subprotocol)
        return
    await ws.accept(subprotocol=accepted_subprotocol(ws, subprotocol))
    subscriber = _make_subscriber(ws, "admin", subprotocol, runtime)
    writer = asyncio.create_task(subscriber.run_writer())
    try:
        await runtime.hub.join_admin(subscriber)
        subscriber.push(await runtime.admin_snapshot())
        subscriber.begin(0)
        async for frame in _frames(ws, runtime, subscriber, subprotocol):
            await _admin_command(runtime, subscriber, frame)
    except EngineUnavailable:
        subscriber.kill(CLOSE_TRY_LATER, "the session store is unavailable")
    finally:
        await runtime.hub.leave_admin(subscriber)
        await _finish(subscriber, writer)


async def _admin_command(runtime: Runtime, subscriber: Subscriber, frame: dict[str, Any]) -> None:
    if frame.get("type") == "ping":
        subscriber.push(_reply("pong", {}, None, None, runtime.clock()))
        return
    ref = frame.get("ref")
    _error(
        runtime,
        subscriber,
        None,
        None,
        "unknown_command",
        "the admin feed only takes ping; use the admin API",
        ref if isinstance(ref, (str, int)) else None,
    )


async def _finish(subscriber: Subscriber, writer: asyncio.Task[None]) -> None:
    subscriber.stop_writer()
    try:
        await asyncio.wait_for(writer, timeout=2)
    except (TimeoutError, asyncio.CancelledError, WebSocketDisconnect, Exception):
        writer.cancel()
