"""The materialised message view: every read (channels with unread counts, pages, threads,
one message, search), the read markers, and the re-judging of deletions when the admins
change. Rows are rebuilt from the documents, never the other way round."""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from automerge._automerge import Document
from sqlalchemy import and_, func, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import documents, ids, segments
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.bulk import execute_tuples, insert_tuples, update_tuples
from appliance.errors import InvalidInput, NotFound, StorageError
from appliance.kernel import Kernel
from appliance.model import MAX_READ_PAGE, ChannelSummary, FileView, MessageView
from appliance.services.heads import ChannelHeads
from appliance.services.identity import IdentityService
from appliance.services.replica import ReplicaService
from appliance.services.roster import Roster
from appliance.services.terms import TermsGate
from appliance.view_rows import VIEW_COLUMNS, reactions_row, view_row, view_tuple

# Built once: SQLAlchemy then reuses their compiled form on the hot path.
_INSERT_MESSAGE = insert(t.messages)
_NEWEST_ROW = select(func.coalesce(func.max(t.messages.c.row_id), 0))
_INDEX_MESSAGE = text("INSERT INTO messages_fts(rowid, text) VALUES (:row_id, :text)")
_INDEX_NEW_MESSAGES = text("INSERT INTO messages_fts(rowid, text) SELECT row_id, text FROM messages WHERE row_id > :before")
# Keyed by segment and message, as the view reads them (schema.message_reactions).
_SET_REACTIONS = text(
    "INSERT INTO message_reactions (doc_id, message_id, reactions) VALUES (:doc_id, :message_id, :reactions) "
    "ON CONFLICT (doc_id, message_id) DO UPDATE SET reactions = excluded.reactions"
)
_CLEAR_REACTIONS = text("DELETE FROM message_reactions WHERE doc_id = :doc_id AND message_id = :message_id")
_REACTIONS_PARAMETERS = ("message_id", "doc_id", "reactions")


_VIEW_COLUMNS = [t.messages.c[name] for name in VIEW_COLUMNS]
_MESSAGES_READ = select(*t.messages.c, t.REACTIONS_READ).select_from(t.MESSAGES_WITH_REACTIONS)  # a view row with its reactions
_REBUILD_BATCH = 32  # segments written again per transaction by a point-in-time restore


@dataclass(frozen=True)
class SegmentTouched:
    """A segment an import changed: its document as it now is and the messages touched (None: all)."""

    channel_id: str
    doc_id: str
    doc: Document
    only: set[str] | None


