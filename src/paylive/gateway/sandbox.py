"""The sandbox provider of docs/protocol.md section 3: test cards, signed webhooks.

Its ledger lives in the engine, so that with several workers a void on one worker
sees a charge made on another. Each key settles once (``put_if_absent``): a delayed
result and a void race for it, and whichever lands first is the truth, which is
exactly the guarantee a real provider gives for a cancellable payment.

Also in the engine, so that every worker sees them: the outage switch (while it is
on, every charge, void, refund and capture fails as unavailable) and the log of what
the provider did, one entry per attempt and kind at most (money moves once per key).
With ``sandbox_authorize_first`` a success only authorizes (the webhook says
``payment.authorized``); money moves on capture, as with Stripe's manual capture.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.decision import Charge
from ..core.session import attempt_of
from ..core.signature import signature_header
from ..engine import RecordClaim, RecordStore
from ..settings import SandboxSettings
from ..telemetry import context
from .base import ChargeReply, Gateway, GatewayError, Remember

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("paylive.sandbox")

CHARGED = b"charged"  # money moved (captured, with a provider that authorizes first)
AUTHORIZED = b"authorized"
VOIDED = b"voided"
REFUNDED = b"refunded"
LEDGER_TTL_MS = 7 * 24 * 3600 * 1000
OUTAGE_KEY = "sandbox:outage"
LEDGER_KINDS = ("charge", "void", "capture", "refund")
REFUNDS_LISTED = 100  # refunds asked for, per attempt, that the ledger lists


def _outage() -> GatewayError:
    return GatewayError("the sandbox is in an outage (POST /api/admin/sandbox/outage)")


@dataclass(frozen=True)
class Card:
    """What the sandbox does with a card number."""

    # succeeded | declined | provider_error | never | unreachable | lost_answer | late
    # | void_lost | hang
    result: str
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
    # Charged, and the first void is lost on its way (acknowledged, not done): its
    # success comes after all, as a late success the server must give back.
    "4000000000000341": Card("void_lost"),
    # The call to charge is not answered for ten minutes (a provider that hangs): the
    # deadline of the request decides, and the attempt's timeout its outcome.
    "4000000000000606": Card("hang"),
}
HANG_S = 600.0


def card_behaviour(number: str) -> Card:
    return TEST_CARDS.get(number, Card("succeeded"))


Sender = Callable[[dict[str, object]], Awaitable[None]]


class SandboxGateway(Gateway):
    def __init__(
        self, settings: SandboxSettings, engine: RecordStore, send: Sender | None = None
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._send = send or self._post_webhook
        self._client: httpx.AsyncClient | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def _ledger(self, key: str) -> str:
        return f"sandbox:{key}"

    def _taken(self) -> bytes:
        return AUTHORIZED if self._settings.sandbox_authorize_first else CHARGED

    async def _up(self) -> None:
        if await self._engine.get(OUTAGE_KEY) is not None:
            raise _outage()

    def charge_claims(self, charge: Charge) -> Sequence[RecordClaim]:
        card = card_behaviour(str(charge.payment_method.get("card", "")))
        return (
            RecordClaim(
                f"sandbox:req:{charge.key}", card.result.encode(), LEDGER_TTL_MS, OUTAGE_KEY
            ),
        )

    async def charge(self, charge: Charge, remember: Remember) -> ChargeReply:
        card = card_behaviour(str(charge.payment_method.get("card", "")))
        # A key is charged once: a second charge under it is answered but does nothing.
        # The outage check and the claim are one decision (one round trip on Redis, or
        # none when the save of the decision made it: see ``charge_claims``).
        (ask,) = self.charge_claims(charge)
        claim = await self._engine.claim(ask.key, ask.value, ask.ttl_ms, unless=ask.unless)
        if claim.blocked:
            raise _outage()
        if claim.held is not None:
            return ChargeReply.ACCEPTED
        delay = self._settings.sandbox_delay_ms / 1000
        if card.result == "never":
            return ChargeReply.ACCEPTED
        if card.result == "hang":
            await asyncio.sleep(HANG_S)
            return ChargeReply.ACCEPTED
        if card.result == "unreachable":
            return ChargeReply.NETWORK_ERROR
        if card.result == "lost_answer":
            await self._settle(charge.key, self._taken())
            return ChargeReply.NETWORK_ERROR
        if card.result in ("late", "void_lost"):
            await self._settle(charge.key, self._taken())
            if card.result == "late":
                delay = (self._settings.attempt_timeout_ms + 1000) / 1000
            self._later(delay, charge, "succeeded", None, settle=False)
            return ChargeReply.ACCEPTED
        self._later(delay, charge, card.result, card.decline_code, settle=True)
        return ChargeReply.ACCEPTED

    async def void(self, key: str, ref: str | None, idempotency_key: str | None = None) -> bool:
        # The outage check, the ledger and its log entry: one decision, one round trip.
        claim = await self._engine.claim(
            self._ledger(key),
            VOIDED,
            LEDGER_TTL_MS,
            unless=OUTAGE_KEY,
            also=(f"sandbox:did:{key}:void", self._entry(idempotency_key)),
        )
        if claim.blocked:
            raise _outage()
        held = claim.held
        if held is None:
            return False
        if held in (CHARGED, AUTHORIZED) and await self._void_lost(key):
            return False
        if held == AUTHORIZED:
            # Released, unless a capture decided the hold first: then the money moved.
            return await self._settle_hold(key, VOIDED, "void", idempotency_key) == CHARGED
        return held in (CHARGED, REFUNDED)

    async def _void_lost(self, key: str) -> bool:
        """The first void of a ``void_lost`` card is acknowledged and not done."""
        if await self._engine.get(f"sandbox:req:{key}") != b"void_lost":
            return False
        return await self._engine.put_if_absent(f"sandbox:lost:{key}", b"1", LEDGER_TTL_MS) is None

    async def refund(
        self, key: str, ref: str | None, idempotency_key: str, amount: int | None = None
    ) -> None:
        await self._up()
        if amount is not None:
            await self._refund_part(key, idempotency_key, amount)
            return
        if await self._engine.get(self._ledger(key)) == CHARGED:
            # The log entry first: a refund cut short after it is finished by the retry.
            await self._log(key, "refund", idempotency_key)
            await self._engine.put(self._ledger(key), REFUNDED, LEDGER_TTL_MS)
        # Refunded already: done once. Anything else: nothing was taken to give back.

    async def _refund_part(self, key: str, idempotency_key: str, amount: int) -> None:
        """A refund asked for (``<key>:refund.<n>``): one ledger entry per refund, made
        once whatever the number of calls (the entry is the refund)."""
        held = await self._engine.get(self._ledger(key))
        if held not in (CHARGED, REFUNDED):
            raise GatewayError(f"nothing was taken under {key} to refund")
        _, _, kind = idempotency_key.rpartition(":")
        entry = {
            "at": time.time_ns() // 1_000_000,
            "idempotency_key": idempotency_key,
            "amount": amount,
        }
        await self._engine.put_if_absent(
            f"sandbox:did:{key}:{kind}", json.dumps(entry).encode(), LEDGER_TTL_MS
        )

    async def capture(self, key: str, ref: str | None, idempotency_key: str) -> bool:
        await self._up()
        held = await self._engine.get(self._ledger(key))
        if held == AUTHORIZED:
            # Taken, unless a release decided the hold first.
            return await self._settle_hold(key, CHARGED, "capture", idempotency_key) == CHARGED
        if held in (CHARGED, REFUNDED):
            return True  # captured already: done once
        if held is None:
            raise GatewayError(f"nothing is held under {key} yet")
        return False  # released (or declined): the hold is gone, nothing can be taken

    async def _settle_hold(
        self, key: str, fate: bytes, kind: str, idempotency_key: str | None
    ) -> bytes:
        """A hold is captured or released once, by whichever asks first (as a provider
        serializes the two): the first claim of ``sandbox:hold:<key>`` decides, and the
        fate decided (``CHARGED`` or ``VOIDED``) is what either is answered. Reading
        the ledger and then writing it let a capture and a release racing on two
        workers both succeed. The other kind's call only reads the decision; a call of
        the deciding kind (the decider asked again) writes it, so a decider cut short
        before its write is finished by its retry."""
        decided = await self._engine.put_if_absent(f"sandbox:hold:{key}", fate, LEDGER_TTL_MS)
        if decided is not None and decided != fate:
            return decided
        await self._log(key, kind, idempotency_key)
        await self._engine.put(self._ledger(key), fate, LEDGER_TTL_MS)
        return fate

    async def _settle(self, key: str, outcome: bytes) -> bool:
        """True when ``outcome`` is now the key's fate (no void got there first)."""
        held = await self._engine.put_if_absent(self._ledger(key), outcome, LEDGER_TTL_MS)
        if held is None and outcome in (CHARGED, AUTHORIZED):
            await self._log(key, "charge", key)
        return held is None or held == outcome

    async def _log(self, key: str, kind: str, idempotency_key: str | None) -> None:
        await self._engine.put_if_absent(
            f"sandbox:did:{key}:{kind}", self._entry(idempotency_key), LEDGER_TTL_MS
        )

    @staticmethod
    def _entry(idempotency_key: str | None) -> bytes:
        entry = {"at": time.time_ns() // 1_000_000, "idempotency_key": idempotency_key}
        return json.dumps(entry).encode()

    async def ledger(self, session_id: str, attempts: int) -> list[dict[str, object]]:
        """What the provider did for a session's first ``attempts`` attempts, in order."""
        entries: list[dict[str, object]] = []
        for number in range(1, attempts + 1):
            for kind in LEDGER_KINDS:
                raw = await self._engine.get(f"sandbox:did:{session_id}:{number}:{kind}")
                if raw is not None:
                    entry = json.loads(raw)
                    entries.append({"attempt": number, "kind": kind, **entry})
            # Refunds asked for are numbered from 1; one still failing leaves a gap.
            missed, part = 0, 0
            while missed < 5 and part < REFUNDS_LISTED:
                part += 1
                raw = await self._engine.get(f"sandbox:did:{session_id}:{number}:refund.{part}")
                if raw is None:
                    missed += 1
                    continue
                missed = 0
                entries.append({"attempt": number, "kind": "refund", **json.loads(raw)})
        entries.sort(key=lambda e: (e["at"], e["attempt"], LEDGER_KINDS.index(str(e["kind"]))))
        return entries

    async def set_outage(self, seconds: int) -> int | None:
        """Answer every call as unavailable for ``seconds`` (0 ends an outage), on every
        worker; when it ends, epoch ms."""
        if seconds <= 0:
            await self._engine.delete(OUTAGE_KEY)
            return None
        until = time.time_ns() // 1_000_000 + seconds * 1000
        await self._engine.put(OUTAGE_KEY, str(until).encode(), seconds * 1000)
        return until

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
                outcome = self._taken() if result == "succeeded" else result.encode()
                if not await self._settle(charge.key, outcome):
                    return  # voided first: the provider never charges it
            session_id, number = attempt_of(charge.key)
            failure = None if result == "succeeded" else result
            if result != "succeeded":
                kind = "payment.failed"
            elif self._settings.sandbox_authorize_first:
                kind = "payment.authorized"
            else:
                kind = "payment.succeeded"
            body: dict[str, object] = {
                "id": "evt_" + secrets.token_urlsafe(12),
                "type": kind,
                "session": session_id,
                "attempt": number,
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
        import httpx  # here: a tenth of a server's start-up, and most servers never post

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=5.0)
        raw = json.dumps(body, separators=(",", ":")).encode()
        secret = self._settings.webhook_secrets[0]
        traceparent = context.current_traceparent()
        # At least once, as real providers do: retry a few times on failure.
        for attempt in range(5):
            headers = {
                "Content-Type": "application/json",
                "Paylive-Signature": signature_header(secret, int(time.time()), raw),
            }
            if traceparent is not None:
                # The result continues the charge's trace, as a provider that forwards
                # trace context would.
                headers["traceparent"] = traceparent
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
