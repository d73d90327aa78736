"""The sandbox provider of docs/protocol.md section 3: test cards, signed webhooks.

Its ledger lives in the engine, so that with several workers a void on one worker
sees a charge made on another. Each key settles once (``put_if_absent``): a delayed
result and a void race for it, and whichever lands first is the truth, which is
exactly the guarantee a real provider gives for a cancellable payment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from ..core.machine import Charge
from ..core.signature import signature_header
from ..engine import RecordStore
from ..settings import Settings
from .base import ChargeReply, Gateway

log = logging.getLogger("paylive.sandbox")

CHARGED = b"charged"
VOIDED = b"voided"
REFUNDED = b"refunded"
LEDGER_TTL_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class Card:
    """What the sandbox does with a card number."""

    result: str  # succeeded | declined | provider_error | never | unreachable | lost_answer | late
    decline_code: str | None = None


TEST_CARDS: dict[str, Card] = {
    "4242424242424242": Card("succeeded"),
    "4000000000000002": Card("declined", "card_declined"),
    "4000000000009995": Card("declined", "insufficient_funds"),
    "4000000000009979": Card("declined", "stolen_card"),
    "4000000000000119": Card("provider_error"),
    "4000000000000408": Card("never"),
    "4000000000000507": Card("unreachable"),
    "4000000000000523": Card("lost_answer"),
    "4000000000000770": Card("late"),
}


def card_behaviour(number: str) -> Card:
    return TEST_CARDS.get(number, Card("succeeded"))


Sender = Callable[[dict[str, object]], Awaitable[None]]


class SandboxGateway(Gateway):
    def __init__(self, settings: Settings, engine: RecordStore, send: Sender | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._send = send or self._post_webhook
        self._client: httpx.AsyncClient | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def _ledger(self, key: str) -> str:
        return f"sandbox:{key}"

    async def charge(self, charge: Charge) -> ChargeReply:
        # A key is charged once: a second charge under it is answered but does nothing.
        first = await self._engine.put_if_absent(f"sandbox:req:{charge.key}", b"1", LEDGER_TTL_MS)
        if first is not None:
            return ChargeReply.ACCEPTED
        card = card_behaviour(str(charge.payment_method.get("card", "")))
        delay = self._settings.sandbox_delay_ms / 1000
        if card.result == "never":
            return ChargeReply.ACCEPTED
        if card.result == "unreachable":
            return ChargeReply.NETWORK_ERROR
        if card.result == "lost_answer":
            await self._settle(charge.key, CHARGED)
            return ChargeReply.NETWORK_ERROR
        if card.result == "late":
            await self._settle(charge.key, CHARGED)
            delay = (self._settings.attempt_timeout_ms + 1000) / 1000
            self._later(delay, charge, "succeeded", None, settle=False)
            return ChargeReply.ACCEPTED
        self._later(delay, charge, card.result, card.decline_code, settle=True)
        return ChargeReply.ACCEPTED

    async def void(self, key: str) -> bool:
        held = await self._engine.put_if_absent(self._ledger(key), VOIDED, LEDGER_TTL_MS)
        return held in (CHARGED, REFUNDED)

    async def refund(self, key: str) -> None:
        await self._engine.put(self._ledger(key), REFUNDED, LEDGER_TTL_MS)

    async def _settle(self, key: str, outcome: bytes) -> bool:
        """True when ``outcome`` is now the key's fate (no void got there first)."""
        held = await self._engine.put_if_absent(self._ledger(key), outcome, LEDGER_TTL_MS)
        return held is None or held == outcome

    def _later(
        self, delay: float, charge: Charge, result: str, decline_code: str | None, settle: bool
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            self._answer(delay, charge, result, decline_code, settle)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _answer(
        self, delay: float, charge: Charge, result: str, decline_code: str | None, settle: bool
    ) -> None:
        await asyncio.sleep(delay)
        try:
            if settle:
                outcome = CHARGED if result == "succeeded" else result.encode()
                if not await self._settle(charge.key, outcome):
                    return  # voided first: the provider never charges it
            session_id, _, number = charge.key.rpartition(":")
            failure = None if result == "succeeded" else result
            body: dict[str, object] = {
                "id": "evt_" + secrets.token_urlsafe(12),
                "type": "payment.succeeded" if result == "succeeded" else "payment.failed",
                "session": session_id,
                "attempt": int(number),
                "idempotency_key": charge.key,
                "failure": failure,
            }
            if decline_code is not None:
                body["decline_code"] = decline_code
            if result == "succeeded":
                body["provider_ref"] = "sbx_" + secrets.token_hex(8)
            await self._send(body)
        except Exception:  # a lost webhook is a timeout later, never a crash
            log.exception("sandbox: could not deliver the result for %s", charge.key)

    async def _post_webhook(self, body: dict[str, object]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=5.0)
        raw = json.dumps(body, separators=(",", ":")).encode()
        secret = self._settings.webhook_secrets[0]
        # At least once, as real providers do: retry a few times on failure.
        for attempt in range(5):
            headers = {
                "Content-Type": "application/json",
                "Paylive-Signature": signature_header(secret, int(time.time()), raw),
            }
            try:
                reply = await self._client.post(
                    self._settings.webhook_target, content=raw, headers=headers
                )
                if reply.status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2 * 2**attempt)
        log.warning("sandbox: gave up delivering webhook %s", body["id"])

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
