"""Writing: channels (create; running them is `chat.admin`, appliance/services/channel_admin.py)
and messages (post, bulk post, edit, delete,
react), each a signed change committed with its view rows in one transaction. A message's
view row is built from what the call was given (a post's fields, or the stored row with what
an edit, deletion or reaction changes), never read back from the document, and written in one
hop through the store's writer thread (`ReplicaService.commit_lean`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from automerge._automerge import Document
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import certs, documents, ids, segments
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.errors import InvalidInput, PermissionDenied
from appliance.kernel import Kernel, Stale
from appliance.model import ChannelSummary
from appliance.services.blobs import Attachment, BlobsService
from appliance.services.channel_admin import ChannelAdmin
from appliance.services.heads import ChannelHeads
from appliance.services.identity import IdentityService
from appliance.services.replica import ReplicaService
from appliance.services.roster import Roster
from appliance.services.terms import TermsGate
from appliance.services.views import ViewsService, insert_message_rows
from appliance.view_rows import mentions_json, reactions_json, view_values

SEGMENT_SIZE = 512  # messages per segment document: keeps each commit well under a millisecond
MAX_TEXT = 40_000
CHANNEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_.-]{1,64})")


def check_channel_name(name: str) -> str:
    cleaned = name.strip().lstrip("#").lower()
    if not CHANNEL_NAME.match(cleaned):
        raise InvalidInput(f"invalid channel name {name!r}: lowercase letters, digits, - and _, up to 64")
    return cleaned


def check_text(value: str) -> str:
    if not value.strip():
        raise InvalidInput("a message needs some text")
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"message too long ({len(value)} characters, at most {MAX_TEXT})")
    return value


def check_emoji(emoji: str) -> str:
    cleaned = emoji.strip()
    if not cleaned or len(cleaned) > 32 or any(c.isspace() or not c.isprintable() for c in cleaned):
        raise InvalidInput(f"invalid reaction {emoji!r}")
    return cleaned


class ChatService:
    def __init__(
        self, kernel: Kernel, identity: IdentityService, roster: Roster, heads: ChannelHeads, replica: ReplicaService, views: ViewsService, blobs: BlobsService
    ) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._heads = heads
        self._replica = replica
        self._views = views
        self._blobs = blobs
        self._terms = TermsGate(identity, roster)  # nothing is written for a user who has not accepted the terms
        self._message_ids = ids.MessageIdFactory()
        self.admin = ChannelAdmin(kernel, identity, roster, heads, replica, check_channel_name)
        self._segment_cursor: dict[str, tuple[int, int]] = {}  # channel -> (newest segment, its messages)
        kernel.on_stale(self._drop)

    def _drop(self, stale: Stale) -> None:
        """A cursor counts the messages of its channel's newest segment."""
        if stale.doc_ids is None:
            self._segment_cursor.clear()
            return
        for doc_id in stale.doc_ids:
            channel_id = documents.parse_doc_id(doc_id)[1]
            if channel_id is not None:
                self._segment_cursor.pop(channel_id, None)

    async def create_channel(self, name: str, *, private: bool = False, purpose: str = "") -> ChannelSummary:
        self._terms.require_accepted("creating a channel")
        cert = self._identity.acting_cert()
        if cert.role == certs.Role.OBSERVER:
            raise PermissionDenied("observers cannot create channels")
        name = check_channel_name(name)
        if len(purpose) > 250:
            raise InvalidInput("purpose too long (at most 250 characters)")
        async with self._kernel.store.reading() as conn:
            clash = (await conn.execute(select(t.channels.c.channel_id).where(and_(t.channels.c.name == name, t.channels.c.archived.is_(False))))).first()
        # Only here: another node may make a channel of this name while apart; both are kept.
        if clash is not None:
            raise InvalidInput(f"a channel named #{name} already exists")
        channel_id = self._kernel.rng(10).hex()
        doc_id = documents.head_doc_id(channel_id)
        kind = documents.ChannelKind.PRIVATE if private else documents.ChannelKind.PUBLIC

        def mutate(doc: Document) -> None:
            documents.create_head(doc, name=name, purpose=purpose, kind=kind, created_by=self._identity.user_key.hex(), created_at=self._kernel.clock())

        async def also(conn: AsyncConnection) -> None:
            await self._heads.materialise_head(conn, channel_id, self._replica.loaded(doc_id))
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.CHANNEL_CREATED, {"channel": name, "kind": kind})

        await self._replica.commit_local(doc_id, mutate, also)
        return ChannelSummary(channel_id, name, purpose, kind, False, 0, 0, (cert.name,), f"#{name}", False, (cert.name,), cert.name)

    async def add_member(self, channel: str, user_name: str) -> None:
        """Adds a user to a private channel (`admin.add_member`)."""
        self._terms.require_accepted("adding a member")
        await self.admin.add_member(channel, user_name)

    async def _writable(self, channel: str, *, posting: bool = False) -> documents.ChannelHead:
        """The channel, if the acting user may write in it: not an observer, not archived, and
        for a post or reply in a read-only channel, a channel admin of it (reacting stays open)."""
        self._terms.require_accepted("posting")
        head = await self._heads.channel(channel)
        cert = self._identity.acting_cert()
        if cert.role == certs.Role.OBSERVER:
            raise PermissionDenied("observers can read but not write")
        if head.archived:
            raise PermissionDenied(f"#{head.name} is archived")
        if posting and head.read_only and not head.is_channel_admin(self._identity.user_key.hex()):
            raise await self.admin.denied(f"#{head.name} is read-only: only its channel admins post there", {"channel": head.name, "channel_id": head.channel_id})
        return head

    async def _segment_for_new_message(self, channel_id: str) -> str:
        cursor = self._segment_cursor.get(channel_id)
        if cursor is None:
            async with self._kernel.store.reading() as conn:
                index = (await conn.execute(
                    select(func.max(t.documents.c.segment_index)).where(and_(t.documents.c.channel_id == channel_id, t.documents.c.kind == "segment"))
                )).scalar()
                index = index or 0
                count = (await conn.execute(
                    select(func.count()).select_from(t.messages).where(t.messages.c.doc_id == documents.segment_doc_id(channel_id, index))
                )).scalar_one()
            cursor = (index, count)
        index, count = cursor
        if count >= SEGMENT_SIZE:
            index, count = index + 1, 0
        self._segment_cursor[channel_id] = (index, count)
        return documents.segment_doc_id(channel_id, index)

    def _mentions(self, body: str) -> list[str]:
        found = []
        for name in MENTION.findall(body):
            cert = self._roster.current.user_by_name(name.rstrip("."))
            if cert is not None and cert.key.hex() not in found:
                found.append(cert.key.hex())
        return found

    async def post(self, channel: str, body: str, *, reply_to: str | None = None, attachments: Sequence[Attachment] = ()) -> str:
        head = await self._writable(channel, posting=True)
        if reply_to is not None:
            parent = await self._views.message_row(reply_to)
            if parent["channel_id"] != head.channel_id:
                raise InvalidInput("a reply must be in the same channel as its thread")
            reply_to = parent["root_id"] or parent["message_id"]
        files = [self._blobs.check_attachment(a) for a in attachments]
        (message_id,) = await self._post_into_segment(head, [check_text(body)], reply_to, files)
        return message_id

    async def post_many(self, channel: str, bodies: Sequence[str]) -> list[str]:
        """Bulk posting (bringing in history from elsewhere): still one signed change per
        message, but one transaction per segment's worth. A segment it fills is snapshotted at
        once (~5 ms a segment, 10 us a message): history brought in is often sent on at once,
        and a segment goes whole as its snapshot."""
        head = await self._writable(channel, posting=True)
        checked = [check_text(body) for body in bodies]
        posted: list[str] = []
        while len(posted) < len(checked):
            doc_id = await self._segment_for_new_message(head.channel_id)  # rolls over to a fresh segment when full
            room = SEGMENT_SIZE - self._segment_cursor[head.channel_id][1]
            batch = checked[len(posted) : len(posted) + room]
            posted += await self._post_into_segment(head, batch, None, [])
            if len(batch) == room:  # this batch filled the segment
                await self._replica.snapshot(doc_id)
        return posted

    async def _post_into_segment(
        self, head: documents.ChannelHead, bodies: Sequence[str], reply_to: str | None, files: Sequence[tuple[Attachment, bytes]]
    ) -> list[str]:
        doc_id = await self._segment_for_new_message(head.channel_id)
        refs = [segments.FileRef(name=a.name, size=len(a.data), hash=digest.hex()) for a, digest in files]
        author = self._identity.user_key.hex()
        mutations: list[Callable[[Document], None]] = []
        states: list[segments.MessageState] = []
        for body in bodies:
            now = self._kernel.clock()
            message_id = self._message_ids.new(now, int.from_bytes(self._kernel.rng(10), "big"))
            mentions = self._mentions(body)
            state = segments.MessageState(message_id, author, now, body, reply_to, None, False, {}, tuple(refs), tuple(mentions), False)
            states.append(state)

            def post(doc: Document, state: segments.MessageState = state, mentions: list[str] = mentions) -> None:
                segments.post_message(doc, message_id=state.message_id, author=author, created_at=state.created_at, text=state.text, root_id=reply_to, files=refs, mentions=mentions)

            mutations.append(post)
        rows = [view_values(head.channel_id, doc_id, state) for state in states]
        blobs = [(digest, attachment.data) for attachment, digest in files]
        stored_at, indexed = self._kernel.clock(), self._kernel.store.is_sqlite

        def write(conn: Connection) -> None:
            for digest, data in blobs:
                BlobsService.store_in(conn, digest, data, stored_at)
            insert_message_rows(conn, rows, indexed)

        def count() -> None:
            # Under the write lock: an import that came first may have reset the cursor (it is
            # then recounted from the store) or moved it to another segment.
            cursor = self._segment_cursor.get(head.channel_id)
            if cursor is not None and documents.segment_doc_id(head.channel_id, cursor[0]) == doc_id:
                self._segment_cursor[head.channel_id] = (cursor[0], cursor[1] + len(rows))
                if cursor[1] + len(rows) >= SEGMENT_SIZE:
                    self._replica.segment_filled(doc_id)

        await self._replica.commit_lean(doc_id, mutations, write, count)
        return [state.message_id for state in states]

    async def _modify(self, row: dict[str, Any], mutate: Callable[[Document], None], changes: dict[str, Any], audited: AuditAction | None = None) -> None:
        """Commits `mutate` on a message and sets `changes` on its view row (what the mutation
        does to it; "reactions" go to its reactions); `audited`: the audit action to record with
        the change (its detail names the message)."""
        head = await self._writable(row["channel_id"])
        if row["deleted"]:
            raise InvalidInput(f"message {row['message_id']} was deleted")
        audit: tuple[int, str, AuditAction, dict[str, object]] | None = None
        if audited is not None:
            detail: dict[str, object] = {"message": row["message_id"], "channel": head.name, "author": self._roster.user_name(row["author"])}
            audit = (self._kernel.clock(), self._identity.user_key.hex(), audited, detail)

        def write(conn: Connection) -> None:
            ViewsService.update_message_in(conn, row["message_id"], row["doc_id"], changes)
            if audit is not None:
                self._kernel.audit_in(conn, *audit)

        await self._replica.commit_lean(row["doc_id"], [mutate], write)

    async def edit(self, message_id: str, body: str) -> None:
        self._terms.require_accepted("editing")
        row = await self._views.message_row(message_id)
        if row["author"] != self._identity.user_key.hex():
            raise PermissionDenied("only a message's author can edit it")
        body = check_text(body)
        mentions, now = self._mentions(body), self._kernel.clock()
        changes = {"text": body, "edited_at": now, "mentions": mentions_json(mentions)}
        await self._modify(row, lambda doc: segments.edit_message(doc, row["message_id"], body, now, mentions), changes)

    async def delete(self, message_id: str) -> None:
        self._terms.require_accepted("deleting")
        row = await self._views.message_row(message_id)
        me = self._identity.user_key.hex()
        moderated = row["author"] != me
        if moderated and not self._roster.current.is_admin(self._identity.user_key):
            raise PermissionDenied("only a message's author or an admin can delete it")
        now = self._kernel.clock()
        # As a reader of the document sees a tombstone: no text, no files, stamped; a moderator's
        # deletion names its admin (re-judged should the admins change).
        changes = {"deleted": True, "text": "", "edited_at": now, "files": "[]", "deleted_by": me if moderated else None}
        await self._modify(row, lambda doc: segments.delete_message(doc, row["message_id"], now), changes, AuditAction.MESSAGE_DELETED if moderated else None)

    async def react(self, message_id: str, emoji: str, *, remove: bool = False) -> None:
        self._terms.require_accepted("reacting")
        emoji = check_emoji(emoji)
        row = await self._views.message_row(message_id)
        me = self._identity.user_key.hex()
        reactions: dict[str, list[str]] = json.loads(row["reactions"])
        if (me in reactions.get(emoji, [])) != remove:
            return  # already as asked: reacting twice (or removing what is not there) changes nothing
        users = sorted(set(reactions.get(emoji, [])) ^ {me})
        reactions = {k: v for k, v in reactions.items() if k != emoji} | ({emoji: users} if users else {})
        changes = {"reactions": reactions_json(reactions)}
        await self._modify(row, lambda doc: segments.set_reaction(doc, row["message_id"], emoji, me, not remove), changes)
