"""One interface over the four compliance formats, for the service that streams records into a
file: `start` before the first record, `add` for each, `finish` after the last; each returns
chunks - bytes for the file, or named entries of the zip the EML form is. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from appliance import export_csv, export_globalrelay
from appliance.compliance_records import ExportFormat, ExportHeader, ExportRecord, iso_utc
from appliance.export_actiance import ActianceWriter
from appliance.export_signed import Sign, SignedLines

EXTENSIONS = {ExportFormat.CSV: ".csv", ExportFormat.ACTIANCE: ".xml", ExportFormat.GLOBALRELAY: ".eml.zip", ExportFormat.JSONL: ".jsonl"}


@dataclass(frozen=True)
class Chunk:
    data: bytes
    entry: str | None = None  # a zip entry's name; None: bytes of the file itself


class Encoder:
    def __init__(self, fmt: ExportFormat, sign: Sign) -> None:
        self.format = fmt
        self.zipped = fmt == ExportFormat.GLOBALRELAY
        self.wants_files = fmt == ExportFormat.GLOBALRELAY  # the others put files beside
        self._header: ExportHeader | None = None
        self._actiance = ActianceWriter()
        self._signed = SignedLines(sign)

    def start(self, header: ExportHeader) -> list[Chunk]:
        self._header = header
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
        return [Chunk(json.dumps(manifest, indent=1, ensure_ascii=False).encode(), "manifest.json")]

    def add(self, record: ExportRecord, files: Mapping[str, bytes]) -> Chunk:
        if self.format == ExportFormat.CSV:
            return Chunk(export_csv.row(record))
        if self.format == ExportFormat.ACTIANCE:
            return Chunk(self._actiance.add(record))
        if self.format == ExportFormat.JSONL:
            return Chunk(self._signed.add(record))
        assert self._header is not None
        return Chunk(export_globalrelay.eml(self._header, record, files), export_globalrelay.entry_name(record))

    def add_many(self, records: Sequence[ExportRecord], files: Mapping[str, bytes]) -> list[Chunk]:
        """A page of records: as `add` one by one, the CSV rows written at once."""
        if self.format == ExportFormat.CSV:
            return [Chunk(export_csv.rows(records))]
        return [self.add(record, files) for record in records]

    def finish(self) -> list[Chunk]:
        if self.format == ExportFormat.ACTIANCE:
            return [Chunk(self._actiance.finish())]
        if self.format == ExportFormat.JSONL:
            return [Chunk(self._signed.finish())]
        return []
