"""Which change made an op, as the compliance export asks it: op ids as the binding renders
them (tag, actor length, actor, actor index and counter in LEB128), one- and two-byte counters
read on the fast path and longer ones parsed, each answered with the change whose op range
holds the counter - and nothing for an op outside every range or of an unknown actor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from appliance.changes import ACTOR_BYTES, uleb128
from appliance.export_history import ChangeIndex

ACTOR = bytes(range(ACTOR_BYTES))
OTHER = bytes([7]) * ACTOR_BYTES
RANGES = [(1, 5), (6, 127), (128, 300), (301, 16_383), (16_384, 16_500), (20_000, 3_000_000)]  # a gap at 16,501-19,999


@dataclass
class FakeChange:
    actor_id: bytes
    start_op: int
    max_op: int
    seq: int
    hash: bytes = field(init=False)
    deps: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hash = bytes([self.seq]) * 32


class FakeDoc:
    def get_changes(self, have: list[bytes]) -> list[FakeChange]:
        return [FakeChange(ACTOR, start, end, seq, deps=[bytes([seq - 1]) * 32] if seq > 1 else []) for seq, (start, end) in enumerate(RANGES, start=1)]


def exid(actor: bytes, index: int, counter: int) -> bytes:
    return bytes([1, len(actor)]) + actor + uleb128(index) + uleb128(counter)


INDEX = ChangeIndex(cast(Any, FakeDoc()))


@given(st.integers(0, 3_100_000), st.integers(0, 300))
def test_an_op_is_mapped_to_the_change_whose_range_holds_it(counter: int, actor_index: int) -> None:
    ref = INDEX.of_op(exid(ACTOR, actor_index, counter))
    expected = next((seq for seq, (start, end) in enumerate(RANGES, start=1) if start <= counter <= end), None)
    assert (ref.seq if ref else None) == expected
    if ref is not None:
        assert ref.hash == bytes([expected]) * 32 and ref.actor == ACTOR  # type: ignore[list-item]
        assert INDEX.deps(ref) == ([bytes([ref.seq - 1]) * 32] if ref.seq > 1 else [])


def test_unknown_actors_and_cut_ids_have_no_change() -> None:
    assert INDEX.of_op(exid(OTHER, 0, 3)) is None
    assert INDEX.of_op(exid(ACTOR, 0, 200)[:-1]) is None  # the counter cut short
    assert INDEX.of_op(b"\x01\x05short") is None


def test_a_change_asked_for_once_does_not_answer_for_the_gap_after_it() -> None:
    index = ChangeIndex(cast(Any, FakeDoc()))
    first = index.of_op(exid(ACTOR, 0, 16_400))
    assert first is not None and first.seq == 5
    assert index.of_op(exid(ACTOR, 0, 17_000)) is None  # after that change's last op, before the next
    assert index.of_op(exid(ACTOR, 0, 16_500)) is first  # made once
