"""The door (web/admission.py): which requests pass it, and how many at once."""

from __future__ import annotations

import pytest

from paylive.web.admission import Admission, is_command


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/api/sessions", True),
        ("POST", "/api/sessions/ps_x/attempts", True),
        ("POST", "/api/sessions/ps_x/interrupt", True),
        ("POST", "/api/sessions/ps_x/cancel", True),
        ("POST", "/api/sessions/ps_x/complete", True),
        ("POST", "/api/sessions/ps_x/check", True),
        ("GET", "/api/sessions/ps_x", False),  # reads do not pass the door
        ("POST", "/webhooks/sandbox", False),  # a provider's result is accepted work
        ("POST", "/webhooks/stripe", False),
        ("POST", "/api/sessions/ps_x/attempts/extra", False),
        ("POST", "/api/admin/deliveries/evt_1/retry", False),
    ],
)
def test_which_requests_pass_the_door(method: str, path: str, expected: bool) -> None:
    assert is_command({"type": "http", "method": method, "path": path}) is expected


def test_the_door_counts_what_is_in_flight() -> None:
    door = Admission(limit=2, retry_after_s=1)
    assert door.enter() and door.enter()
    assert not door.enter(), "a third command while two are in flight"
    assert door.in_flight == 2
    door.leave()
    assert door.enter()
    door.leave()
    door.leave()
    assert door.in_flight == 0