class ViewsService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, heads: ChannelHeads, replica: ReplicaService) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._heads = heads
        self._replica = replica
        self._terms = TermsGate(identity, roster)  # nothing is shown to a user who has not accepted the terms

    async def judge_upgraded(self) -> None:
        """Messages an upgrade marked as not yet judged (deleted_by '') are read once from their
        documents."""
        async with self._kernel.store.reading() as conn:
            unjudged = (await conn.execute(select(t.messages.c.message_id).where(t.messages.c.deleted_by == "").limit(1))).first()
        if unjudged is not None:
            with contextlib.suppress(StorageError):  # a full disk still opens; the next open retries
                async with self._kernel.lock, self._kernel.store.transaction() as conn:
                    await self.rejudge(conn, self._roster.admin_hexes(), t.messages.c.deleted_by == "")

    async def rebuild(self, doc_ids: Sequence[str], touched: Mapping[str, frozenset[str]]) -> None:
        """Writes again the view rows of documents a point-in-time restore rebuilt: channel rows
        from heads; a segment's messages as they now read - of those `touched` names for it, else
        all - a row that differs is updated (withheld ones stay so), a missing one inserted, the
        row of a message the document no longer holds deleted; and, when the directory was
        rebuilt, every deletion judged again."""
        refs = [(doc_id, documents.parse_doc_id(doc_id)) for doc_id in doc_ids]
        heads = [ref.channel_id for _, ref in refs if ref.kind == documents.DocumentKind.HEAD]
        seg_ids = [(ref.channel_id, doc_id) for doc_id, ref in refs if ref.kind == documents.DocumentKind.SEGMENT and touched.get(doc_id) != frozenset()]
        admins = self._roster.admin_hexes()
        async with self._kernel.lock:
            with self._replica.snapshots_held():
                async with self._kernel.store.transaction() as conn:
                    for channel_id in heads:
                        await self._heads.materialise_head(conn, channel_id, await self._replica.document(documents.head_doc_id(channel_id)))
                for start in range(0, len(seg_ids), _REBUILD_BATCH):
                    rows: list[tuple[Any, ...]] = []
                    reactions: list[tuple[str, str, str]] = []
                    for channel_id, doc_id in seg_ids[start : start + _REBUILD_BATCH]:
                        states = [s for s in segments.read_messages(await self._replica.document(doc_id), admins, only=touched.get(doc_id)) if ids.is_message_id(s.message_id)]
                        rows += [view_row(channel_id, doc_id, s) for s in states]
                        reactions += [reactions_row(doc_id, s) for s in states]
                    batch = {doc_id: touched.get(doc_id) for _, doc_id in seg_ids[start : start + _REBUILD_BATCH]}
                    await self._kernel.store.write(functools.partial(_rewrite_segments, rows=rows, reactions=reactions, batch=batch))
                    self.view_changed(list(batch))
                if documents.DIRECTORY_DOC in doc_ids:
                    async with self._kernel.store.transaction() as conn:
                        await self.rejudge(conn, admins, t.messages.c.deleted_by.is_not(None))

    async def newest_row(self, conn: AsyncConnection) -> int:
        """The newest view row's id: an import's new rows are those above it."""
        return int((await conn.execute(_NEWEST_ROW)).scalar_one())

    async def withhold(self, conn: AsyncConnection, after_row: int, received_from: str) -> None:
        """In an import's transaction: the posts and replies it brought (view rows above
        `after_row`) into a channel that is, as the import leaves its head, read-only or
        archived, by users who are not channel admins of it, are withheld - kept in their
        document (it converges, and relays carry it on), never shown, audited. A post made
        before its author learnt the channel turned read-only is withheld too: this node judges
        on the head it holds, as it does any change from elsewhere."""
        m, c = t.messages.c, t.channels.c
        query = (
            select(m.row_id, m.message_id, m.author, m.channel_id, c.name, c.members)
            .join(t.channels, c.channel_id == m.channel_id)
            .where(and_(m.row_id > after_row, (c.read_only.is_(True)) | (c.archived.is_(True))))
        )
        withheld: dict[tuple[str, str], list[Any]] = {}
        for row in await conn.execute(query):
            if not documents.is_channel_admin_role(json.loads(row.members).get(row.author)):
                withheld.setdefault((row.channel_id, row.name), []).append(row)
        for (channel_id, name), rows in sorted(withheld.items()):
            await conn.execute(update(t.messages).where(m.row_id.in_([row.row_id for row in rows])).values(withheld=True))
            detail: dict[str, object] = {
                "channel": name,
                "channel_id": channel_id,
                "from": received_from,
                "messages": [row.message_id for row in rows],
                "authors": sorted({self._roster.user_name(row.author) for row in rows}),
            }
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.row.node_key.hex(), AuditAction.POSTS_WITHHELD, detail)

    async def list_channels(self) -> list[ChannelSummary]:
        """The channels and direct conversations the acting user can read; same-named channels
        labelled apart (`ChannelSummary.label`)."""
        self._terms.require_reading("listing channels")
        me = self._identity.user_key.hex()
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(select(t.channels).order_by(t.channels.c.name, t.channels.c.created_at, t.channels.c.channel_id))).mappings().all()
            markers: dict[str, str] = dict((await conn.execute(select(t.read_markers.c.channel_id, t.read_markers.c.last_read).where(t.read_markers.c.user_key == self._identity.user_key))).all())
            heads = {row["channel_id"]: await self._heads.head(row["channel_id"]) for row in rows}
            readable = [row for row in rows if (head := heads[row["channel_id"]]) is not None and self._heads.can_read(head, self._identity.user_key)]
            named: dict[str, int] = {}
            for row in readable:
                if row["kind"] != documents.ChannelKind.DIRECT:
                    named[row["name"]] = named.get(row["name"], 0) + 1
            out = []
            for row in readable:
                members = json.loads(row["members"])
                head = heads[row["channel_id"]]
                assert head is not None
                since = markers.get(row["channel_id"], "")
                # Unread counts top-level messages (replies show as reply counts); mentions count anywhere.
                newer = select(func.count()).where(
                    and_(
                        t.messages.c.channel_id == row["channel_id"],
                        t.messages.c.message_id > since,
                        t.messages.c.author != me,
                        t.messages.c.deleted.is_(False),
                        t.messages.c.withheld.is_(False),
                    )
                )
                unread = (await conn.execute(newer.where(t.messages.c.root_id.is_(None)))).scalar_one()
                mentions = (await conn.execute(newer.where(t.messages.c.mentions.contains(f'"{me}"')))).scalar_one()
                out.append(
                    ChannelSummary(
                        channel_id=row["channel_id"],
                        name=row["name"],
                        purpose=row["purpose"],
                        kind=row["kind"],
                        archived=row["archived"],
                        unread=unread,
                        mentions=mentions,
                        members=tuple(sorted(self._roster.user_name(u) for u in members)) if row["kind"] != "public" else (),
                        label=self._heads.label(head, named.get(row["name"], 0) > 1),
                        read_only=head.read_only,
                        admins=tuple(sorted(self._roster.user_name(u) for u in head.admins)),
                        created_by=self._heads.creator_name(head) if head.created_by else "",
                        requires=head.requires,
                    )
                )
        return out

    async def message_row(self, message_id: str) -> dict[str, Any]:
        if not ids.is_message_id(message_id.upper()):
            raise InvalidInput(f"not a message id: {message_id!r}")
        async with self._kernel.store.reading() as conn:
            row = (await conn.execute(_MESSAGES_READ.where(t.messages.c.message_id == message_id.upper()))).mappings().first()
        if row is None or row["withheld"]:
            raise NotFound(f"no message {message_id}")
        head = await self._heads.head(row["channel_id"])
        if head is None or not self._heads.can_read(head, self._identity.user_key):
            raise NotFound(f"no message {message_id}")
        return dict(row)

    @staticmethod
    def update_message_in(conn: Connection, message_id: str, doc_id: str, changes: Mapping[str, Any]) -> None:
        """Sets columns of one message's view row, or its reactions (a local edit, deletion or
        reaction, whose effect is known without reading the document back)."""
        columns = {name: value for name, value in changes.items() if name != "reactions"}
        if columns:
            conn.execute(update(t.messages).where(t.messages.c.message_id == message_id).values(columns))
        if "reactions" in changes:
            store_reactions(conn, [(message_id, doc_id, changes["reactions"])])

    async def materialise_segment(
        self, conn: AsyncConnection, channel_id: str, doc_id: str, doc: Document, only: set[str] | None, admins: frozenset[str]
    ) -> int:
        """One segment through `materialise_segments`; how many of its messages are new."""
        return (await self.materialise_segments(conn, [SegmentTouched(channel_id, doc_id, doc, only)], admins))[doc_id]

    async def materialise_segments(self, conn: AsyncConnection, touched: Sequence[SegmentTouched], admins: frozenset[str]) -> dict[str, int]:
        """Rewrites the view of the messages that changes from elsewhere touched in each
        segment (`only`; None: every message), judged with `admins` (store_view_rows). Returns
        how many messages are new, per segment."""
        rows: list[tuple[Any, ...]] = []
        reactions: list[tuple[str, str, str]] = []
        for item in touched:
            states = [s for s in segments.read_messages(item.doc, admins, only=None if item.only is None else sorted(item.only)) if ids.is_message_id(s.message_id)]
            rows += [view_row(item.channel_id, item.doc_id, s) for s in states]
            reactions += [reactions_row(item.doc_id, s) for s in states]
        new = await conn.run_sync(store_view_rows, rows, [item.doc_id for item in touched if item.only is None], reactions)
        self.view_changed([item.doc_id for item in touched])
        return {item.doc_id: new.get(item.doc_id, 0) for item in touched}

    def view_changed(self, doc_ids: Sequence[str]) -> None:
        """Rows of these segments were written: the segment cursors count them."""
        self._kernel.invalidate(doc_ids, loaded=False)

    async def rejudge(self, conn: AsyncConnection, admins: frozenset[str], which: Any) -> None:
        """Re-reads, with `admins`, the messages `which` selects among those whose delete flag
        someone other than the author set (found by their index): whether that deletion counts
        is the only part of a view that depends on the directory."""
        m = t.messages.c
        affected: dict[tuple[str, str], set[str]] = {}
        for message in await conn.execute(select(m.message_id, m.channel_id, m.doc_id).where(which)):
            affected.setdefault((message.channel_id, message.doc_id), set()).add(message.message_id)
        with self._replica.snapshots_held():  # an eviction must not open a second write transaction
            for (channel_id, doc_id), message_ids in sorted(affected.items()):
                await self.materialise_segment(conn, channel_id, doc_id, await self._replica.document(doc_id), message_ids, admins)

    def _view(self, row: Any, channel_name: str, reply_count: int = 0) -> MessageView:
        reactions = {emoji: [self._roster.user_name(u) for u in users] for emoji, users in json.loads(row["reactions"]).items()}
        return MessageView(
            id=row["message_id"],
            channel=channel_name,
            channel_id=row["channel_id"],
            author=self._roster.user_name(row["author"]),
            author_key=row["author"],
            created_at=row["created_at"],
            text=row["text"],
            root_id=row["root_id"],
            edited_at=row["edited_at"],
            deleted=bool(row["deleted"]),
            reactions=reactions,
            files=[FileView(**f) for f in json.loads(row["files"])],
            mentions=[self._roster.user_name(u) for u in json.loads(row["mentions"])],
            reply_count=reply_count,
            tampered=bool(row["tampered"]),
        )

    async def read(self, channel: str, *, thread: str | None = None, limit: int = 50, before: str | None = None, mark_read: bool = True) -> list[MessageView]:
        """Oldest first. Without `thread`: the channel's top-level messages, each with its reply
        count; with `thread`: the thread's root and its replies."""
        self._terms.require_reading("reading")
        head = await self._heads.channel(channel)
        m = t.messages.c
        if thread is not None:
            root = await self.message_row(thread)
            root_id = root["root_id"] or root["message_id"]
            query = _MESSAGES_READ.where(and_(m.channel_id == head.channel_id, (m.message_id == root_id) | (m.root_id == root_id), m.withheld.is_(False)))
        else:
            query = _MESSAGES_READ.where(and_(m.channel_id == head.channel_id, m.root_id.is_(None), m.withheld.is_(False)))
        if before is not None:
            query = query.where(m.message_id < before)
        query = query.order_by(m.message_id.desc()).limit(max(1, min(limit, MAX_READ_PAGE)))
        async with self._kernel.store.reading() as conn:
            rows = list(reversed((await conn.execute(query)).mappings().all()))
            counts: dict[str, int] = {}
            if thread is None and rows:
                counted = await conn.execute(
                    select(m.root_id, func.count()).where(and_(m.root_id.in_([r["message_id"] for r in rows]), m.deleted.is_(False), m.withheld.is_(False))).group_by(m.root_id)
                )
                counts = dict(counted.all())
        if mark_read and rows and before is None:
            # Seeing the newest page (or a thread) means having seen the channel up to its
            # newest message, replies included.
            async with self._kernel.store.reading() as conn:
                newest = (await conn.execute(select(func.max(m.message_id)).where(m.channel_id == head.channel_id))).scalar_one()
            try:
                await self.mark_read(head.channel_id, newest)
            except StorageError as exc:  # the messages were read all the same (a full disk, say)
                self._kernel.note_skipped_write(f"#{head.name} was not marked read: {exc}")
        return [self._view(r, head.name, counts.get(r["message_id"], 0)) for r in rows]

    async def mark_read(self, channel_id: str, last_read: str) -> None:
        async with self._kernel.store.transaction() as conn:
            current = (await conn.execute(select(t.read_markers.c.last_read).where(and_(t.read_markers.c.user_key == self._identity.user_key, t.read_markers.c.channel_id == channel_id)))).scalar()
            if current is None:
                await conn.execute(insert(t.read_markers).values(user_key=self._identity.user_key, channel_id=channel_id, last_read=last_read))
            elif current < last_read:
                await conn.execute(update(t.read_markers).where(and_(t.read_markers.c.user_key == self._identity.user_key, t.read_markers.c.channel_id == channel_id)).values(last_read=last_read))

    async def message(self, message_id: str) -> MessageView:
        self._terms.require_reading("reading")
        row = await self.message_row(message_id)
        head = await self._heads.head(row["channel_id"])
        assert head is not None
        return self._view(row, head.name)

    async def search(self, query: str, *, limit: int = 50) -> list[MessageView]:
        """Full-text search over the channels the acting user can read, newest first."""
        self._terms.require_reading("searching")
        terms = re.findall(r"\w+", query)
        if not terms:
            raise InvalidInput("search needs at least one word")
        readable = {c.channel_id: c.name for c in await self.list_channels()}
        async with self._kernel.store.reading() as conn:
            if self._kernel.store.is_sqlite:
                match = " ".join(f'"{term}"' for term in terms[:-1]) + f' "{terms[-1]}"*'
                rows = (await conn.execute(
                    text(
                        "SELECT m.*, coalesce(r.reactions, '{}') AS reactions FROM messages_fts f JOIN messages m ON m.row_id = f.rowid "
                        "LEFT JOIN message_reactions r ON r.doc_id = m.doc_id AND r.message_id = m.message_id "
                        "WHERE messages_fts MATCH :q AND m.deleted = 0 AND m.withheld = 0 ORDER BY m.message_id DESC LIMIT :n"
                    ),
                    {"q": match.strip(), "n": limit * 4},
                )).mappings().all()
            else:
                condition = and_(*(t.messages.c.text.ilike(f"%{term}%") for term in terms), t.messages.c.deleted.is_(False), t.messages.c.withheld.is_(False))
                rows = (await conn.execute(_MESSAGES_READ.where(condition).order_by(t.messages.c.message_id.desc()).limit(limit * 4))).mappings().all()
        return [self._view(r, readable[r["channel_id"]]) for r in rows if r["channel_id"] in readable][:limit]


