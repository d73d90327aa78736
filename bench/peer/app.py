"""python-socketio on uvicorn (ASGI), fanned out by its ``AsyncRedisManager``.

The same work as paylive where the framework allows it: an HTTP command updates the
session, a Redis hash, in one atomic step (a Lua script, as paylive's save is), and
its events go to the session's room and the admin room through Redis pub/sub, one
publish per event. A socket authenticates with the session's secret and gets a
snapshot first. What it does not do (no state machine, no idempotency, no history
and no ``since`` replay, no timers or countdowns, no payment provider, smaller
messages) is listed in BENCHMARKS.md.

Run: ``uvicorn bench.peer.app:app --workers 2`` with ``PEER_REDIS_URL``,
``PEER_API_KEY`` and ``PEER_ADMIN_TOKEN`` set.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
import socketio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

REDIS_URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6399/0")
API_KEY = os.environ.get("PEER_API_KEY", "")
ADMIN_TOKEN = os.environ.get("PEER_ADMIN_TOKEN", "")
ROOM_ADMIN = "admin"

# created -> processing (1 event); processing -> interrupted (2: state, retry_prompt);
# interrupted -> processing (2: the voided attempt's state, the new attempt's state).
# That is as many events per change as paylive's driver cycle makes.
CHANGE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
local nxt, kinds
if status == 'processing' then nxt, kinds = 'interrupted', {'state', 'retry_prompt'}
elseif status == 'interrupted' then nxt, kinds = 'processing', {'state', 'state'}
else nxt, kinds = 'processing', {'state'} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', #kinds)
redis.call('HSET', KEYS[1], 'status', nxt, 'updated_at', ARGV[1])
return {seq, nxt, unpack(kinds)}
"""

mgr = socketio.AsyncRedisManager(REDIS_URL)
# always_connect: the namespace is confirmed before the handler runs, so the snapshot the
# handler sends arrives after the confirmation (a refused socket is disconnected).
sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=mgr,
    transports=["websocket"],
    cors_allowed_origins=[],
    always_connect=True,
)
_redis: aioredis.Redis | None = None


def store() -> aioredis.Redis:
    global _redis
    if _redis is None:  # in the worker's own event loop
        # A blocking pool: redis-py's default pool raises "Too many connections" at its
        # cap instead of waiting for a connection.
        pool = aioredis.BlockingConnectionPool.from_url(
            REDIS_URL, decode_responses=True, max_connections=64, timeout=10
        )
        _redis = aioredis.Redis(connection_pool=pool)
    return _redis


def now_ms() -> int:
    return int(time.time() * 1000)


def public(hash_: Mapping[Any, Any], sid: str) -> dict[str, Any]:
    return {
        "id": sid,
        "status": hash_["status"],
        "seq": int(hash_["seq"]),
        "order_id": hash_["order_id"],
        "amount": int(hash_["amount"]),
        "currency": hash_["currency"],
        "updated_at": int(hash_["updated_at"]),
    }


def merchant(request: Request) -> bool:
    given = request.headers.get("authorization", "").removeprefix("Bearer ")
    return bool(API_KEY) and hmac.compare_digest(given, API_KEY)


def refused() -> JSONResponse:
    return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)


async def create(request: Request) -> JSONResponse:
    if not merchant(request):
        return refused()
    body = await request.json()
    sid, secret = secrets.token_hex(12), secrets.token_urlsafe(24)
    fields: dict[Any, str] = {
        "secret": secret,
        "status": "created",
        "seq": "0",
        "order_id": str(body.get("order_id", "")),
        "amount": str(int(body.get("amount", 0))),
        "currency": str(body.get("currency", "EUR")),
        "updated_at": str(now_ms()),
    }
    await store().hset(f"s:{sid}", mapping=fields)
    return JSONResponse({**public(fields, sid), "client_secret": secret}, status_code=201)


async def change(request: Request) -> JSONResponse:
    if not merchant(request):
        return refused()
    sid = request.path_params["sid"]
    now = now_ms()
    done = await store().eval(CHANGE, 1, f"s:{sid}", str(now))
    if not done:
        return JSONResponse({"error": {"code": "not_found"}}, status_code=404)
    seq, status, kinds = int(done[0]), done[1], done[2:]
    first = seq - len(kinds) + 1
    for offset, kind in enumerate(kinds):
        event = {"type": kind, "session": sid, "seq": first + offset, "status": status, "ts": now}
        await sio.emit("event", event, to=[f"s:{sid}", ROOM_ADMIN])
    return JSONResponse({"id": sid, "seq": seq, "status": status})


async def read(request: Request) -> JSONResponse:
    if not merchant(request):
        return refused()
    sid = request.path_params["sid"]
    hash_ = await store().hgetall(f"s:{sid}")
    if not hash_:
        return JSONResponse({"error": {"code": "not_found"}}, status_code=404)
    return JSONResponse(public(hash_, sid))


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> bool:
    auth = auth or {}
    if "admin" in auth:
        if not ADMIN_TOKEN or not hmac.compare_digest(str(auth["admin"]), ADMIN_TOKEN):
            return False
        await sio.enter_room(sid, ROOM_ADMIN)
        await sio.emit("event", {"type": "hello"}, to=sid, ignore_queue=True)
        return True
    session = str(auth.get("session", ""))
    # Join before reading: an event published in between arrives after the snapshot
    # or is covered by it; none falls between the two.
    await sio.enter_room(sid, f"s:{session}")
    hash_ = await store().hgetall(f"s:{session}")
    if not hash_ or not hmac.compare_digest(str(auth.get("token", "")), str(hash_["secret"])):
        return False
    snapshot = {"type": "snapshot", **public(hash_, session)}
    await sio.emit("event", snapshot, to=sid, ignore_queue=True)
    return True


api = Starlette(
    routes=[
        Route("/sessions", create, methods=["POST"]),
        Route("/sessions/{sid}/change", change, methods=["POST"]),
        Route("/sessions/{sid}", read, methods=["GET"]),
    ]
)
app = socketio.ASGIApp(sio, other_asgi_app=api)
