"""The delta packer shared by bundles and LAN sessions: cuts what a peer lacks into parts that
each fit a byte budget, measured with the LAN message codec's exact sizes (sync/messages.py:
what a Changes message, a document, a change, a segment carried whole and a blob take). A
bundle's payload encodes documents, changes, wholes and blobs the same way
(docs/bundle-format.md section 8) without the per-document heads, so the same measure bounds a
bundle part too."""

from __future__ import annotations

from typing import NamedTuple

from appliance import documents
from appliance.changes import SignedChange, relay_units
from appliance.model import Delta, WholeSegment
from sync import messages
from sync.errors import DoesNotFit


class DeltaPart(NamedTuple):
    """One part: changes per document, blobs, and segments carried whole (never split)."""

    docs: tuple[tuple[str, tuple[SignedChange, ...]], ...]
    blobs: tuple[tuple[bytes, bytes], ...]
    wholes: tuple[WholeSegment, ...] = ()


def pack_delta(delta: Delta, budget: int, *, cap: int | None = None) -> list[DeltaPart]:
    """Cuts a delta into parts whose Changes message (its documents' heads included) takes at
    most `budget` bytes, for bundles and for LAN frames alike: the directory's and channel
    heads' changes first, then the segments carried whole (newest first), then segments' change
    chunks, then blobs. A whole segment is never split: one larger than the budget goes alone
    in a part of its own if it fits `cap` (the hard limit of a part: a frame, a bundle), else
    DoesNotFit. A document may span parts: each part is a causal prefix, cut only where every
    unsigned change is followed by its actor's signed one, so each part verifies on its own once
    the earlier ones are in. A document that fits in a part of its own is not cut: its part
    starts afresh instead (half a segment imported into the other half costs a diff and a read
    per message, about 40 ms a segment, where a whole segment is read in one pass)."""
    room = budget - messages.CHANGES_OVERHEAD_BYTES
    hard_room = max(room, (budget if cap is None else cap) - messages.CHANGES_OVERHEAD_BYTES)
    parts: list[DeltaPart] = []
    current: list[tuple[str, list[SignedChange]]] = []
    wholes: list[WholeSegment] = []
    blobs: list[tuple[bytes, bytes]] = []
    used = 0

    def flush() -> None:
        nonlocal current, wholes, blobs, used
        if current or blobs or wholes:
            parts.append(DeltaPart(tuple((d, tuple(c)) for d, c in current), tuple(blobs), tuple(wholes)))
        current, wholes, blobs, used = [], [], [], 0

    def add_wholes() -> None:
        nonlocal used
        for whole in delta.wholes:
            size = messages.whole_entry_bytes(whole, delta.heads.get(whole.doc_id, ()))
            if size > hard_room:
                raise DoesNotFit(f"{whole.doc_id} carried whole needs {size:,} bytes, more than the {hard_room:,} a part may hold")
            if used + size > room:
                flush()
            wholes.append(whole)
            used += size
            if size > room:
                flush()  # alone in its part

    pending_wholes = True
    for doc_id, changes in delta.documents:
        if pending_wholes and _is_segment(doc_id):
            add_wholes()
            pending_wholes = False
        entry = messages.doc_entry_bytes(doc_id, delta.heads.get(doc_id, ()))
        atoms = [(atom, sum(messages.change_entry_bytes(c) for c in atom) + entry) for atom in relay_units(changes)]
        whole = sum(size - entry for _, size in atoms) + entry
        if used + whole > room >= whole:
            flush()
        for atom, size in atoms:
            if size > room:
                raise DoesNotFit(f"{len(atom)} change(s) of {doc_id} need {size:,} bytes, more than the {room:,} a part may hold")
            if used + size > room:
                flush()
            if current and current[-1][0] == doc_id:
                current[-1][1].extend(atom)
                used += size - entry
            else:
                current.append((doc_id, list(atom)))
                used += size
    if pending_wholes:
        add_wholes()
    for digest, _, data in delta.blobs:
        size = messages.blob_entry_bytes(data)
        if size > room:
            raise DoesNotFit(f"a {len(data):,}-byte attachment does not fit in a part of {room:,} bytes")
        if used + size > room:
            flush()
        blobs.append((digest, data))
        used += size
    flush()
    return parts


def _is_segment(doc_id: str) -> bool:
    try:
        return documents.parse_doc_id(doc_id).kind == documents.DocumentKind.SEGMENT
    except documents.DocumentError:
        return False  # not a document id this node knows: its place in the delta stands
