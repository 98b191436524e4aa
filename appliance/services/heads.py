"""Channel heads as materialised in `channels`: the one cache of heads and of channel names,
lookups by name or id among the channels the acting user can read."""

from __future__ import annotations

import json
from collections.abc import Sequence

from automerge._automerge import Document
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import documents
from appliance import schema as t
from appliance.errors import NotFound
from appliance.kernel import Kernel, Stale
from appliance.services.identity import IdentityService


class ChannelHeads:
    def __init__(self, kernel: Kernel, identity: IdentityService) -> None:
        self._kernel = kernel
        self._identity = identity
        self._heads_cache: dict[str, documents.ChannelHead] = {}
        self._channel_by_name: dict[str, str] = {}
        kernel.on_stale(self._drop)

    def _drop(self, stale: Stale) -> None:
        """A head is derived from its head document; names from every head."""
        if stale.doc_ids is None:
            self._heads_cache.clear()
            self._channel_by_name.clear()
            return
        for doc_id in stale.doc_ids:
            kind, channel_id, _ = documents.parse_doc_id(doc_id)
            if kind == "head":
                self._heads_cache.pop(channel_id, None)
                self._channel_by_name.clear()

    def cached(self, channel_id: str) -> documents.ChannelHead | None:
        """The head if it is in memory (what an import just materialised), without a read."""
        return self._heads_cache.get(channel_id)

    async def head(self, channel_id: str) -> documents.ChannelHead | None:
        head = self._heads_cache.get(channel_id)
        if head is not None:
            return head
        async with self._kernel.store.reading() as conn:
            row = (await conn.execute(select(t.channels).where(t.channels.c.channel_id == channel_id))).mappings().first()
        if row is None:
            return None
        head = documents.ChannelHead(
            channel_id=channel_id,
            name=row["name"],
            purpose=row["purpose"],
            kind=row["kind"],
            created_by=row["created_by"],
            created_at=row["created_at"],
            archived=row["archived"],
            members=json.loads(row["members"]),
        )
        self._heads_cache[channel_id] = head
        return head

    async def materialise_head(self, conn: AsyncConnection, channel_id: str, doc: Document) -> None:
        head = documents.read_head(doc, channel_id)
        if head is None:
            return
        values = {
            "name": head.name,
            "purpose": head.purpose,
            "kind": head.kind,
            "archived": head.archived,
            "created_by": head.created_by,
            "created_at": head.created_at,
            "members": json.dumps(head.members, sort_keys=True),
        }
        updated = await conn.execute(update(t.channels).where(t.channels.c.channel_id == channel_id).values(**values))
        if updated.rowcount == 0:
            await conn.execute(insert(t.channels).values(channel_id=channel_id, **values))
        self._heads_cache[channel_id] = head
        self._channel_by_name.clear()

    @staticmethod
    def can_read(head: documents.ChannelHead, user: bytes) -> bool:
        return head.kind == "public" or user.hex() in head.members

    async def channel(self, name_or_id: str) -> documents.ChannelHead:
        """By id, or by name among the channels the acting user can read."""
        self._identity.require_unlocked()
        cached = self._channel_by_name.get(name_or_id)
        if cached is not None:
            head = await self.head(cached)
            if head is not None and self.can_read(head, self._identity.user_key):
                return head
        async with self._kernel.store.reading() as conn:
            by_id = (await conn.execute(select(t.channels.c.channel_id).where(t.channels.c.channel_id == name_or_id))).scalar()
            if by_id is None:
                name = name_or_id.lstrip("#").lower()
                candidates: Sequence[str] = (await conn.execute(select(t.channels.c.channel_id).where(t.channels.c.name == name).order_by(t.channels.c.created_at))).scalars().all()
            else:
                candidates = [by_id]
        for channel_id in candidates:
            head = await self.head(channel_id)
            if head is not None and self.can_read(head, self._identity.user_key):
                self._channel_by_name[name_or_id] = channel_id
                return head
        raise NotFound(f"no channel {name_or_id!r} that you can read")
