"""One signature scheme for webhooks both ways (core/signature.py)."""

from __future__ import annotations

import pytest

from paylive.core.signature import SignatureError, signature_header, verify

BODY = b'{"id":"evt_1","type":"session.succeeded"}'
NOW = 1_764_000_000


def test_one_v1_per_secret_and_either_secret_verifies() -> None:
    header = signature_header(["new-secret-0123456789", "old-secret-0123456789"], NOW, BODY)
    assert header.startswith(f"t={NOW},v1=") and header.count("v1=") == 2
    verify(header, BODY, ["old-secret-0123456789"], NOW + 10, 300)
    verify(header, BODY, ["new-secret-0123456789"], NOW - 10, 300)
    assert signature_header("new-secret-0123456789", NOW, BODY) == header.rsplit(",", 1)[0]


@pytest.mark.parametrize(
    ("header", "body", "now", "message"),
    [
        (None, BODY, NOW, "missing"),
        ("v1=abc", BODY, NOW, "needs t="),
        (signature_header("a-secret-0123456789", NOW, BODY), BODY, NOW, "no signature matches"),
        (signature_header("the-secret-0123456789", NOW, BODY), BODY + b" ", NOW, "no signature"),
        (signature_header("the-secret-0123456789", NOW, BODY), BODY, NOW + 301, "300 s off"),
    ],
)
def test_bad_signatures_are_refused(
    header: str | None, body: bytes, now: int, message: str
) -> None:
    with pytest.raises(SignatureError, match=message):
        verify(header, body, ["the-secret-0123456789"], now, 300)


@pytest.mark.parametrize("written", ["1_764_000_000", "+1764000000", "١٧٦٤٠٠٠٠٠٠", "0x6923C400"])
def test_a_timestamp_not_in_ascii_digits_is_refused(written: str) -> None:
    # The HMAC covers "<t>.<raw body>" with t as the sender wrote it. int() reads the
    # first three as this decimal, whose signature this is: a t= other than the one
    # signed was taken (the last was refused already).
    signed = signature_header("the-secret-0123456789", NOW, BODY).partition(",")[2]
    with pytest.raises(SignatureError, match="not an integer"):
        verify(f"t={written},{signed}", BODY, ["the-secret-0123456789"], NOW, 300)
