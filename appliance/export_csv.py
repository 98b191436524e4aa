"""Compliance export as CSV (Mattermost's generic CSV, adapted): a header row, then one row per
record (reactions and attachments as JSON arrays in their cells). Pure: records in, bytes out; the csv module quotes, so any text round-trips."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from appliance.compliance_records import ExportRecord, iso_utc

COLUMNS = (
    "Record Id",
    "Record Type",
    "Event Time",
    "Post Creation Time",
    "Channel Id",
    "Channel Name",
    "Channel Type",
    "User Id",
    "Username",
    "Post Id",
    "Replied to Post Id",
    "Post Message",
    "Reactions",
    "Attachments",
    "Withheld",
    "Tampered",
    "Received From",
    "Received At",
    "Change Hash",
    "Change Signature",
)


def _line(values: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue().encode()


def header() -> bytes:
    return _line(list(COLUMNS))


def row(record: ExportRecord) -> bytes:
    return _line(_values(record))


def rows(records: Sequence[ExportRecord]) -> bytes:
    """Many rows at once (one writer: a third faster than row by row)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(_values(record) for record in records)
    return buffer.getvalue().encode()


def _values(record: ExportRecord) -> list[str]:
    proof, came = record.proof, record.provenance
    return [
        record.record_id,
        record.kind.value,
        iso_utc(record.at),
        iso_utc(record.posted_at),
        record.channel_id,
        record.channel_name,
        record.channel_kind,
        record.author,
        record.author_name,
        record.message_id,
        record.root_id or "",
        record.text,
        json.dumps([[r.emoji, r.user_name] for r in record.reactions], ensure_ascii=False) if record.reactions else "",
        json.dumps([{"name": f.name, "size": f.size, "hash": f.hash} for f in record.files], ensure_ascii=False) if record.files else "",
        "true" if record.withheld else "false",
        "true" if record.tampered else "false",
        came.received_from if came else "",
        iso_utc(came.received_at) if came else "",
        proof.change_hash if proof else "",
        proof.signature if proof else "",
    ]
