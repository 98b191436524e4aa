"""The strict CBOR profile every signed or untrusted structure goes through."""

from __future__ import annotations

import tracemalloc

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance import cbor
from appliance.errors import InvalidInput


def test_tags_are_refused_before_cbor2_can_expand_them() -> None:
    # A string-reference bomb: one 1 KiB string, then 100k references to it (tag 25 inside
    # a tag 256 namespace); cbor2 alone would build 100 MB of strings from ~300 KB.
    reference = b"\xd8\x19\x00"
    bomb = b"\xd9\x01\x00" + b"\x9a" + (100_001).to_bytes(4, "big") + b"\x59\x04\x00" + bytes(1024) + reference * 100_000
    tracemalloc.start()
    with pytest.raises(InvalidInput, match="tags are not allowed"):
        cbor.decode(bomb, "bomb")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (cbor2.dumps(1.5), "float"),
        (cbor2.dumps(True), "simple value"),
        (b"\x9f\x01\xff", "indefinite"),
        (b"\x81" * 17 + b"\x00", "nested deeper"),
        (cbor2.dumps([1, 2]) + b"\x00", "trailing bytes"),
        (b"\x82\x01", "ends inside"),
        (b"\x18\x01", "not canonical"),  # 1 written with a needless extra byte
        (b"\xa2\x61a\x01\x61a\x02", "malformed"),  # duplicate map key
    ],
)
def test_outside_the_profile_is_refused_with_a_reason(data: bytes, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        cbor.decode(data, "test")


def test_item_count_is_bounded() -> None:
    with pytest.raises(cbor.CborTooLarge):
        cbor.decode(cbor.encode(list(range(1000))), "list", max_items=500)
    assert cbor.decode(cbor.encode(list(range(1000))), "list", max_items=1001) == list(range(1000))


values = st.recursive(
    st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.binary(max_size=20) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_profile_values_round_trip(value: object) -> None:
    assert cbor.decode(cbor.encode(value), "value") == value


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_invalid_input(data: bytes) -> None:
    try:
        cbor.decode(data, "fuzz")
    except InvalidInput:
        pass
