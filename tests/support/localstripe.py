"""A real ``localstripe`` (a stateful fake Stripe server, GPL: a test dependency only,
never imported by paylive) on a free loopback port, for the Stripe gateway's tests.

It runs in a subprocess of its own. The launcher binds 127.0.0.1 only (localstripe's
own entry point listens on every interface), keeps its store in memory (localstripe
pickles it to one fixed file in /tmp on every write, which parallel servers would share)
and lets a PaymentIntent be created with ``automatic_payment_methods``, which Stripe's
current API needs for a server-side confirmation without a ``return_url`` and
localstripe does not know (it refuses every parameter it does not know).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from . import tls
from .ports import free_port
from .processes import stop as stop_process

SECRET_KEY = "sk_test_paylive0123456789"
PUBLISHABLE_KEY = "pk_test_paylive0123456789"
WEBHOOK_SECRET = "whsec_paylive_test_0123456789"
START_TIMEOUT_S = 15.0

_LAUNCHER = """
import logging, sys
from aiohttp import web
from localstripe import resources, server
resources.Store.dump_to_disk = lambda self: None
_create = resources.PaymentIntent.__init__
def _create_card_only(self, automatic_payment_methods=None, **params):
    _create(self, **params)
resources.PaymentIntent.__init__ = _create_card_only
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
web.run_app(server.app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


class LocalStripe:
    """One localstripe process; ``url`` is what ``PAYLIVE_STRIPE_API_BASE`` is set to."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="localstripe-")
        self.log_path = Path(self._dir.name) / "localstripe.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalStripe:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir.name,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"localstripe exited at start:\n{self.log()}")
            try:
                httpx.get(self.url + "/js.stripe.com/v3/", timeout=0.5, verify=tls.CONTEXT)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"localstripe did not start in {START_TIMEOUT_S} s:\n{self.log()}")

    def stop(self) -> None:
        stop_process(self.proc)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> LocalStripe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # localstripe's own configuration endpoint and its API, as a merchant would call it.

    def send_webhooks_to(
        self, url: str, secret: str = WEBHOOK_SECRET, hook: str = "paylive"
    ) -> None:
        """Point localstripe's webhooks (signed like Stripe's) at ``url``; the same
        ``hook`` id again moves them."""
        reply = httpx.post(
            f"{self.url}/_config/webhooks/{hook}", json={"url": url, "secret": secret}, timeout=5
        )
        reply.raise_for_status()

    def api(self, method: str, path: str, **data: Any) -> dict[str, Any]:
        reply = httpx.request(
            method,
            self.url + path,
            data=data or None,
            headers={"Authorization": f"Bearer {SECRET_KEY}"},
            timeout=5,
        )
        reply.raise_for_status()
        body: dict[str, Any] = reply.json()
        return body

    def payment_intent(self, pi: str) -> dict[str, Any]:
        return self.api("GET", f"/v1/payment_intents/{pi}")

    def payment_method(self, number: str) -> str:
        """A PaymentMethod for a test card number, as Stripe.js would make in a browser."""
        made = self.api(
            "POST",
            "/v1/payment_methods",
            **{
                "type": "card",
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2030",
                "card[cvc]": "123",
            },
        )
        return str(made["id"])

    def refunds(self, pi: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/v1/refunds?payment_intent={pi}")["data"])
