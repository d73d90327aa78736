"""A subscriber's sends (fanout/hub.py): an idle socket's message goes out at once,
without a writer task; a send that has to wait is finished by a writer task, with
what is pushed meanwhile queued behind it, in order, and bounded."""

from __future__ import annotations

import asyncio

import pytest

from paylive.core.codec import Encoded
from paylive.core.protocol import CloseCode
from paylive.fanout.hub import Subscriber

pytestmark = pytest.mark.anyio


def _event(seq: int) -> Encoded:
    return Encoded({"type": "countdown", "session": "ps_x", "seq": seq, "ts": 1, "data": {}})


async def test_an_idle_sockets_message_goes_out_without_a_task() -> None:
    sent: list[str | bytes] = []

    async def send(frame: str | bytes) -> None:
        sent.append(frame)

    async def close(code: int, reason: str) -> None:
        raise AssertionError(f"closed {code} {reason}")

    subscriber = Subscriber("customer", "json", 4, send, close)
    tasks = len(asyncio.all_tasks())
    for seq in range(3):
        subscriber.push(_event(seq))
        assert len(sent) == seq + 1, "sent in the push itself"
    assert len(asyncio.all_tasks()) == tasks
    assert '"seq":0' in str(sent[0]) and '"seq":2' in str(sent[2])


async def test_a_send_that_waits_keeps_the_order_and_the_bound() -> None:
    gate = asyncio.Event()
    sent: list[str | bytes] = []
    closed: list[int] = []

    async def send(frame: str | bytes) -> None:
        await gate.wait()  # the transport's buffer is full until the gate opens
        sent.append(frame)

    async def close(code: int, reason: str) -> None:
        closed.append(code)

    subscriber = Subscriber("customer", "json", 3, send, close)
    for seq in range(3):
        subscriber.push(_event(seq))
        await asyncio.sleep(0)
    assert sent == [] and not subscriber.closing
    gate.set()
    await asyncio.sleep(0.01)
    assert [f'"seq":{n}' in str(frame) for n, frame in enumerate(sent)] == [True] * 3
    assert len(sent) == 3 and closed == []

    gate.clear()
    for seq in range(3, 8):  # one waiting in its send, 3 queued, then one too many
        subscriber.push(_event(seq))
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert closed == [CloseCode.TRY_LATER], "a full queue closes the socket with 1013"


async def test_a_send_that_fails_at_once_marks_the_socket_closing() -> None:
    async def send(frame: str | bytes) -> None:
        raise ConnectionError("the peer is gone")

    async def close(code: int, reason: str) -> None:
        raise AssertionError("the reader sees the disconnect; nothing to close")

    subscriber = Subscriber("customer", "json", 4, send, close)
    subscriber.push(_event(0))
    assert subscriber.closing
