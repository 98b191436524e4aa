"""The EML form's zip stream, read back by Python's zipfile: any names and data round-trip,
the archive needs no seeking, and past the classic limits (65,535 entries, offsets past 4 GiB)
the ZIP64 records are there and right."""

from __future__ import annotations

import io
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import export_zip
from appliance.export_zip import ZipStream


class Unseekable:
    """What the sink hands the stream: write only (a hash or an encryption stream)."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self.buffer.write(data)


def archive(entries: list[tuple[str, bytes]]) -> bytes:
    out = Unseekable()
    stream = ZipStream(out)  # type: ignore[arg-type]
    for name, data in entries:
        stream.entry(name, data)
    stream.close()
    return out.buffer.getvalue()


names = st.text(st.characters(codec="utf-8", exclude_characters="\x00/\\"), min_size=1, max_size=40)


@given(st.dictionaries(names, st.binary(max_size=3000) | st.text(max_size=2000).map(str.encode), max_size=8))
@settings(max_examples=60, deadline=None)
def test_any_entries_read_back_with_zipfile(entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(io.BytesIO(archive(list(entries.items())))) as read:
        assert read.testzip() is None
        assert read.namelist() == list(entries)
        assert {name: read.read(name) for name in read.namelist()} == entries


def test_more_than_65535_entries_take_zip64_records() -> None:
    data = archive([(f"c/{n}.eml", b"x%d" % n) for n in range(70_000)])
    assert b"PK\x06\x06" in data[-200:]  # the ZIP64 end record
    with zipfile.ZipFile(io.BytesIO(data)) as read:
        names = read.namelist()
        assert len(names) == 70_000 and read.read("c/69999.eml") == b"x69999"


def test_offsets_past_the_classic_limit_take_zip64_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_zip, "CLASSIC_LIMIT", 500)  # as if past 4 GiB from the 500th byte
    entries = [(f"c/{n}.eml", b"data %d " % n * 20) for n in range(30)]
    data = archive(entries)
    with zipfile.ZipFile(io.BytesIO(data)) as read:
        assert read.testzip() is None
        assert [(i.filename, read.read(i)) for i in read.infolist()] == entries
        late = [i for i in read.infolist() if i.header_offset >= 500]
        assert late and all(i.extra[:4] == b"\x01\x00\x08\x00" for i in late)  # the offset read from its ZIP64 field


def test_an_entry_after_close_is_refused() -> None:
    stream = ZipStream(Unseekable())  # type: ignore[arg-type]
    stream.close()
    with pytest.raises(ValueError, match="closed"):
        stream.entry("late", b"")
