"""Point-in-time restore: a node's store cut back to what it had received at a given moment.

The change log is append-only (nothing deletes from `changes` but a remote wipe; migrations
rewrite rows, keeping their receipt times), and every row carries `received_at`. So the node as
it was at TIME is the log's rows received at or before TIME, and everything else in the store
derives from them. `rewind` runs in one transaction on a copy of a backup:

- optionally first merges the log of a later state of the same node (a later backup or the
  live store, `LaterLog`): its rows up to TIME that the base lacks;
- for each document with rows received after TIME (or merged in) it keeps the rows up to TIME,
  rebuilds the document from their bytes - a row stored without bytes (a segment carried whole,
  and the changes its `covers` stands for) takes them from the document's snapshot, which holds
  every change logged for it - checks that the rebuilt heads are the kept log's frontier, and
  stores it as the document's snapshot; a document with no row left goes, with its view rows;
- drops what arrived after TIME: directory entries, blobs, the node's own audit entries and other
  nodes' trails, peers' acknowledgements, the bundle log (a bundle imported after TIME is read
  again if presented again);
- leaves the view rows of rebuilt documents for the node to write again (`ViewsService.rebuild`:
  rows that differ are updated, those of messages that did not exist yet deleted); the rows of
  removed documents are deleted here.

Not rewound: users' sealed secrets and sign-in state (a user who changed their secret after
TIME keeps the new one), LAN peers seen, IP rules and settings."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection

from appliance import atrest, cipher, documents
from appliance import schema as t
from appliance.covered import add_to_graph
from appliance.errors import InvalidInput, StorageError
from appliance.graph import frontier
from appliance.model import iso_utc
from appliance.services.replica import put_snapshot
from appliance.stored_documents import stored_documents

_TAKEN_AT = re.compile(r"-(?P<at>[0-9]{8}T[0-9]{6}Z)\.backup\.db$")
READ_ONLY_SETTING = "read_only_copy"  # why this store refuses writes: an inspection copy
_ACTOR = bytes(16)  # the rebuilt documents are only saved: no change is made with it
_CHANGE_COLUMNS = ("doc_id", "hash", "actor", "seq", "deps", "data", "signature", "vouched_by", "received_from", "received_at", "covered", "covers")


@dataclass(frozen=True)
class LaterLog:
    """What a later state of the same node holds up to TIME, read from its file: the rows a
    base backup may lack. `covers_until` is when that state was taken (its newest record)."""

    node_key: bytes
    covers_until: int
    documents: tuple[tuple[str, str, str, int], ...]
    changes: tuple[tuple[Any, ...], ...]  # _CHANGE_COLUMNS values, in log order
    snapshots: dict[str, bytes]  # of documents with rows stored without bytes or standing for others
    directory_entries: tuple[tuple[bytes, str, bytes, int], ...]
    blobs: tuple[tuple[bytes, int, bytes, int], ...]


@dataclass(frozen=True)
class Rewound:
    """What a rewind did: the documents rebuilt (their views are to be written again), those
    removed, and how many log rows it dropped (received after TIME) and merged from a later log."""

    at: int
    rebuilt: tuple[str, ...]
    removed: tuple[str, ...]
    dropped: int
    merged: int
    touched: dict[str, frozenset[str]]  # of rebuilt segments: the messages whose rows may differ (absent: any)


def taken_at_from_name(name: str) -> int | None:
    """The time a backup file's name says it was taken (ms), if it has the backup's form."""
    match = _TAKEN_AT.search(name)
    if match is None:
        return None
    return int(datetime.strptime(match["at"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp() * 1000)


def covers_until(conn: Connection, name: str) -> int:
    """Up to when a store records what its node received: its file name's time for a backup, else
    its newest change or audit entry."""
    newest = max(
        int(conn.execute(select(func.coalesce(func.max(t.changes.c.received_at), 0))).scalar_one()),
        int(conn.execute(select(func.coalesce(func.max(t.audit_log.c.at), 0))).scalar_one()),
    )
    return max(newest, taken_at_from_name(name) or 0)


def read_later_log(path: Path, at: int, db_key: bytes | None) -> LaterLog:
    """The rows up to `at` of the store in `path`, opened read-only (a later backup, or the node's
    live `node.db`: SQLite lets a reader in beside the running node) - under `db_key`, the node's
    database key, unless it is a plain store from before encryption."""
    uri = f"{path.absolute().as_uri()}?mode=ro"
    try:
        plain = db_key is None or _is_plain(path)
        with closing(sqlite3.connect(uri, uri=True) if plain else cipher.Keyed(uri, cast(bytes, db_key), uri=True).connect()) as db:
            node_key = db.execute("SELECT node_key FROM node_identity").fetchone()
            if node_key is None:
                raise InvalidInput(f"{path.name} holds no node: it cannot be this node's change log")
            newest = db.execute("SELECT max(coalesce((SELECT max(received_at) FROM changes), 0), coalesce((SELECT max(at) FROM audit_log), 0))").fetchone()[0]
            changes = tuple(db.execute(f"SELECT {', '.join(_CHANGE_COLUMNS)} FROM changes WHERE received_at <= ? ORDER BY id", (at,)).fetchall())
            held = sorted({row[0] for row in changes if row[5] is None or row[11] is not None})  # bytes in the snapshot
            snapshots = {doc_id: bytes(data) for doc_id in held for (data,) in db.execute("SELECT data FROM snapshots WHERE doc_id = ?", (doc_id,))}
            return LaterLog(
                node_key=bytes(node_key[0]),
                covers_until=max(int(newest or 0), taken_at_from_name(path.name) or 0),
                documents=tuple(db.execute("SELECT doc_id, kind, channel_id, segment_index FROM documents").fetchall()),
                changes=changes,
                snapshots=snapshots,
                directory_entries=tuple(db.execute("SELECT fingerprint, kind, data, added_at FROM directory_entries WHERE added_at <= ?", (at,)).fetchall()),
                blobs=tuple(db.execute("SELECT hash, size, data, added_at FROM blobs WHERE added_at <= ?", (at,)).fetchall()),
            )
    except cipher.DRIVER.Error as exc:
        if cipher.wrong_key(exc):  # the same node's stores share its key
            raise InvalidInput(f"the change log given ({path.name}) is another node's: it does not open under this node's key") from exc
        raise StorageError(f"cannot read the change log in {path.name}: {exc}") from exc
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"cannot read the change log in {path.name}: {exc}") from exc


def _is_plain(path: Path) -> bool:
    with path.open("rb") as handle:
        return atrest.is_plaintext_database(handle.read(len(atrest.PLAINTEXT_HEADER)))


def rewind(conn: Connection, at: int, later: LaterLog | None) -> Rewound:
    """Cuts the store `conn` holds back to what it had received at `at` (ms), after merging
    `later`'s rows; raises InvalidInput for a time before the node held its workspace, and
    StorageError if the log lacks the bytes of a change it keeps."""
    c = t.changes.c
    first = conn.execute(select(func.min(c.received_at))).scalar()
    if first is None or at < int(first):
        since = f" (its first change arrived at {iso_utc(int(first))})" if first is not None else ""
        raise InvalidInput(f"{iso_utc(at)} is before this node held its workspace{since}: there is nothing to restore")
    merged_docs, merged = _merge(conn, later) if later is not None else (set(), 0)
    later_docs = set(conn.execute(select(c.doc_id).where(c.received_at > at).distinct()).scalars().all()) | merged_docs
    rebuilt: list[str] = []
    removed: list[str] = []
    touched: dict[str, frozenset[str]] = {}
    for doc_id in sorted(later_docs):
        left, changed = _rebuild_document(conn, doc_id, at, doc_id in merged_docs)
        (rebuilt if left else removed).append(doc_id)
        if left and changed is not None and documents.parse_doc_id(doc_id).kind == documents.DocumentKind.SEGMENT:
            touched[doc_id] = changed
    dropped = conn.execute(delete(t.changes).where(c.received_at > at)).rowcount
    segments = [doc_id for doc_id in removed if documents.parse_doc_id(doc_id).kind == documents.DocumentKind.SEGMENT]
    for start in range(0, len(segments), 500):
        chunk = segments[start : start + 500]
        conn.execute(delete(t.message_reactions).where(t.message_reactions.c.doc_id.in_(chunk)))
        conn.execute(delete(t.messages).where(t.messages.c.doc_id.in_(chunk)))
    gone_channels = [documents.parse_doc_id(doc_id).channel_id for doc_id in removed if documents.parse_doc_id(doc_id).kind == documents.DocumentKind.HEAD]
    if gone_channels:
        conn.execute(delete(t.channels).where(t.channels.c.channel_id.in_(gone_channels)))
        conn.execute(delete(t.read_markers).where(t.read_markers.c.channel_id.in_(gone_channels)))
    conn.execute(delete(t.read_markers).where(t.read_markers.c.last_read.not_in(select(t.messages.c.message_id))))
    _drop_later_records(conn, at)
    return Rewound(at, tuple(rebuilt), tuple(removed), dropped, merged, touched)


def _merge(conn: Connection, later: LaterLog) -> tuple[set[str], int]:
    """Adds `later`'s rows that this store lacks; returns the documents they touch and how many
    change rows were added."""
    own: bytes = conn.execute(select(t.node_identity.c.node_key)).scalar_one()
    if bytes(own) != later.node_key:
        raise InvalidInput("the change log given is another node's: give a later backup or the live store of the node the backup was taken of")
    present_docs: set[str] = set(conn.execute(select(t.documents.c.doc_id)).scalars().all())
    new_docs = [dict(zip(("doc_id", "kind", "channel_id", "segment_index"), row, strict=True)) for row in later.documents if row[0] not in present_docs]
    if new_docs:
        conn.execute(insert(t.documents), new_docs)
    c = t.changes.c
    logged = cast(list[tuple[str, bytes, int]], conn.execute(select(c.doc_id, c.actor, c.seq)).all())
    present = {(doc_id, bytes(actor), seq) for doc_id, actor, seq in logged}
    rows = [dict(zip(_CHANGE_COLUMNS, row, strict=True)) for row in later.changes if (row[0], bytes(row[2]), row[3]) not in present]
    if rows:
        conn.execute(insert(t.changes), rows)
    touched = {row["doc_id"] for row in rows}
    for doc_id in sorted(touched & set(later.snapshots)):  # held bytes: the later snapshot holds every change logged then
        put_snapshot(conn, doc_id, later.snapshots[doc_id], 0, 0)
    fingerprints: set[bytes] = set(conn.execute(select(t.directory_entries.c.fingerprint)).scalars().all())
    entries = [dict(zip(("fingerprint", "kind", "data", "added_at"), row, strict=True)) for row in later.directory_entries if row[0] not in fingerprints]
    if entries:
        conn.execute(insert(t.directory_entries), entries)
    hashes: set[bytes] = set(conn.execute(select(t.blobs.c.hash)).scalars().all())
    blobs = [dict(zip(("hash", "size", "data", "added_at"), row, strict=True)) for row in later.blobs if row[0] not in hashes]
    if blobs:
        conn.execute(insert(t.blobs), blobs)
    return touched, len(rows)


def _rebuild_document(conn: Connection, doc_id: str, at: int, merged: bool) -> tuple[bool, frozenset[str] | None]:
    """Rebuilds one document as of its log rows received up to `at` and stores it as its
    snapshot. Returns whether any row is left (else the document is gone) and the messages whose
    view rows may differ (None: any may). The document as stored (snapshot and the log's bytes
    after it: a row without bytes is held in the snapshot) is forked at the kept rows' frontier;
    the fork must have exactly those heads, or the store lacks a kept change's bytes."""
    c = t.changes.c
    rows = cast(Sequence[tuple[int, bytes, bytes, bytes | None, int]], conn.execute(select(c.id, c.hash, c.deps, c.covers, c.received_at).where(c.doc_id == doc_id).order_by(c.id)).all())
    kept = [row for row in rows if row[4] <= at]
    if not kept:
        conn.execute(delete(t.snapshots).where(t.snapshots.c.doc_id == doc_id))
        conn.execute(delete(t.changes).where(c.doc_id == doc_id))
        conn.execute(delete(t.documents).where(t.documents.c.doc_id == doc_id))
        return False, None
    graph: dict[bytes, bytes] = {}
    for _, change_hash, deps, covers, _ in kept:
        add_to_graph(graph, bytes(change_hash), bytes(deps), None if covers is None else bytes(covers))
    heads = list(frontier(graph))
    stored = stored_documents(conn, [doc_id])[doc_id]
    try:
        full = documents.load_document(stored.data, _ACTOR)
        doc = documents.fork_at(full, heads)
    except documents.DocumentError as exc:
        raise StorageError(f"{doc_id} cannot be rebuilt as at that time: {exc}") from exc
    if set(doc.get_heads()) != set(heads):
        raise StorageError(f"{doc_id} cannot be rebuilt as at that time: the store lacks the bytes of changes its log holds")
    changed = None if merged else documents.root_keys_changed(full, heads, full.get_heads())
    put_snapshot(conn, doc_id, doc.save(), kept[-1][0], at)
    return True, None if changed is None else frozenset(key.partition("/")[0] for key in changed)


def _drop_later_records(conn: Connection, at: int) -> None:
    """Everything else the node recorded after `at`."""
    conn.execute(delete(t.directory_entries).where(t.directory_entries.c.added_at > at))
    conn.execute(delete(t.blobs).where(t.blobs.c.added_at > at))
    conn.execute(delete(t.audit_log).where(t.audit_log.c.at > at))
    conn.execute(delete(t.workspace_audit).where(t.workspace_audit.c.received_at > at))
    conn.execute(delete(t.audit_superseded).where(t.audit_superseded.c.superseded_at > at))
    conn.execute(delete(t.peer_audit).where(t.peer_audit.c.updated_at > at))
    conn.execute(delete(t.peer_heads).where(t.peer_heads.c.updated_at > at))
    conn.execute(delete(t.peer_blobs).where(t.peer_blobs.c.updated_at > at))
    conn.execute(delete(t.bundle_log).where(t.bundle_log.c.decided_at > at))
    conn.execute(delete(t.peer_incarnations).where(t.peer_incarnations.c.first_seen > at))
