from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance import ids
from appliance.errors import InvalidInput


@given(st.binary(min_size=32, max_size=32))
def test_key_id_round_trips_and_has_three_groups(key: bytes) -> None:
    shown = ids.key_id(key)
    assert len(shown) == 23 and shown.count("-") == 2
    assert ids.normalise_key_id(shown.lower().replace("-", " ")) == shown


@given(st.binary(min_size=32, max_size=32), st.integers(min_value=0, max_value=20), st.integers(min_value=1, max_value=31))
def test_key_id_check_character_catches_any_single_typo(key: bytes, position: int, shift: int) -> None:
    raw = ids.key_id(key).replace("-", "")
    wrong = ids.BASE32[(ids.BASE32.index(raw[position]) + shift) % 32]
    typo = raw[:position] + wrong + raw[position + 1 :]
    with pytest.raises(InvalidInput):
        ids.normalise_key_id(typo)


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=2**48 - 1), st.integers(min_value=0, max_value=2**80 - 1)), min_size=1, max_size=200))
def test_message_ids_from_one_factory_strictly_increase_even_if_the_clock_steps_back(stamps: list[tuple[int, int]]) -> None:
    factory = ids.MessageIdFactory()
    made = [factory.new(ms, rnd) for ms, rnd in stamps]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(ids.is_message_id(m) for m in made)


@given(st.integers(min_value=0, max_value=2**48 - 2), st.integers(min_value=0, max_value=2**80 - 1), st.integers(min_value=0, max_value=2**80 - 1))
def test_message_ids_sort_by_time_across_nodes(ms: int, rnd_a: int, rnd_b: int) -> None:
    earlier = ids.MessageIdFactory().new(ms, rnd_a)
    later = ids.MessageIdFactory().new(ms + 1, rnd_b)
    assert earlier < later
    assert ids.message_id_ms(earlier) == ms
