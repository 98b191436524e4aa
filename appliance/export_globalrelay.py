"""Compliance export for GlobalRelay: one EML message per record (the archive ingests mail),
packed into a zip by the writer. The sender is the record's author, the recipient the channel;
headers name the message, the record and the change; the attachments' files, when exported,
are MIME parts. Pure: a record (and its files' bytes) in, the message's bytes out."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from appliance.compliance_records import ExportHeader, ExportRecord, RecordKind, iso_utc

_DOMAIN = "rallypoint.invalid"  # no mail domain exists offline; the addresses are stable names


def entry_name(record: ExportRecord) -> str:
    """The record's file in the zip: unique, and sorted as the records are."""
    return f"{record.channel_id}/{record.record_id.replace('/', '-')}.eml"


def _address(name: str, local: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in local)[:64] or "unknown"
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{safe}@{_DOMAIN}>'


def eml(header: ExportHeader, record: ExportRecord, files: Mapping[str, bytes]) -> bytes:
    """The record as an RFC 5322 message; `files` holds attachment bytes by hash (those absent
    are listed, not attached)."""
    message = EmailMessage(policy=SMTP)
    message["From"] = _address(record.author_name, f"{record.author_name}.{record.author[:16]}")
    message["To"] = _address(f"#{record.channel_name}", f"channel.{record.channel_id}")
    subject = {RecordKind.POST: "Message", RecordKind.EDIT: "Edit", RecordKind.DELETION: "Deletion"}[record.kind]
    message["Subject"] = f"Rallypoint {subject} in #{record.channel_name} by {record.author_name}"
    message["Date"] = format_datetime(datetime.fromtimestamp(record.at / 1000, UTC))
    message["Message-ID"] = f"<{record.record_id.replace('/', '.')}.{header.workspace_key[:16]}@{_DOMAIN}>"
    message["X-Rallypoint-Workspace"] = f"{header.workspace_name} {header.workspace_key}"
    message["X-Rallypoint-Record"] = f"{record.kind.value} {record.record_id}"
    message["X-Rallypoint-Channel"] = f"{record.channel_kind} {record.channel_id}"
    message["X-Rallypoint-Posted"] = iso_utc(record.posted_at)
    if record.root_id:
        message["In-Reply-To"] = f"<{record.root_id}.post.0.{header.workspace_key[:16]}@{_DOMAIN}>"
    if record.proof is not None:
        message["X-Rallypoint-Change"] = f"{record.proof.doc_id} {record.proof.change_hash}"
    if record.provenance is not None:
        message["X-Rallypoint-Received"] = f"{record.provenance.received_from} {iso_utc(record.provenance.received_at)}"
    if record.withheld or record.tampered:
        message["X-Rallypoint-Flags"] = " ".join(flag for flag, on in (("withheld", record.withheld), ("tampered", record.tampered)) if on)
    lines = [record.text if record.kind != RecordKind.DELETION else f"(deleted by {record.author_name} at {iso_utc(record.at)})"]
    if record.reactions:
        lines.append("")
        lines.append("Reactions: " + ", ".join(f"{r.emoji} {r.user_name}" for r in record.reactions))
    if record.files:
        lines.append("")
        lines.extend(f"Attachment: {f.name} ({f.size} bytes, sha256 {f.hash})" for f in record.files)
    message.set_content("\n".join(lines), subtype="plain", charset="utf-8", cte="base64")
    for f in record.files:
        data = files.get(f.hash)
        if data is not None:
            message.add_attachment(data, maintype="application", subtype="octet-stream", filename=f.name)
    return message.as_bytes()
