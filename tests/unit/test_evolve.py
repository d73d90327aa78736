"""``core.evolve``: the same value ``dataclasses.replace`` makes, faster."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paylive.core.evolve import evolve
from paylive.core.session import Session

from ..support.core import fresh


@given(seq=st.integers(0, 10**6), updated_at=st.integers(0, 2**53), status=st.sampled_from(
    ["created", "processing", "succeeded", "failed"]
))  # fmt: skip
def test_the_same_value_as_replace(seq: int, updated_at: int, status: str) -> None:
    session = fresh()
    changes = {"seq": seq, "updated_at": updated_at, "status": status}
    made = evolve(session, **changes)
    assert made == dataclasses.replace(session, **changes)
    assert type(made) is Session and made is not session
    assert session == fresh()  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.seq = 1  # type: ignore[misc]


def test_an_unknown_field_is_refused_as_replace_refuses_it() -> None:
    with pytest.raises(TypeError, match="no field 'sequence'"):
        evolve(fresh(), sequence=1)


@dataclasses.dataclass(frozen=True)
class Checked:
    amount: int

    def __post_init__(self) -> None:
        if self.amount < 0:
            raise ValueError("negative")


def test_a_class_with_post_init_is_made_through_its_init() -> None:
    with pytest.raises(ValueError, match="negative"):
        evolve(Checked(1), amount=-1)
