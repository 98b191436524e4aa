"""The delta packer shared by bundles and LAN sessions: cuts what a peer lacks into parts that
each fit a byte budget, measured with the LAN wire codec's exact sizes (sync/wire.py: what a
Changes message, a document, a change and a blob take). A bundle's payload encodes documents,
changes and blobs the same way (docs/bundle-format.md section 8) without the per-document
heads, so the same measure bounds a bundle part too."""

from __future__ import annotations

from appliance.changes import SignedChange, relay_units
from appliance.model import Delta
from sync import messages
from sync.errors import DoesNotFit

DeltaPart = tuple[tuple[tuple[str, tuple[SignedChange, ...]], ...], tuple[tuple[bytes, bytes], ...]]


def pack_delta(delta: Delta, budget: int) -> list[DeltaPart]:
    """Cuts a delta, in its priority order, into parts whose Changes message (its documents'
    heads included) takes at most `budget` bytes, for bundles and for LAN frames alike. A
    document may span parts: each part is a causal prefix, cut only where every unsigned
    change is followed by its actor's signed one, so each part verifies on its own once the
    earlier ones are in. A document that fits in a part of its own is not cut: its part starts
    afresh instead (half a segment imported into the other half costs a diff and a read per
    message, about 40 ms a segment, where a whole segment is read in one pass)."""
    room = budget - messages.CHANGES_OVERHEAD_BYTES
    parts: list[DeltaPart] = []
    current: list[tuple[str, list[SignedChange]]] = []
    blobs: list[tuple[bytes, bytes]] = []
    used = 0

    def flush() -> None:
        nonlocal current, blobs, used
        if current or blobs:
            parts.append((tuple((d, tuple(c)) for d, c in current), tuple(blobs)))
        current, blobs, used = [], [], 0

    for doc_id, changes in delta.documents:
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
