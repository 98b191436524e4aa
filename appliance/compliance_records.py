"""What a compliance export holds: one record per event of a message (its post, each edit,
its deletion), with the author's change proof and its provenance, and the filters that chose
them. Values only; the formatters (appliance/export_*.py) turn them into bytes."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class ExportFormat(StrEnum):
    CSV = "csv"  # one row per record, Mattermost's generic CSV columns adapted
    ACTIANCE = "actiance"  # Actiance XML: a Conversation per channel
    GLOBALRELAY = "globalrelay"  # GlobalRelay: a zip of EML messages, attachments as MIME parts
    JSONL = "jsonl"  # signed JSON lines, checked offline by `rallypoint verify-export`


class RecordKind(StrEnum):
    POST = "post"  # the message as its author first wrote it
    EDIT = "edit"  # an edit by its author: the new text, when
    DELETION = "deletion"  # who deleted it, when


class TimeBasis(StrEnum):
    SENT = "sent"  # the event's time on its author's clock (what an auditor asks for)
    RECEIVED = "received"  # when this node stored the change (late arrivals land in a later run)


@dataclass(frozen=True)
class FileMeta:
    name: str
    size: int
    hash: str  # hex SHA-256 of the blob


@dataclass(frozen=True)
class Reaction:
    emoji: str
    user: str  # user hex
    user_name: str


@dataclass(frozen=True)
class ChangeProof:
    """The author's Automerge change that made an event, and the signature that vouches for it:
    its own, or (a change relayed without one, or carried inside a whole segment) that of a later
    change of the same actor whose hash graph includes it (`signed_hash`)."""

    doc_id: str
    change_hash: str  # hex
    signed_hash: str  # hex: the change the signature is over
    signature: str  # hex Ed25519 over changes.signing_payload(doc_id, signed_hash)


@dataclass(frozen=True)
class Provenance:
    received_from: str  # node id it came from; this node's own id for changes made here
    received_from_name: str
    received_at: int  # ms, this node's clock


@dataclass(frozen=True)
class ExportRecord:
    record_id: str  # "<message id>/<kind>/<n>": stable across exports
    kind: RecordKind
    message_id: str
    channel_id: str
    channel_name: str
    channel_kind: str
    author: str  # user hex who made this event (the deleter for a deletion)
    author_name: str
    at: int  # ms: the event's time on its maker's clock
    posted_at: int  # ms: when the message was first posted
    text: str  # the post's or edit's text; empty for a deletion
    root_id: str | None
    files: tuple[FileMeta, ...]
    reactions: tuple[Reaction, ...]  # on the post record: the reactions as they stand
    withheld: bool  # arrived in a read-only or archived channel from a non-admin: never shown
    tampered: bool  # someone else wrote a part only the author may write
    proof: ChangeProof | None
    provenance: Provenance | None


@dataclass(frozen=True)
class ExportFilter:
    since: int | None = None  # ms, inclusive
    until: int | None = None  # ms, exclusive
    channels: tuple[str, ...] = ()  # names; empty: all
    users: tuple[str, ...] = ()  # names; empty: all
    basis: TimeBasis = TimeBasis.SENT

    def admits(self, at: int) -> bool:
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)

    def as_json(self) -> dict[str, object]:
        return {
            "since": iso_utc(self.since) if self.since is not None else None,
            "until": iso_utc(self.until) if self.until is not None else None,
            "channels": list(self.channels),
            "users": list(self.users),
            "basis": self.basis.value,
        }


@dataclass(frozen=True)
class ExportHeader:
    """Who exported what, when: the first line of the signed form, the head of the others."""

    format: ExportFormat
    workspace_name: str
    workspace_key: str  # hex
    node_id: str
    node_name: str
    node_key: str  # hex
    certificates: tuple[bytes, ...]  # every certificate held: the exporting node's chain and every author's
    filters: ExportFilter
    created_at: int  # ms
    exported_by: str  # user hex


def iso_utc(ms: int) -> str:
    """ms since the epoch as ISO 8601 UTC to the millisecond ("2026-03-01T09:00:00.000Z")."""
    seconds, millis = divmod(ms, 1000)
    return f"{_iso_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)  # an export writes three times a record, most within the same seconds
def _iso_second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def parse_time(value: str) -> int:
    """ms since the epoch from ISO 8601 (a date alone is midnight UTC; no zone is UTC)."""
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a time: {value!r} (ISO 8601, e.g. 2026-03-01 or 2026-03-01T09:00:00Z)") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


@dataclass(frozen=True)
class ExportResult:
    path: str
    format: ExportFormat
    records: int
    messages: int
    bytes: int
    sha256: str  # of the file as written (ciphertext when encrypted)
    files_dir: str | None
    files: int
    encrypted_to: str | None  # recipient key hex
    since: int | None
    until: int | None
    workspace_key: str  # hex: what `rallypoint verify-export --workspace-key` checks against
