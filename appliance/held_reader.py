"""The worker side of a big import into segments this node already holds: what a worker process
runs for one segment - verify the incoming changes, load the segment as stored, apply them,
read the messages they touched, build the rows to write. Like appliance/whole_reader.py it
imports nothing of asyncio or the node's services, and returns plain picklable values; the
node's process authorises the authors and writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from automerge._automerge import Document

from appliance import documents, ids, segments
from appliance.changes import SignedChange, VerifiedChange, verify_batch
from appliance.errors import ChangeRejected, MissingDependencies
from appliance.kept_documents import KeptDocument, kept
from appliance.view_rows import reactions_json, reactions_row, view_row
from appliance.whole_reader import WORKER_MEMORY_BYTES, LogStamp, WorkRefused, log_rows_per_actor


@dataclass(frozen=True)
class HeldBatch:
    """One segment's incoming changes and the segment as the node stores it: its snapshot and
    the change bytes logged after it (empty: a segment that starts with these changes)."""

    doc_id: str
    stored: bytes
    incoming: tuple[SignedChange, ...]
    admins: frozenset[str]
    stamp: LogStamp
    save: bool  # its snapshot is due: return the segment saved


@dataclass(frozen=True)
class HeldApplied:
    """A batch verified (but for whether its authors may write: `authors`, judged by the node)
    and applied: its new changes' log rows (LOG_COLUMNS values, one per change), the view rows
    (VIEW_COLUMNS values) of the messages they touched - of every message, when `every_message`
    (the changes touched something no message id names) - but for those whose reactions alone
    changed -, the reactions (reactions_row) of those and of every message read; the segment
    saved, if asked, and its heads."""

    doc_id: str
    changes: int
    log_rows: tuple[tuple[Any, ...], ...]
    messages: tuple[tuple[Any, ...], ...]
    reactions: tuple[tuple[str, str, str], ...]
    every_message: bool
    authors: frozenset[bytes]
    saved: bytes | None
    heads: tuple[bytes, ...]  # empty when nothing was applied


def apply_held(batch: HeldBatch) -> HeldApplied | WorkRefused:
    """In a worker: `batch` checked by appliance/changes.verify_batch - the rule every import
    follows - then applied to the stored segment and its touched messages read."""
    doc_id = batch.doc_id
    authors: set[bytes] = set()

    def note_author(author: bytes) -> None:  # authorised by the node, on its directory
        authors.add(author)
        return None

    try:
        with documents.binding_errors(f"{doc_id}: cannot load the segment"):
            # The changes the node holds of it are those of the document as stored (the bytes
            # loaded are the snapshot and every change logged after it): the node need not
            # expand the log's rows into hashes for it.
            taken = kept.take(doc_id, batch.stored)
            if taken is None:
                doc = Document.load(batch.stored) if batch.stored else Document()
                taken = KeptDocument(doc, frozenset(change.hash for change in doc.get_changes([])))
            doc, before = taken.doc, taken.doc.get_heads()
        verified = verify_batch(doc_id, batch.incoming, taken.hashes, note_author)
        if not verified:
            kept.keep(doc_id, batch.stored, taken)
            return HeldApplied(doc_id, 0, (), (), (), False, frozenset(), None, ())
        try:
            documents.apply_changes(doc, [change.data for change in verified])
        except documents.DocumentError as exc:
            return WorkRefused(doc_id, f"{doc_id}: {exc}")
        with documents.binding_errors(f"{doc_id}: cannot read the segment"):
            touched = segments.touched_parts(doc, before) if before else None
            # Most of a big import is reactions: a message whose reactions alone changed is read
            # from its reaction parts, and only its reactions are set.
            reacted = segments.read_reactions(doc, [m for m, kinds in touched.items() if kinds == {segments.REACTION}]) if touched is not None else {}
            states = segments.read_messages(doc, batch.admins, only=None if touched is None else [m for m in touched if m not in reacted])
            saved = doc.save() if batch.save else None
            heads = tuple(doc.get_heads())
        # As the store will hold it once the node writes these rows: the snapshot saved, or the one loaded and these changes logged after it.
        hashes = taken.hashes | {change.header.hash for change in verified}
        kept.keep(doc_id, saved if saved is not None else batch.stored + b"".join(change.data for change in verified), KeptDocument(doc, hashes))
        channel_id = documents.parse_doc_id(doc_id).channel_id
        read = [state for state in states if ids.is_message_id(state.message_id)]
        messages = tuple(view_row(channel_id, doc_id, state) for state in read)
        reactions = tuple((message_id, doc_id, reactions_json(users)) for message_id, users in reacted.items() if ids.is_message_id(message_id))
        reactions += tuple(reactions_row(doc_id, state) for state in read)
    except MissingDependencies as exc:
        return WorkRefused(doc_id, str(exc), missing=True)
    except (documents.DocumentError, ChangeRejected) as exc:
        return WorkRefused(doc_id, str(exc))
    except MemoryError:
        return WorkRefused(doc_id, f"{doc_id}: the segment needs more than {WORKER_MEMORY_BYTES:,} bytes of memory to apply its changes")
    return HeldApplied(doc_id, len(verified), _log_rows(doc_id, verified, batch.stamp, saved is not None), messages, reactions, touched is None, frozenset(authors), saved, heads)


def _log_rows(doc_id: str, verified: Sequence[VerifiedChange], stamp: LogStamp, saved: bool) -> tuple[tuple[Any, ...], ...]:
    """The log rows (LOG_COLUMNS) of the changes applied. When the segment was saved (its new
    snapshot holds their bytes), a row per signed change covering those it vouches for, as for
    a segment carried whole; else a row per change with its bytes. Only the signatures checked
    are kept."""
    if saved:
        headers = [c.header for c in verified]
        vouched = {c.header.hash: c.vouched_by for c in verified}
        signatures = {c.header.hash: c.signature for c in verified if c.signature is not None}
        return log_rows_per_actor(doc_id, headers, vouched, signatures, stamp)
    return tuple(
        (doc_id, c.header.hash, c.header.actor, c.header.seq, b"".join(c.header.deps), c.data, c.signature, c.vouched_by, stamp.received_from, stamp.received_at, 0, None)
        for c in verified
    )
