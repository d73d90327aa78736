"""paylive's Standard Webhooks signer and verifier, checked against the reference
library (``standardwebhooks`` on PyPI) both ways."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from paylive.core import standard_webhooks as sw
from paylive.core.signature import SignatureError

NEW = sw.make_secret(b"n" * 32)
OLD = sw.make_secret(b"o" * 24)
BODY = b'{"id": "evt_1", "type": "session.succeeded"}'
NOW = 1_764_000_000


def test_our_signature_is_the_libraries_and_theirs_is_ours() -> None:
    ours = sw.sign(NEW, "evt_1", NOW, BODY)
    assert ours == Webhook(NEW).sign("evt_1", datetime.fromtimestamp(NOW, UTC), BODY)
    headers = sw.headers([NEW, OLD], "evt_1", NOW, BODY)
    assert headers["webhook-signature"].split(" ")[1] == sw.sign(OLD, "evt_1", NOW, BODY)
    # While rotating, a receiver that knows only one of the secrets verifies.
    assert sw.verify(headers, BODY, [OLD], NOW + 10) == "evt_1"
    assert sw.verify({k.upper(): v for k, v in headers.items()}, BODY, [NEW], NOW) == "evt_1"


@pytest.mark.parametrize(
    "change",
    ["body", "id", "timestamp", "old", "future", "secret", "missing", "garbled"],
)
def test_anything_changed_fails(change: str) -> None:
    headers = sw.headers([NEW], "evt_1", NOW, BODY)
    body, secrets, now = BODY, [NEW], NOW
    if change == "body":
        body = BODY.replace(b"succeeded", b"failed")
    elif change == "id":
        headers["webhook-id"] = "evt_2"
    elif change == "timestamp":
        headers["webhook-timestamp"] = str(NOW + 1)
    elif change == "old":
        now = NOW + 600  # ten minutes later
    elif change == "future":
        now = NOW - 600
    elif change == "secret":
        secrets = [OLD]
    elif change == "missing":
        del headers["webhook-id"]
    else:
        headers["webhook-signature"] = "v1,!!!"
    with pytest.raises(SignatureError):
        sw.verify(headers, body, secrets, now)


@pytest.mark.parametrize(
    "secret",
    ["n" * 32, "whsec_" + base64.b64encode(b"x" * 23).decode(), "whsec_***", "whsec_"],
)
def test_a_secret_that_is_not_one_is_refused(secret: str) -> None:
    with pytest.raises(ValueError):
        sw.secret_key(secret)
