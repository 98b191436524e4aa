"""What another node sent, checked before anything is verified: every document id parses, every
blob matches its hash and fits this node's limit; the changes grouped per document, in the
order they are imported (the directory decides who may write, channel heads decide private
membership, then segments). Shared by the node's intake and the replica twin sync ships."""

from __future__ import annotations

from collections.abc import Sequence

from appliance import crypto, documents
from appliance.changes import SignedChange
from appliance.errors import ChangeRejected


def import_rank(doc_id: str) -> int:
    """Directory first, then channel heads, then segments."""
    return ("directory", "head", "segment").index(documents.parse_doc_id(doc_id)[0])


def group_incoming(batches: Sequence[tuple[str, Sequence[SignedChange]]], blobs: Sequence[tuple[bytes, bytes]], max_blob_bytes: int) -> dict[str, list[SignedChange]]:
    """The changes per document, in import order; raises ChangeRejected for a document id that
    does not parse or a blob that does not match its hash or exceeds `max_blob_bytes`."""
    grouped: dict[str, list[SignedChange]] = {}
    for doc_id, changes in batches:
        try:
            documents.parse_doc_id(doc_id)
        except documents.DocumentError as exc:
            raise ChangeRejected(str(exc)) from exc
        grouped.setdefault(doc_id, []).extend(changes)
    for digest, data in blobs:
        if crypto.sha256(data) != digest:
            raise ChangeRejected(f"blob {digest.hex()[:12]} does not match its hash")
        if len(data) > max_blob_bytes:
            raise ChangeRejected(f"blob {digest.hex()[:12]} ({len(data)} bytes) is over this node's limit of {max_blob_bytes} bytes")
    return {doc_id: grouped[doc_id] for doc_id in sorted(grouped, key=import_rank)}
