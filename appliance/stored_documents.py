"""A document as the store holds it: its newest snapshot and the change bytes logged after it,
read in two statements per 500 documents (the node's replica, an import's workers, an export's
workers all read them so)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.engine import Connection

from appliance import schema as t


@dataclass(frozen=True)
class StoredDocument:
    """A document as the store holds it: its snapshot and the change bytes logged after it, to
    load as one (empty: nothing stored), and how many changes those are."""

    data: bytes
    since_snapshot: int


_SNAPSHOT_UPTO = select(t.snapshots.c.upto_change_id).where(t.snapshots.c.doc_id == t.changes.c.doc_id).scalar_subquery()
# Rows without bytes (a segment carried whole) are always covered by the snapshot.
_TAILS = (
    select(t.changes.c.doc_id, t.changes.c.data)
    .where(and_(t.changes.c.doc_id.in_(bindparam("doc_ids", expanding=True)), t.changes.c.data.is_not(None), t.changes.c.id > func.coalesce(_SNAPSHOT_UPTO, 0)))
    .order_by(t.changes.c.id)
)


def stored_documents(conn: Connection, doc_ids: Sequence[str]) -> dict[str, StoredDocument]:
    """Every document of `doc_ids` as stored, in two statements per 500 of them."""
    snapshots: dict[str, tuple[bytes, int]] = {}
    tails: dict[str, list[bytes]] = {doc_id: [] for doc_id in doc_ids}
    for start in range(0, len(doc_ids), 500):
        chunk = doc_ids[start : start + 500]
        snapshot_rows = conn.execute(select(t.snapshots.c.doc_id, t.snapshots.c.data, t.snapshots.c.upto_change_id).where(t.snapshots.c.doc_id.in_(chunk)))
        for doc_id, data, upto in cast(list[tuple[str, bytes, int]], snapshot_rows.all()):
            snapshots[doc_id] = (data, upto)
        for doc_id, data in cast(list[tuple[str, bytes]], conn.execute(_TAILS, {"doc_ids": chunk}).all()):
            tails[doc_id].append(data)
    return {doc_id: StoredDocument(snapshots.get(doc_id, (b"", 0))[0] + b"".join(tails[doc_id]), len(tails[doc_id])) for doc_id in doc_ids}
