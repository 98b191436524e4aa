"""One interface over the four compliance formats, in two halves. Where the records are made (a
worker process, appliance/export_job.py), `encode_part` turns a run of one channel's records into
an `EncodedPart`: what of each format needs no state - CSV rows, Actiance elements, each signed
line's halves around its number, each EML deflated. The service's `Encoder` puts the parts in
order into chunks - bytes of the file, or entries of the zip the EML form is -: `start` before
the first part, `add_part` for each, `finish` after the last; what it adds is what needs the
whole file (Conversations and who entered them, line numbers, checkpoints, the zip's
directory), a few microseconds a record. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from appliance import export_csv, export_globalrelay
from appliance.compliance_records import ExportFormat, ExportHeader, ExportRecord, RecordKind, iso_utc
from appliance.export_actiance import ActianceWriter, Entrant, messages
from appliance.export_segment import Channel
from appliance.export_signed import Sign, SignedLines, record_halves
from appliance.export_zip import deflate

EXTENSIONS = {ExportFormat.CSV: ".csv", ExportFormat.ACTIANCE: ".xml", ExportFormat.GLOBALRELAY: ".eml.zip", ExportFormat.JSONL: ".jsonl"}


class ZipEntry(NamedTuple):
    name: str
    crc: int  # CRC-32 of the entry's bytes
    size: int  # the entry's bytes before deflating


@dataclass(frozen=True)
class Chunk:
    data: bytes  # bytes of the file; a zip entry's deflated bytes
    entry: ZipEntry | None = None


@dataclass(frozen=True)
class EncodedPart:
    """A run of one channel's records, encoded as far as it can be apart from the others."""

    channel: Channel
    records: int
    messages: int  # of the records, the posts
    pieces: tuple[bytes, ...]  # CSV: the rows; Actiance: each record's elements; JSON lines: each record's halves, in turn; EML: each entry deflated
    entries: tuple[ZipEntry, ...] = ()  # EML: each piece's entry
    entrants: tuple[Entrant, ...] = ()  # Actiance: each author's first record in the run
    last_at: int = 0  # the latest event of the run (ms)
    file_hashes: tuple[str, ...] = ()  # the attachments its records name (hex), for copying beside
    resume_after: str | None = None  # the part stopped after this message, its attachments' bytes reached: the rest of its range is another part


def zip_chunk(name: str, data: bytes) -> Chunk:
    packed, crc = deflate(data)
    return Chunk(packed, ZipEntry(name, crc, len(data)))


def encode_part(fmt: ExportFormat, header: ExportHeader, channel: Channel, records: Sequence[ExportRecord], files: Mapping[str, bytes], *, name_files: bool) -> EncodedPart:
    """`records` of `channel`, in order; `files`: attachments' bytes by hash (EML carries those
    given); `name_files`: list the hashes of every attachment the records name."""
    pieces: list[bytes] = []
    entries: tuple[ZipEntry, ...] = ()
    entrants: list[Entrant] = []
    if fmt == ExportFormat.CSV:
        pieces = [export_csv.rows(records)] if records else []
    elif fmt == ExportFormat.ACTIANCE:
        pieces, entrants = messages(records)
    elif fmt == ExportFormat.JSONL:
        pieces = [half for record in records for half in record_halves(record)]
    else:
        chunks = [zip_chunk(export_globalrelay.entry_name(record), export_globalrelay.eml(header, record, files)) for record in records]
        pieces = [chunk.data for chunk in chunks]
        entries = tuple(chunk.entry for chunk in chunks if chunk.entry is not None)
    return EncodedPart(
        channel,
        len(records),
        sum(1 for record in records if record.kind == RecordKind.POST),
        tuple(pieces),
        entries,
        tuple(entrants),
        max((record.at for record in records), default=0),
        tuple(sorted({f.hash for record in records for f in record.files})) if name_files else (),
    )


class Encoder:
    def __init__(self, fmt: ExportFormat, sign: Sign) -> None:
        self.format = fmt
        self.zipped = fmt == ExportFormat.GLOBALRELAY
        self.wants_files = fmt == ExportFormat.GLOBALRELAY  # the others put files beside
        self._actiance = ActianceWriter()
        self._signed = SignedLines(sign)

    def start(self, header: ExportHeader) -> list[Chunk]:
        if self.format == ExportFormat.CSV:
            return [Chunk(export_csv.header())]
        if self.format == ExportFormat.ACTIANCE:
            return [Chunk(self._actiance.start(header))]
        if self.format == ExportFormat.JSONL:
            return [Chunk(self._signed.start(header))]
        manifest = {
            "workspace": {"name": header.workspace_name, "key": header.workspace_key},
            "node": {"id": header.node_id, "name": header.node_name},
            "created_at": iso_utc(header.created_at),
            "filters": header.filters.as_json(),
        }
        return [zip_chunk("manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False).encode())]

    def add_part(self, part: EncodedPart) -> list[Chunk]:
        """The next run of records, encoded by `encode_part`."""
        if self.format == ExportFormat.CSV:
            return [Chunk(piece) for piece in part.pieces]
        if self.format == ExportFormat.ACTIANCE:
            channel = part.channel
            return [Chunk(self._actiance.add_part(channel.channel_id, channel.name, channel.kind, part.pieces, part.entrants, part.last_at))]
        if self.format == ExportFormat.JSONL:
            pieces, add = part.pieces, self._signed.add_halves
            return [Chunk(b"".join([add(pieces[at], pieces[at + 1]) for at in range(0, len(pieces), 2)]))]
        return [Chunk(piece, entry) for piece, entry in zip(part.pieces, part.entries, strict=True)]

    def finish(self) -> list[Chunk]:
        if self.format == ExportFormat.ACTIANCE:
            return [Chunk(self._actiance.finish())]
        if self.format == ExportFormat.JSONL:
            return [Chunk(self._signed.finish())]
        return []
