"""A message's history as its segment document holds it, for the compliance export: the post
as first written, every edit in order (each overwrote the last; the one before is read at the
overwriting change's dependencies), the deletion that counts, and for each the Automerge change
that made it. Format-1 segments keep no separable history: callers fall back to the view row.
Pure: a document in, values out."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from automerge._automerge import Document

from appliance import segments
from appliance.changes import ACTOR_BYTES
from appliance.documents import ROOT, op_author
from appliance.errors import InvalidInput
from appliance.segments import DELETION, EDIT, FileRef

MAX_EDITS = 10_000  # edits walked back per message: bounds a crafted document


@dataclass(frozen=True)
class ChangeRef:
    hash: bytes
    actor: bytes
    seq: int


@dataclass(frozen=True)
class Event:
    at: int
    text: str
    change: ChangeRef | None


@dataclass(frozen=True)
class MessageHistory:
    post: Event
    author: str
    root_id: str | None
    files: tuple[FileRef, ...]
    edits: tuple[Event, ...]  # oldest first
    deletion: Event | None  # its `text` is empty


class ChangeIndex:
    """Which change made an op: per actor, the changes' op ranges (the binding's Change objects,
    turned into ChangeRefs only when asked for, once each: most of a segment's messages share
    a few changes, and most of its changes are never asked for)."""

    def __init__(self, doc: Document) -> None:
        ranges: dict[bytes, list[tuple[int, int, Any]]] = {}
        for change in doc.get_changes([]):
            ranges.setdefault(bytes(change.actor_id), []).append((change.start_op, change.max_op, change))
        self._ranges = {actor: sorted(rs, key=lambda r: r[0]) for actor, rs in ranges.items()}
        self._starts = {actor: [r[0] for r in rs] for actor, rs in self._ranges.items()}
        self._refs: dict[tuple[bytes, int], ChangeRef] = {}
        self._changes: dict[bytes, Any] = {}  # hash -> the binding's Change, for those asked for

    def of_op(self, exid: bytes) -> ChangeRef | None:
        if len(exid) < 4 + ACTOR_BYTES or exid[1] != ACTOR_BYTES:
            return None
        actor = exid[2 : 2 + ACTOR_BYTES]
        starts = self._starts.get(actor)
        if not starts:
            return None
        pos = 2 + ACTOR_BYTES
        first = exid[pos + 1]
        if exid[pos] < 0x80 and first < 0x80:  # one-byte actor index and counter
            counter = first
        elif exid[pos] < 0x80 and pos + 2 < len(exid) and exid[pos + 2] < 0x80:  # a two-byte counter
            counter = (first & 0x7F) | (exid[pos + 2] << 7)
        else:
            parsed = _op(exid)
            if parsed is None:
                return None
            counter = parsed[1]
        at = bisect.bisect_right(starts, counter) - 1
        if at < 0:
            return None
        ref = self._refs.get((actor, at))
        if ref is not None:
            return ref if counter <= self._ranges[actor][at][1] else None
        start, end, change = self._ranges[actor][at]
        if not start <= counter <= end:
            return None
        ref = self._refs[(actor, at)] = ChangeRef(bytes(change.hash), actor, change.seq)
        self._changes[ref.hash] = change
        return ref

    def deps(self, ref: ChangeRef) -> list[bytes]:
        """The changes `ref` depends on (read only when a history is walked back)."""
        change = self._changes.get(ref.hash)
        return [] if change is None else [bytes(d) for d in change.deps]


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated")


def _op(exid: bytes) -> tuple[bytes, int] | None:
    """(actor, counter) of an op id as the binding renders it: tag, actor length, actor, actor
    index, counter (LEB128)."""
    if len(exid) < 2 + ACTOR_BYTES or exid[1] != ACTOR_BYTES:
        return None
    try:
        _, pos = _uleb(exid, 2 + ACTOR_BYTES)
        counter, _ = _uleb(exid, pos)
    except ValueError:
        return None
    return exid[2 : 2 + ACTOR_BYTES], counter


def history(doc: Document, index: ChangeIndex, message_id: str, deleted: bool, deleted_by: str | None) -> MessageHistory | None:
    """None when the message is not a format-2 value written by its author."""
    got = doc.get(ROOT, message_id)
    if got is None or not isinstance(got[0], tuple) or not isinstance(got[0][1], bytes):
        return None
    try:
        author, created_at, text, root_id, files, _ = segments.decode_message(got[0][1])
    except InvalidInput:
        return None
    writer = op_author(got[1])
    if writer is None or writer.hex() != author:
        return None
    return MessageHistory(
        post=Event(created_at, text, index.of_op(got[1])),
        author=author,
        root_id=root_id,
        files=files,
        edits=tuple(_edits(doc, index, f"{message_id}/{EDIT}/{author}", author)),
        deletion=_deletion(doc, index, f"{message_id}/{DELETION}/{deleted_by or author}", deleted_by or author) if deleted else None,
    )


def _edits(doc: Document, index: ChangeIndex, key: str, author: str) -> list[Event]:
    found: list[Event] = []
    got = doc.get(ROOT, key)
    while got is not None and len(found) < MAX_EDITS:
        change = index.of_op(got[1])
        writer = op_author(got[1])
        decoded = segments._decode_edit(got[0][1]) if isinstance(got[0], tuple) else None
        if decoded is not None and writer is not None and writer.hex() == author:
            found.append(Event(decoded[0], decoded[1], change))
        deps = index.deps(change) if change is not None else []
        if not deps:
            break
        previous = doc.get(ROOT, key, deps)
        if previous is not None and previous[1] == got[1]:
            break
        got = previous
    found.reverse()
    return found


def _deletion(doc: Document, index: ChangeIndex, key: str, writer: str) -> Event | None:
    got = doc.get(ROOT, key)
    if got is None or not isinstance(got[0], tuple):
        return None
    at = got[0][1]
    by = op_author(got[1])
    if not isinstance(at, int) or isinstance(at, bool) or by is None or by.hex() != writer:
        return None
    return Event(at, "", index.of_op(got[1]))
