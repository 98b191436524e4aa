"""The direct conversation codec: ids from participants, and the participant list a head holds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance import direct, documents
from appliance.errors import InvalidInput

KEYS = st.lists(st.binary(min_size=32, max_size=32), min_size=2, max_size=8, unique=True)


@given(KEYS, st.randoms())
def test_the_id_depends_on_the_participants_not_their_order(keys: list[bytes], rnd: object) -> None:
    shuffled = list(keys)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    channel_id = direct.direct_channel_id(keys)
    assert channel_id == direct.direct_channel_id(shuffled + keys[:1])  # order and repeats change nothing
    assert documents.parse_doc_id(documents.head_doc_id(channel_id)).channel_id == channel_id


@given(KEYS)
def test_a_participant_list_round_trips_and_matches_its_id(keys: list[bytes]) -> None:
    text = direct.encode_participants(keys)
    assert direct.decode_participants(text) == tuple(sorted(keys))
    assert direct.matches(direct.direct_channel_id(keys), text)
    assert not direct.matches(direct.direct_channel_id([*keys[1:], b"\xff" * 32]) if b"\xff" * 32 not in keys else "0" * 20, text)


@given(KEYS)
def test_only_the_canonical_spelling_is_accepted(keys: list[bytes]) -> None:
    parts = [key.hex() for key in sorted(keys)]
    spellings = [",".join(reversed(parts)), ",".join(parts + parts[:1]), ",".join(parts) + ",", " " + ",".join(parts)]
    if ",".join(parts).upper() != ",".join(parts):
        spellings.append(",".join(parts).upper())
    for spelling in spellings:
        with pytest.raises(InvalidInput):
            direct.decode_participants(spelling)
        assert not direct.matches(direct.direct_channel_id(keys), spelling)


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=1) | st.lists(st.binary(min_size=32, max_size=32), min_size=9, max_size=12, unique=True))
def test_a_conversation_has_two_to_eight_participants(keys: list[bytes]) -> None:
    with pytest.raises(InvalidInput):
        direct.direct_channel_id(keys)


@given(st.binary(min_size=1, max_size=40), st.integers(0, 2**20), st.integers(1, 2**30))
def test_an_op_id_leaves_out_the_actor_index_alone(actor: bytes, index: int, counter: int) -> None:
    def uleb(value: int) -> bytes:
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    exid = b"\x10" + bytes([len(actor)]) + actor + uleb(index) + uleb(counter)
    assert documents.op_id(exid) == b"\x10" + bytes([len(actor)]) + actor + uleb(counter)
    assert documents.op_id(b"\x10" + bytes([len(actor)]) + actor + uleb(index + 1) + uleb(counter)) == documents.op_id(exid)
