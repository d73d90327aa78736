"""The server's own writing: a message's frame as wsproto would make it, and a
connection's writes in one turn of the loop sent as one, in order, before a close."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from wsproto.frame_protocol import FrameProtocol

from paylive.server.coalesce import Coalescing
from paylive.server.websocket import data_frame

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("text", [True, False])
def test_a_data_frame_is_the_one_wsproto_makes(size: int, text: bool) -> None:
    data: str | bytes = "é" * (size // 2) + "x" * (size % 2) if text else b"\x00" * size
    assert data_frame(data) == bytes(FrameProtocol(client=False, extensions=[]).send_data(data))


class Recorder:
    """The transport under it: what was written, in which calls, and the close."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.calls.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.calls.append(b"<eof>")

    def abort(self) -> None:
        self.closed = True


def _around(recorder: Recorder, loop: asyncio.AbstractEventLoop) -> Coalescing:
    inner: Any = recorder
    return Coalescing(inner, loop)


async def test_writes_in_one_turn_go_out_as_one_in_order() -> None:
    recorder = Recorder()
    transport = _around(recorder, asyncio.get_running_loop())
    transport.write(b"a")
    transport.write(bytearray(b"b"))
    transport.writelines([b"c", memoryview(b"d")])
    assert recorder.calls == []
    await asyncio.sleep(0)
    assert recorder.calls == [b"abcd"]
    transport.write(b"e")
    await asyncio.sleep(0)
    assert recorder.calls == [b"abcd", b"e"]


async def test_a_close_or_an_end_of_file_sends_what_is_held_first() -> None:
    recorder = Recorder()
    transport = _around(recorder, asyncio.get_running_loop())
    transport.write(b"last words")
    transport.write_eof()
    assert recorder.calls == [b"last words", b"<eof>"]
    transport.write(b"bye")
    transport.close()
    assert recorder.calls == [b"last words", b"<eof>", b"bye"] and recorder.closed
    await asyncio.sleep(0)  # the flush scheduled by the first write finds nothing
    assert recorder.calls == [b"last words", b"<eof>", b"bye"]


async def test_what_is_held_for_a_lost_connection_is_dropped() -> None:
    recorder = Recorder()
    transport = _around(recorder, asyncio.get_running_loop())
    transport.write(b"never read")
    recorder.closed = True  # the peer went away before the turn ended
    await asyncio.sleep(0)
    assert recorder.calls == []
    underneath = Recorder()
    aborted = _around(underneath, asyncio.get_running_loop())
    aborted.write(b"dropped")
    aborted.abort()
    await asyncio.sleep(0)
    assert underneath.calls == [] and underneath.closed


async def test_an_answer_written_now_goes_out_at_once_after_what_is_held() -> None:
    recorder = Recorder()
    transport = _around(recorder, asyncio.get_running_loop())
    transport.write(b"a")
    transport.write_now(b"refused")
    assert recorder.calls == [b"arefused"], "in order, and without waiting for the turn"
    await asyncio.sleep(0)
    assert recorder.calls == [b"arefused"], "nothing held is written twice"
    transport.write_now(b"again")
    assert recorder.calls == [b"arefused", b"again"]