def _rewrite_segments(conn: Connection, rows: Sequence[tuple[Any, ...]], reactions: Sequence[tuple[str, str, str]], batch: Mapping[str, frozenset[str] | None]) -> None:
    """The view rows `rows` (and their `reactions`) read of segments (doc id -> the messages
    read, None: all) stored (store_view_rows), and the rows of the messages read that `rows`
    leaves out deleted."""
    store_view_rows(conn, rows, [doc_id for doc_id, only in batch.items() if only is None], reactions)
    kept = {(row[_DOC], row[_MESSAGE]) for row in rows}
    gone: list[tuple[int, str, str]] = []
    for doc_id, only in batch.items():
        query = select(t.messages.c.row_id, t.messages.c.message_id).where(t.messages.c.doc_id == doc_id)
        if only is not None:
            query = query.where(t.messages.c.message_id.in_(sorted(only)))
        gone += [(row_id, doc_id, message_id) for row_id, message_id in cast(list[tuple[int, str]], conn.execute(query).all()) if (doc_id, message_id) not in kept]
    store_reactions(conn, [(message_id, doc_id, "{}") for _, doc_id, message_id in gone])
    for start in range(0, len(gone), 500):
        conn.execute(t.messages.delete().where(t.messages.c.row_id.in_([row_id for row_id, _, _ in gone[start : start + 500]])))


