"""One segment as the compliance export reads it: its document (the root listed once - every
message's value and op id, two calls into the library -, not a lookup a message), the change
that made each op, that change's log row and the signature vouching for it, and the records of
each of its messages built from the view row. Each change's proof and provenance are made once:
most of a segment's messages share a few changes. Pure: a document and rows in, records out."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from automerge._automerge import Document

from appliance import export_history
from appliance.compliance_records import ChangeProof, ExportRecord, FileMeta, Provenance, Reaction, RecordKind
from appliance.documents import ROOT
from appliance.export_history import ChangeIndex, ChangeRef

_SUFFIX = {kind: kind.value for kind in RecordKind}  # a member's value read through the enum costs a lookup a record
_NO_PROOF: tuple[ChangeProof | None, Provenance | None] = (None, None)


class LogRow(NamedTuple):
    """The columns of a change-log row the export reads, as read (SQLAlchemy's rows answer
    each attribute through a lookup: several a record add up)."""

    hash: bytes
    actor: bytes
    seq: int
    signature: bytes | None
    vouched_by: bytes
    received_from: str | None
    received_at: int


class ViewRow(NamedTuple):
    """The columns of a message's view row the export reads, in this order."""

    channel_id: str
    doc_id: str
    message_id: str
    author: str
    created_at: int
    text: str
    root_id: str | None
    edited_at: int | None
    deleted: bool
    deleted_by: str | None
    reactions: str  # JSON
    files: str  # JSON
    withheld: bool
    tampered: bool


@dataclass(frozen=True)
class Channel:
    channel_id: str
    name: str
    kind: str


@dataclass(frozen=True)
class Provenances:
    """Where provenance names come from: this node's id and the names of the nodes known."""

    here: str
    nodes: dict[str, str]  # node id -> name


class SegmentRecords:
    def __init__(self, doc_id: str, doc: Document, rows: Sequence[LogRow], origins: Provenances, user_name: Callable[[str], str]) -> None:
        self.doc_id = doc_id
        self.doc = doc
        self.index = ChangeIndex(doc)
        self._entries: dict[str, tuple[Any, bytes]] = dict(zip(doc.keys(ROOT), doc.values(ROOT), strict=True))
        self._rows = rows
        self._by_hash = {row.hash: row for row in rows}
        self._by_actor: dict[bytes, list[LogRow]] | None = None  # made on the first change without a row of its own
        self._origins = origins
        self._name = user_name
        self._proofs: dict[bytes, tuple[ChangeProof | None, Provenance | None]] = {}  # change hash -> its proof
        self._provenances: dict[tuple[str | None, int], Provenance] = {}  # most changes of a segment share one arrival

    def _logged(self, change: ChangeRef) -> tuple[LogRow | None, LogRow | None]:
        """(the row standing for the change, the row whose signature vouches for it)."""
        row = self._by_hash.get(change.hash)
        if row is None:  # carried inside a whole segment: the actor's later signed row covers it
            if self._by_actor is None:
                self._by_actor = {}
                for logged in sorted(self._rows, key=lambda r: r.seq):
                    self._by_actor.setdefault(logged.actor, []).append(logged)
            row = next((r for r in self._by_actor.get(change.actor, ()) if r.seq >= change.seq and r.signature is not None), None)
        if row is None:
            return None, None
        signer = row if row.signature is not None else self._by_hash.get(row.vouched_by)
        return row, signer

    def proof(self, change: ChangeRef | None) -> tuple[ChangeProof | None, Provenance | None]:
        if change is None:
            return _NO_PROOF
        found = self._proofs.get(change.hash)
        if found is None:
            found = self._proofs[change.hash] = self._make_proof(change)
        return found

    def _make_proof(self, change: ChangeRef) -> tuple[ChangeProof | None, Provenance | None]:
        row, signer = self._logged(change)
        if row is None:
            return _NO_PROOF
        provenance = self._provenances.get((row.received_from, row.received_at))
        if provenance is None:
            source = row.received_from or self._origins.here
            provenance = self._provenances[(row.received_from, row.received_at)] = Provenance(source, self._origins.nodes.get(source, source), row.received_at)
        if signer is None or signer.signature is None:
            return None, provenance
        return ChangeProof(self.doc_id, change.hash.hex(), signer.hash.hex(), signer.signature.hex()), provenance

    def records(self, row: ViewRow, channel: Channel) -> list[ExportRecord]:
        """The message's events: the post, each edit, the deletion. A message never edited nor
        deleted is what its view row says (its op id from the root's listing); the others are
        read from the document's history."""
        reactions = () if row.reactions == "{}" else tuple(Reaction(emoji, user, self._name(user)) for emoji, users in sorted(json.loads(row.reactions).items()) for user in users)
        if row.edited_at is None and not row.deleted and not row.tampered:
            entry = self._entries.get(row.message_id)
            change = self.index.of_op(entry[1]) if entry is not None else None
            files = () if row.files == "[]" else _files(row.files)
            return [self._make(row, channel, reactions, RecordKind.POST, 0, row.author, change, row.created_at, row.text, files)]
        deleted_by = row.deleted_by or None
        found = export_history.history(self.doc, self.index, row.message_id, bool(row.deleted), deleted_by)
        if found is None:  # a format-1 segment: the view row as it stands
            out = [self._make(row, channel, reactions, RecordKind.POST, 0, row.author, None, row.created_at, row.text, _files(row.files))]
            if row.deleted:
                out.append(self._make(row, channel, reactions, RecordKind.DELETION, 0, deleted_by or row.author, None, row.edited_at or row.created_at, "", ()))
            return out
        files = tuple(FileMeta(f.name, f.size, f.hash) for f in found.files)
        out = [self._make(row, channel, reactions, RecordKind.POST, 0, found.author, found.post.change, found.post.at, found.post.text, files)]
        out.extend(self._make(row, channel, reactions, RecordKind.EDIT, n, found.author, edit.change, edit.at, edit.text, ()) for n, edit in enumerate(found.edits, start=1))
        if found.deletion is not None:
            out.append(self._make(row, channel, reactions, RecordKind.DELETION, 0, deleted_by or found.author, found.deletion.change, found.deletion.at, "", ()))
        return out

    def _make(
        self,
        row: ViewRow,
        channel: Channel,
        reactions: tuple[Reaction, ...],
        kind: RecordKind,
        n: int,
        author: str,
        change: ChangeRef | None,
        at: int,
        text: str,
        files: tuple[FileMeta, ...],
    ) -> ExportRecord:
        proof, provenance = self.proof(change)
        return ExportRecord(
            f"{row.message_id}/{_SUFFIX[kind]}/{n}",
            kind,
            row.message_id,
            channel.channel_id,
            channel.name,
            channel.kind,
            author,
            self._name(author),
            at,
            row.created_at,
            text,
            row.root_id,
            files,
            reactions if kind == RecordKind.POST else (),
            bool(row.withheld),
            bool(row.tampered),
            proof,
            provenance,
        )


def _files(column: str) -> tuple[FileMeta, ...]:
    return tuple(FileMeta(f["name"], f["size"], f["hash"]) for f in json.loads(column))
