"""Compliance export for GlobalRelay: one EML message (RFC 5322 + MIME) per record - the archive
ingests mail - packed into a zip by the writer. The sender is the record's author, the recipient
the channel; headers name the workspace, the record, the change and its provenance; the text is
UTF-8 in base64; with the files exported, each attachment is a MIME part.

Written by hand, not with the `email` package (ten times slower, and the export must keep up
with 20,000 records/s): every header value that is not plain ASCII is an RFC 2047 encoded word,
every file name an RFC 2231 parameter, so hostile names and text cannot break the structure; the
tests parse every message back with the `email` package. Pure: a record in, bytes out."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import quote

from appliance.compliance_records import ExportHeader, ExportRecord, RecordKind, iso_utc

_DOMAIN = "rallypoint.invalid"  # no mail domain exists offline; the addresses are stable names
_PLAIN = re.compile(r"^[\x20-\x7e]*$")
_NOT_LOCAL = re.compile(r"[^A-Za-z0-9._-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_WORD_BYTES = 45  # UTF-8 bytes per encoded word: 60 base64 characters, under RFC 2047's 75
_SUBJECTS = {RecordKind.POST: "Message", RecordKind.EDIT: "Edit", RecordKind.DELETION: "Deletion"}


def entry_name(record: ExportRecord) -> str:
    """The record's file in the zip: unique, and sorted as the records are."""
    return f"{record.channel_id}/{record.record_id.replace('/', '-')}.eml"


def encoded_words(value: str) -> str:
    """`value` as RFC 2047 encoded words (UTF-8, base64), folded one word a line."""
    data = value.encode()
    words: list[str] = []
    start = 0
    while start < len(data) or not words:
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # not inside a character
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode()}?=")
        start = end
    return "\r\n ".join(words)


@functools.lru_cache(maxsize=4096)  # subjects and names repeat record after record
def _text(value: str) -> str:
    """A header value: as is when short printable ASCII, else encoded words. Control characters
    (names cannot hold them; a crafted one could) become U+FFFD: a header is one line."""
    value = _CONTROL.sub("\ufffd", value)
    return value if _PLAIN.match(value) and len(value) < 900 and "=?" not in value else encoded_words(value)


def _local(value: str) -> str:
    return _NOT_LOCAL.sub("_", value)[:64] or "unknown"


@functools.lru_cache(maxsize=4096)  # one per author and channel
def _address(name: str, local: str) -> str:
    return f"{encoded_words(_CONTROL.sub(chr(0xFFFD), name))} <{_local(local)}@{_DOMAIN}>"


@functools.lru_cache(maxsize=4096)  # records come in bursts within the same seconds
def _date(seconds: int) -> str:
    return format_datetime(datetime.fromtimestamp(seconds, UTC))


def _base64_lines(data: bytes) -> str:
    return base64.encodebytes(data).decode().replace("\n", "\r\n")


def eml(header: ExportHeader, record: ExportRecord, files: Mapping[str, bytes]) -> bytes:
    """The record as a mail message; `files` holds attachment bytes by hash (those absent are
    listed in the text, not attached)."""
    workspace = header.workspace_key[:16]
    lines = [
        f"From: {_address(record.author_name, f'{record.author_name}.{record.author[:16]}')}",
        f"To: {_address('#' + record.channel_name, f'channel.{record.channel_id}')}",
        f"Subject: {_text(f'Rallypoint {_SUBJECTS[record.kind]} in #{record.channel_name} by {record.author_name}')}",
        f"Date: {_date(record.at // 1000)}",
        f"Message-ID: <{record.record_id.replace('/', '.')}.{workspace}@{_DOMAIN}>",
        f"X-Rallypoint-Workspace: {_text(header.workspace_name)} {header.workspace_key}",
        f"X-Rallypoint-Record: {record.kind.value} {record.record_id}",
        f"X-Rallypoint-Channel: {record.channel_kind} {record.channel_id}",
        f"X-Rallypoint-Author: {record.author}",
        f"X-Rallypoint-Posted: {iso_utc(record.posted_at)}",
    ]
    if record.root_id:
        lines.append(f"In-Reply-To: <{record.root_id}.post.0.{workspace}@{_DOMAIN}>")
    if record.proof is not None:
        lines.append(f"X-Rallypoint-Change: {record.proof.doc_id} {record.proof.change_hash}")
    if record.provenance is not None:
        lines.append(f"X-Rallypoint-Received: {record.provenance.received_from} {iso_utc(record.provenance.received_at)}")
    if record.withheld or record.tampered:
        lines.append("X-Rallypoint-Flags: " + " ".join(flag for flag, on in (("withheld", record.withheld), ("tampered", record.tampered)) if on))
    lines.append("MIME-Version: 1.0")
    body = [record.text if record.kind != RecordKind.DELETION else f"(deleted by {record.author_name} at {iso_utc(record.at)})"]
    if record.reactions:
        body += ["", "Reactions: " + ", ".join(f"{r.emoji} {r.user_name}" for r in record.reactions)]
    if record.files:
        body += [""] + [f"Attachment: {f.name} ({f.size} bytes, sha256 {f.hash})" for f in record.files]
    text_part = 'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n' + _base64_lines("\n".join(body).encode())
    attached = [(f, files[f.hash]) for f in record.files if f.hash in files]
    if not attached:
        return ("\r\n".join(lines) + "\r\n" + text_part).encode()
    boundary = "=_rallypoint_" + hashlib.sha256(record.record_id.encode()).hexdigest()[:24]  # "=_" never occurs in base64 lines
    parts = [f"--{boundary}\r\n{text_part}"]
    for meta, data in attached:
        disposition = f"attachment; filename*=utf-8''{quote(meta.name, safe='')}"
        parts.append(f"--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Disposition: {disposition}\r\nContent-Transfer-Encoding: base64\r\n\r\n{_base64_lines(data)}")
    lines.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
    return ("\r\n".join(lines) + "\r\n\r\n" + "".join(parts) + f"--{boundary}--\r\n").encode()