def insert_view_rows(conn: Connection, rows: Sequence[tuple[Any, ...]], indexed: bool) -> None:
    """Adds rows of VIEW_COLUMNS values to the view and, when `indexed` (SQLite), their text to
    the search index in one statement (FTS5 indexes a batch about ten times faster than a
    trigger per row)."""
    if rows:
        before = conn.execute(_NEWEST_ROW).scalar_one() if indexed else 0
        insert_tuples(conn, t.messages, VIEW_COLUMNS, rows)
        if indexed:  # row_id only grows, and the write lock is ours: the new rows are those above
            conn.execute(_INDEX_NEW_MESSAGES, {"before": before})


def store_reactions(conn: Connection, reactions: Sequence[tuple[str, str, str]]) -> None:
    """Sets the reactions of messages: (message id, segment, reactions_json) each
    (reactions_row), "{}" removing them."""
    execute_tuples(conn, _SET_REACTIONS, _REACTIONS_PARAMETERS, [row for row in reactions if row[2] != "{}"])
    execute_tuples(conn, _CLEAR_REACTIONS, _REACTIONS_PARAMETERS, [row for row in reactions if row[2] == "{}"])


def store_view_rows(conn: Connection, rows: Sequence[tuple[Any, ...]], whole_docs: Collection[str], reactions: Sequence[tuple[str, str, str]]) -> dict[str, int]:
    """Writes the view rows (VIEW_COLUMNS values) an import read of the messages its changes
    touched - of every message, in the segments `whole_docs`: the rows present get the columns
    that changed (a reaction rewrites no text, so the search index is left alone), one
    executemany per set of columns; the rest are inserted in one - and then the `reactions`
    read of them and of messages whose reactions alone changed (store_reactions). Returns how
    many rows are new, per segment."""
    touched_ids = [row[_MESSAGE] for row in rows if row[_DOC] not in whole_docs]
    whole_docs = list(whole_docs)
    present: dict[tuple[str, str], Any] = {}
    for column, keys in ((t.messages.c.message_id, touched_ids), (t.messages.c.doc_id, whole_docs)):
        for start in range(0, len(keys), 500):
            for stored_row in conn.execute(select(*_VIEW_COLUMNS).where(column.in_(keys[start : start + 500]))):
                present[(stored_row[_DOC], stored_row[_MESSAGE])] = stored_row  # a message id another segment holds is not this one's
    inserts: list[tuple[Any, ...]] = []
    changed: dict[tuple[int, ...], list[tuple[Any, ...]]] = {}
    for row in rows:
        stored = present.get((row[_DOC], row[_MESSAGE]))
        if stored is None:
            inserts.append(row)
            continue
        columns = tuple(i for i, value in enumerate(row) if stored[i] != value)
        if columns:
            changed.setdefault(columns, []).append((row[_MESSAGE], row[_DOC], *(row[i] for i in columns)))
    for columns, updates in changed.items():
        update_tuples(conn, t.messages, _MESSAGE_OF_SEGMENT, tuple(VIEW_COLUMNS[i] for i in columns), updates)
    insert_view_rows(conn, inserts, conn.dialect.name == "sqlite")
    store_reactions(conn, reactions)
    new: dict[str, int] = {}
    for row in inserts:
        new[row[_DOC]] = new.get(row[_DOC], 0) + 1
    return new


_DOC, _MESSAGE = VIEW_COLUMNS.index("doc_id"), VIEW_COLUMNS.index("message_id")
_MESSAGE_OF_SEGMENT = ("message_id", "doc_id")  # a message id another segment holds is not this one's


def insert_message_rows(conn: Connection, rows: Sequence[dict[str, Any]], indexed: bool) -> None:
    """Adds rows (dicts of VIEW_COLUMNS) to the view and the search index."""
    if not rows:
        return
    if len(rows) == 1:  # a post: its row id comes back with the insert, one statement fewer
        row_id = conn.execute(_INSERT_MESSAGE, rows[0]).lastrowid
        if indexed:
            conn.execute(_INDEX_MESSAGE, {"row_id": row_id, "text": rows[0]["text"]})
        return
    insert_view_rows(conn, [view_tuple(row) for row in rows], indexed)
