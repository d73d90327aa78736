"""The customer's view of a message (docs/protocol.md 4.1): an event whose ``data``
holds an effect reaches a customer's channel with the effect's kind, status, amount,
id and times only, made once and shared by every customer subscriber; every other
message is the very object staff get, its one encoding shared by all."""

from __future__ import annotations

from typing import Any

import pytest

from paylive.core.codec import MSGPACK, SSE, Encoded, Message
from paylive.core.effects import CUSTOMER_FIELDS, GatewayEffect, customer_effect
from paylive.fanout.hub import Subscriber

pytestmark = pytest.mark.anyio

STAFF_TEXT = ("otto", "refunded in the provider's dashboard", "card processor said 502")


def _effect() -> dict[str, Any]:
    made = GatewayEffect(
        "refund",
        1,
        created_at=10,
        next_at=None,
        status="done",
        tries=3,
        last_error=STAFF_TEXT[2],
        done_at=20,
        number=1,
        amount=500,
        reason="customer asked",
        requested_by=STAFF_TEXT[0],
        done_by=STAFF_TEXT[0],
        note=STAFF_TEXT[1],
    )
    return made.to_public("ps_x")


def _state(**extra: Any) -> Encoded:
    data = {"session": {"id": "ps_x", "status": "succeeded"}, "previous": "succeeded"}
    return Encoded.of(Message("state", {**data, **extra}, "ps_x", 7, 1))


def test_a_customers_effect_holds_what_concerns_the_payer_only() -> None:
    view = customer_effect(_effect())
    assert view == {
        "id": "ps_x:1:refund.1",
        "session": "ps_x",
        "attempt": 1,
        "kind": "refund",
        "status": "done",
        "created_at": 10,
        "done_at": 20,
        "number": 1,
        "amount": 500,
        "reason": "customer asked",
    }
    # An automatic effect has no number, amount nor reason: none is made up.
    automatic = GatewayEffect("void", 2, created_at=1, next_at=5, last_error="x")
    assert set(customer_effect(automatic.to_public("ps_x"))) == set(CUSTOMER_FIELDS) - {
        "number",
        "amount",
        "reason",
    }


def test_an_event_without_an_effect_is_its_own_customer_view() -> None:
    event = _state(cause="attempt_started")
    assert event.customer is event
    assert event.customer.json is event.json, "one encoding, shared"
    countdown = Encoded({"type": "countdown", "session": "ps_x", "seq": 1, "ts": 1, "data": {}})
    assert countdown.customer is countdown


def test_an_effect_events_customer_view_is_made_once_and_leaves_staffs_whole() -> None:
    event = _state(cause="effect_done", effect=_effect(), by_hand=True)
    view = event.customer
    assert view is not event and event.customer is view and view.customer is view
    assert view.wire["data"]["effect"] == customer_effect(_effect())
    assert view.wire["data"]["by_hand"] is True and view.wire["data"]["session"]["id"] == "ps_x"
    assert (view.type, view.seq, view.ts, view.durable) == ("state", 7, 1, True)
    assert view.msgpack is view.msgpack and view.sse is view.sse
    for text in STAFF_TEXT:
        assert text not in view.text and text.encode() not in view.msgpack
        assert text in event.text, "staff's message is as it was"


def _recorder(sent: list[str | bytes]) -> Any:
    async def send(frame: str | bytes) -> None:
        sent.append(frame)

    return send


async def _never_closed(code: int, reason: str) -> None:
    raise AssertionError(f"closed {code} {reason}")


async def test_customer_subscribers_share_the_customer_encoding_and_staff_get_all() -> None:
    frames: dict[str, list[str | bytes]] = {}

    def subscriber(name: str, kind: str, codec: str, staff: bool = False) -> Subscriber:
        sent = frames.setdefault(name, [])
        return Subscriber(kind, codec, 4, _recorder(sent), _never_closed, staff)

    subscribers = [
        subscriber("customer", "customer", MSGPACK),
        subscriber("customer too", "customer", MSGPACK),
        subscriber("customer stream", "customer", SSE),
        subscriber("staff watching", "customer", MSGPACK, staff=True),
        subscriber("admin feed", "admin", MSGPACK),
    ]
    common = _state(cause="succeeded")
    effect = _state(cause="effect_done", effect=_effect(), by_hand=True)
    for event in (common, effect):
        for one in subscribers:
            one.push(event)
    # The common event: one encoding, the same bytes object for every socket.
    assert {id(sent[0]) for name, sent in frames.items() if name != "customer stream"} == {
        id(common.msgpack)
    }
    # The effect event: the customer's encoding, made once for both customer sockets.
    assert frames["customer"][1] is frames["customer too"][1] is effect.customer.msgpack
    assert frames["staff watching"][1] is frames["admin feed"][1] is effect.msgpack
    for text in STAFF_TEXT:
        for name in ("customer", "customer stream"):
            assert text.encode() not in frames[name][1], (name, text)
        assert text.encode() in frames["admin feed"][1]


async def test_an_event_held_for_its_order_reaches_a_customer_as_its_view() -> None:
    sent: list[str | bytes] = []
    customer = Subscriber("customer", SSE, 4, _recorder(sent), _never_closed)
    customer.begin(5)
    ahead = Encoded.of(
        Message("state", {"cause": "effect_done", "effect": _effect()}, "ps_x", 7, 1)
    )
    assert customer.deliver(ahead), "a gap: held until seq 6 comes"
    assert sent == []
    customer.deliver(Encoded.of(Message("state", {"cause": "seen"}, "ps_x", 6, 1)))
    assert len(sent) == 2 and STAFF_TEXT[1].encode() not in sent[1]
