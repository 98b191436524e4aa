"""A zip archive written as a stream of whole entries, for the EML form of the compliance export:
one small entry a record, a hundred thousand of them. Python's zipfile spends ~25 us an entry in
its own bookkeeping (header objects, a compressor, a file object per entry), more than making the
message; here an entry is one raw-deflate call, a CRC and two packed headers.

Each entry's data is at hand whole, so its local header carries its CRC and sizes (no data
descriptor) and nothing needs seeking back: the output may be a hash or an encryption stream.
Names are UTF-8 (flag bit 11); times are 1980-01-01 00:00 (the export's bytes depend on the
records alone). ZIP64 records are written where the entries outgrow the classic fields (more
than 65,535 entries, or the archive past 4 GiB); an entry itself is at most 4 GiB - 1. Pure
apart from the output's `write`."""

from __future__ import annotations

import struct
import zlib
from typing import Protocol

# zlib's default state (32 KiB window, memLevel 8: ~260 KiB) is allocated and freed for every
# entry, and a block that size may come fresh from the kernel each time: 45 us an entry was
# measured to create it, where an 8 KiB window (~40 KiB of state) took 0.4 us. On 1-2 KiB EML
# entries level 1 took 16.7 us, level 6 18.2 us, for 1.5 % more bytes: level 1. (zlib lets go
# of the GIL while it deflates: the records of the next page are made meanwhile.)
DEFLATE_LEVEL = 1
WINDOW_BITS = 13
MEMORY_LEVEL = 5
CLASSIC_LIMIT = 0xFFFFFFFF  # the classic fields' largest offset or size; past it ZIP64 takes over
_MAX_ENTRIES = 0xFFFF
_SAYS_ZIP64_16, _SAYS_ZIP64_32 = 0xFFFF, 0xFFFFFFFF  # what a classic field holds when its ZIP64 twin counts
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_DOS_TIME = 0
_UTF8 = 0x0800
_DEFLATED = 8
_VERSION = 20  # 2.0: deflate
_VERSION_ZIP64 = 45
_MADE_BY = (3 << 8) | _VERSION_ZIP64  # Unix
_REGULAR_0600 = (0o100600 << 16)
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")


def deflate(data: bytes, level: int = DEFLATE_LEVEL) -> tuple[bytes, int]:
    """An entry's bytes raw-deflated, and their CRC-32: made apart from the archive (in the
    export's worker processes), added to it in order by `ZipStream.add_deflated`."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -WINDOW_BITS, MEMORY_LEVEL)
    return compressor.compress(data) + compressor.flush(), zlib.crc32(data)


class Output(Protocol):
    def write(self, data: bytes, /) -> int: ...


class ZipStream:
    def __init__(self, out: Output, level: int = DEFLATE_LEVEL) -> None:
        self._out = out
        self._level = level
        self._offset = 0
        self._central: list[bytes] = []
        self._closed = False

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._offset += len(data)

    def entry(self, name: str, data: bytes) -> None:
        """One file of the archive, deflated."""
        packed, crc = deflate(data, self._level)
        self.add_deflated(name, packed, crc, len(data))

    def add_deflated(self, name: str, packed: bytes, crc: int, size: int) -> None:
        """One file of the archive, deflated elsewhere (`deflate`): its `size` bytes' CRC-32."""
        if self._closed:
            raise ValueError("the archive is closed")
        if size > CLASSIC_LIMIT or len(packed) > CLASSIC_LIMIT:
            raise ValueError(f"{name}: an entry of {size:,} bytes is over what this archive holds")
        encoded = name.encode()
        offset = self._offset
        self._write(_LOCAL.pack(0x04034B50, _VERSION, _UTF8, _DEFLATED, _DOS_TIME, _DOS_DATE, crc, len(packed), size, len(encoded), 0) + encoded)
        self._write(packed)
        extra = b"" if offset < CLASSIC_LIMIT else struct.pack("<HHQ", 0x0001, 8, offset)
        self._central.append(
            _CENTRAL.pack(
                0x02014B50,
                _MADE_BY,
                _VERSION_ZIP64 if extra else _VERSION,
                _UTF8,
                _DEFLATED,
                _DOS_TIME,
                _DOS_DATE,
                crc,
                len(packed),
                size,
                len(encoded),
                len(extra),
                0,
                0,
                0,
                _REGULAR_0600,
                _SAYS_ZIP64_32 if extra else offset,
            )
            + encoded
            + extra
        )

    def close(self) -> None:
        """The central directory and the end records."""
        if self._closed:
            return
        self._closed = True
        start = self._offset
        for record in self._central:
            self._write(record)
        size, count = self._offset - start, len(self._central)
        if count > _MAX_ENTRIES or start >= CLASSIC_LIMIT or size >= CLASSIC_LIMIT:
            end64 = self._offset
            self._write(_END64.pack(0x06064B50, _END64.size - 12, _MADE_BY, _VERSION_ZIP64, 0, 0, count, count, size, start))
            self._write(_LOCATOR64.pack(0x07064B50, 0, end64, 1))
            entries = _SAYS_ZIP64_16 if count > _MAX_ENTRIES else count
            self._write(_END.pack(0x06054B50, 0, 0, entries, entries, _SAYS_ZIP64_32 if size >= CLASSIC_LIMIT else size, _SAYS_ZIP64_32 if start >= CLASSIC_LIMIT else start, 0))
        else:
            self._write(_END.pack(0x06054B50, 0, 0, count, count, size, start, 0))
        self._central = []
