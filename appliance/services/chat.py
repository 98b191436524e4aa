"""Writing: channels (create, add a member) and messages (post, bulk post, edit, delete,
react), each a signed change committed with its view rows in one transaction."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

from automerge._automerge import Document
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import certs, documents, ids, segments
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.errors import InvalidInput, NotFound, PermissionDenied
from appliance.kernel import Kernel, Stale
from appliance.model import ChannelSummary
from appliance.services.blobs import Attachment, BlobsService
from appliance.services.heads import ChannelHeads
from appliance.services.identity import IdentityService
from appliance.services.replica import ReplicaService
from appliance.services.roster import Roster
from appliance.services.views import ViewsService

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
        self._message_ids = ids.MessageIdFactory()
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
        cert = self._identity.acting_cert()
        if cert.role == certs.Role.OBSERVER:
            raise PermissionDenied("observers cannot create channels")
        name = check_channel_name(name)
        if len(purpose) > 250:
            raise InvalidInput("purpose too long (at most 250 characters)")
        async with self._kernel.store.reading() as conn:
            clash = (await conn.execute(select(t.channels.c.channel_id).where(and_(t.channels.c.name == name, t.channels.c.archived.is_(False))))).first()
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
        return ChannelSummary(channel_id, name, purpose, kind, False, 0, 0, (cert.name,))

    async def add_member(self, channel: str, user_name: str) -> None:
        head = await self._heads.channel(channel)
        if head.kind != "private":
            raise InvalidInput(f"#{head.name} is public: every user can already read it")
        if head.members.get(self._identity.user_key.hex()) != "owner" and not self._roster.current.is_admin(self._identity.user_key):
            raise PermissionDenied(f"only the owner of #{head.name} or an admin can add members")
        target = self._roster.current.user_by_name(user_name)
        if target is None:
            raise NotFound(f"no user {user_name!r}")
        doc_id = documents.head_doc_id(head.channel_id)

        async def also(conn: AsyncConnection) -> None:
            await self._heads.materialise_head(conn, head.channel_id, self._replica.loaded(doc_id))
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.MEMBER_ADDED, {"channel": head.name, "user": user_name, "role": "member"})

        await self._replica.commit_local(doc_id, lambda doc: documents.set_member(doc, target.key.hex(), documents.ChannelRole.MEMBER), also)

    async def _writable(self, channel: str) -> documents.ChannelHead:
        head = await self._heads.channel(channel)
        cert = self._identity.acting_cert()
        if cert.role == certs.Role.OBSERVER:
            raise PermissionDenied("observers can read but not write")
        if head.archived:
            raise PermissionDenied(f"#{head.name} is archived")
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
        head = await self._writable(channel)
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
        message, but one transaction per segment's worth."""
        head = await self._writable(channel)
        checked = [check_text(body) for body in bodies]
        posted: list[str] = []
        while len(posted) < len(checked):
            await self._segment_for_new_message(head.channel_id)  # rolls over to a fresh segment when full
            room = SEGMENT_SIZE - self._segment_cursor[head.channel_id][1]
            posted += await self._post_into_segment(head, checked[len(posted) : len(posted) + room], None, [])
        return posted

    async def _post_into_segment(
        self, head: documents.ChannelHead, bodies: Sequence[str], reply_to: str | None, files: Sequence[tuple[Attachment, bytes]]
    ) -> list[str]:
        doc_id = await self._segment_for_new_message(head.channel_id)
        refs = [segments.FileRef(name=a.name, size=len(a.data), hash=digest.hex()) for a, digest in files]
        mutations, message_ids = [], []
        for body in bodies:
            now = self._kernel.clock()
            message_id = self._message_ids.new(now, int.from_bytes(self._kernel.rng(10), "big"))
            message_ids.append(message_id)
            mutations.append(
                lambda doc, message_id=message_id, now=now, body=body: segments.post_message(
                    doc, message_id=message_id, author=self._identity.user_key.hex(), created_at=now, text=body, root_id=reply_to, files=refs, mentions=self._mentions(body)
                )
            )

        async def also(conn: AsyncConnection) -> None:
            for attachment, digest in files:
                await self._blobs.store(conn, digest, attachment.data)
            doc, admins = self._replica.loaded(doc_id), self._roster.admin_hexes()
            states = [segments.read_message(doc, message_id, admins) for message_id in message_ids]
            await self._views.insert_messages(conn, [self._views.message_values(head.channel_id, doc_id, state) for state in states if state is not None])
            # Under the write lock: an import that came first may have reset the cursor (it is
            # then recounted from the store) or moved it to another segment.
            cursor = self._segment_cursor.get(head.channel_id)
            if cursor is not None and documents.segment_doc_id(head.channel_id, cursor[0]) == doc_id:
                self._segment_cursor[head.channel_id] = (cursor[0], cursor[1] + len(message_ids))

        await self._replica.commit_local(doc_id, mutations, also)
        return message_ids

    async def _modify(self, message_id: str, mutate: Callable[[Document], None], audited: AuditAction | None = None) -> None:
        """`audited`: the audit action to record with the change (its detail names the message)."""
        row = await self._views.message_row(message_id)
        head = await self._writable(row["channel_id"])
        if row["deleted"]:
            raise InvalidInput(f"message {message_id} was deleted")
        doc_id = row["doc_id"]

        async def also(conn: AsyncConnection) -> None:
            await self._views.materialise_message(conn, row["channel_id"], doc_id, self._replica.loaded(doc_id), row["message_id"])
            if audited is not None:
                detail = {"message": row["message_id"], "channel": head.name, "author": self._roster.user_name(row["author"])}
                await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), audited, detail)

        await self._replica.commit_local(doc_id, mutate, also)

    async def edit(self, message_id: str, body: str) -> None:
        row = await self._views.message_row(message_id)
        if row["author"] != self._identity.user_key.hex():
            raise PermissionDenied("only a message's author can edit it")
        body = check_text(body)
        mentions = self._mentions(body)
        await self._modify(message_id, lambda doc: segments.edit_message(doc, row["message_id"], body, self._kernel.clock(), mentions))

    async def delete(self, message_id: str) -> None:
        row = await self._views.message_row(message_id)
        moderated = row["author"] != self._identity.user_key.hex()
        if moderated and not self._roster.current.is_admin(self._identity.user_key):
            raise PermissionDenied("only a message's author or an admin can delete it")
        await self._modify(message_id, lambda doc: segments.delete_message(doc, row["message_id"], self._kernel.clock()), AuditAction.MESSAGE_DELETED if moderated else None)

    async def react(self, message_id: str, emoji: str, *, remove: bool = False) -> None:
        emoji = check_emoji(emoji)
        row = await self._views.message_row(message_id)
        if (self._identity.user_key.hex() in json.loads(row["reactions"]).get(emoji, [])) != remove:
            return  # already as asked: reacting twice (or removing what is not there) changes nothing
        await self._modify(message_id, lambda doc: segments.set_reaction(doc, row["message_id"], emoji, self._identity.user_key.hex(), not remove))
