"""The usual message value read straight from its bytes (appliance/usual_message.py) must give
exactly what the general reader gives (segments.decode_any_message), and must leave every other
byte string to it: it never accepts what the general reader refuses."""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import example, given
from hypothesis import strategies as st

from appliance import segments
from appliance.errors import InvalidInput
from appliance.usual_message import read_usual_message

KEY = b"\x11" * 32


def head(major: int, argument: int, width: int) -> bytes:
    """A CBOR item head with its argument in `width` extra bytes (0: in the initial byte) -
    the wider forms are out of canonical form but inside the profile."""
    if width == 0:
        return bytes([major << 5 | argument])
    return bytes([major << 5 | {1: 24, 2: 25, 4: 26, 8: 27}[width]]) + argument.to_bytes(width, "big")


def widths(value: int) -> st.SearchStrategy[int]:
    return st.sampled_from([w for w in (0, 1, 2, 4, 8) if (w == 0 and value < 24) or (w and value < 1 << (8 * w))])


@st.composite
def usual_values(draw: st.DrawFn) -> tuple[bytes, tuple[Any, ...]]:
    """Bytes of a usual message - any widths for the time and the strings' lengths - and the
    values in them."""
    created_at = draw(st.integers(0, 2**64 - 1))
    text = draw(st.text())
    count = draw(st.integers(3, 6))
    root = draw(st.none() | st.text(max_size=30)) if count > 3 else None
    mentions = draw(st.lists(st.binary(min_size=32, max_size=32), max_size=23)) if count > 5 else []

    def text_item(value: str) -> bytes:
        raw = value.encode()
        return head(3, len(raw), draw(widths(len(raw)))) + raw

    data = bytes([0x80 | count]) + b"\x58\x20" + KEY + head(0, created_at, draw(widths(created_at))) + text_item(text)
    if count > 3:
        data += b"\xf6" if root is None else text_item(root)
    if count > 4:
        data += b"\x80"
    if count > 5:
        data += bytes([0x80 | len(mentions)]) + b"".join(b"\x58\x20" + m for m in mentions)
    return data, (KEY.hex(), created_at, text, root, (), tuple(m.hex() for m in mentions))


def general(data: bytes) -> tuple[Any, ...] | None:
    try:
        return segments.decode_any_message(data)
    except InvalidInput:
        return None


@given(usual_values())
def test_the_usual_shape_is_read_as_the_general_reader_reads_it(case: tuple[bytes, tuple[Any, ...]]) -> None:
    data, values = case
    assert general(data) == values
    assert read_usual_message(data) is not None
    assert segments.decode_message(data) == values


@given(usual_values(), st.data())
def test_damaged_bytes_are_never_read_unless_the_general_reader_reads_them_the_same(case: tuple[bytes, tuple[Any, ...]], data: st.DataObject) -> None:
    raw, _ = case
    damaged = bytearray(raw)
    kind = data.draw(st.sampled_from(["flip", "cut", "extend"]))
    if kind == "flip":
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    elif kind == "cut":
        del damaged[data.draw(st.integers(0, len(damaged) - 1)) :]
    else:
        damaged += data.draw(st.binary(min_size=1, max_size=4))
    usual = read_usual_message(bytes(damaged))
    if usual is not None:
        author, created_at, text, root_id, mentions = usual
        assert general(bytes(damaged)) == (author, created_at, text, root_id, (), mentions)


@given(st.binary(max_size=80))
@example(bytes.fromhex("8358201111111111111111111111111111111111111111111111111111111111111111007f6161ff"))  # indefinite text
@example(bytes.fromhex("835820111111111111111111111111111111111111111111111111111111111111111100620061"))  # text cut short
@example(bytes.fromhex("835820111111111111111111111111111111111111111111111111111111111111111120616161"))  # a negative time
@example(bytes.fromhex("865820" + "11" * 32 + "01626869f60180"))  # an integer where the files go
def test_any_bytes_are_read_only_as_the_general_reader_reads_them(raw: bytes) -> None:
    usual = read_usual_message(raw)
    if usual is not None:
        author, created_at, text, root_id, mentions = usual
        assert general(raw) == (author, created_at, text, root_id, (), mentions)


def test_other_shapes_go_to_the_general_reader() -> None:
    with_files = cbor2.dumps([KEY, 1, "hi", None, [["a.txt", 3, b"\x00" * 32]], []])
    assert read_usual_message(with_files) is None
    assert segments.decode_message(with_files)[4] == (segments.FileRef("a.txt", 3, "00" * 32),)
    short_key = cbor2.dumps([b"\x11" * 16, 1, "hi"])
    assert read_usual_message(short_key) is None and segments.decode_message(short_key)[0] == "11" * 16
    assert read_usual_message(cbor2.dumps([KEY, -5, "hi"])) is None
