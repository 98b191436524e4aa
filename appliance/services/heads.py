"""Channel heads as materialised in `channels`: the one cache of heads and of channel names,
lookups by name or id among the channels the acting user can read. Two channels may share a
name (made apart on two nodes): a name that stands for several is an error listing each with
the way to name it alone (`#ops~3f2a`, the start of its id, or the id); `@bob` or `@bob,carol`
names the acting user's direct conversation with them."""

from __future__ import annotations

import json
from collections.abc import Sequence

from automerge._automerge import Document
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import direct, documents, policy
from appliance import schema as t
from appliance.errors import InvalidInput, NotFound
from appliance.kernel import Kernel, Stale
from appliance.services.identity import IdentityService
from appliance.services.roster import Roster
from appliance.view_rows import head_view_values

SHORT_ID = 4  # hex digits of a channel id that tell same-named channels apart in lists


def short_id(channel_id: str) -> str:
    return channel_id[:SHORT_ID]


def _requirement(text: str) -> policy.Attributes:
    try:
        return policy.decode(text)
    except InvalidInput:
        return documents.UNSATISFIABLE


class AmbiguousChannel(InvalidInput):
    """A channel name that several channels the user can read carry."""


class ChannelHeads:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
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
            read_only=row["read_only"],
            former=tuple(json.loads(row["former"])),
            requires=_requirement(row["requires"]),
        )
        self._heads_cache[channel_id] = head
        return head

    async def materialise_head(self, conn: AsyncConnection, channel_id: str, doc: Document) -> None:
        head = documents.read_head(doc, channel_id)
        if head is None:
            return
        values = head_view_values(head)
        updated = await conn.execute(update(t.channels).where(t.channels.c.channel_id == channel_id).values(**values))
        if updated.rowcount == 0:
            await conn.execute(insert(t.channels).values(channel_id=channel_id, **values))
        self._heads_cache[channel_id] = head
        self._channel_by_name.clear()

    def qualifies(self, head: documents.ChannelHead, user: bytes) -> bool:
        """Whether the user's certificate carries every attribute the channel requires."""
        if not head.requires:
            return True
        cert = self._roster.current.user(user)
        return cert is not None and policy.satisfies(cert.attributes, head.requires)

    def can_read(self, head: documents.ChannelHead, user: bytes) -> bool:
        """Public channels: everyone; private channels and direct conversations: their members
        (participants) - a member removed stops reading here, whatever this node still holds;
        and in either, only users with every attribute the channel requires."""
        return (head.kind == "public" or user.hex() in head.members) and self.qualifies(head, user)

    def creator_name(self, head: documents.ChannelHead) -> str:
        return self._roster.user_name(head.created_by) if head.created_by else "?"

    def label(self, head: documents.ChannelHead, ambiguous: bool) -> str:
        """How lists show a channel: `#ops`, or `#ops (alice, 3f2a)` when several share its
        name; a direct conversation as `@` and its other participants."""
        if head.kind == documents.ChannelKind.DIRECT:
            me = self._identity.user_key.hex()
            return "@" + ",".join(sorted(self._roster.user_name(u) for u in head.members if u != me))
        return f"#{head.name} ({self.creator_name(head)}, {short_id(head.channel_id)})" if ambiguous else f"#{head.name}"

    async def channel(self, name_or_id: str, *, administering: bool = False) -> documents.ChannelHead:
        """By id, `name~idstart`, `@user[,user...]` (a direct conversation), or by name among the
        channels the acting user can read - or, `administering` as a workspace admin, among every
        channel but direct conversations; AmbiguousChannel when several share that name."""
        self._identity.require_unlocked()
        me = self._identity.user_key
        every = administering and self._roster.current.is_admin(me)

        def visible(head: documents.ChannelHead | None) -> bool:
            return head is not None and (self.can_read(head, me) or (every and head.kind != documents.ChannelKind.DIRECT))

        cached = self._channel_by_name.get(name_or_id)
        if cached is not None and not every:
            head = await self.head(cached)
            if head is not None and self.can_read(head, self._identity.user_key):
                return head
        if name_or_id.startswith("@"):
            return await self._direct(name_or_id)
        name, _, prefix = name_or_id.lstrip("#").lower().partition("~")
        async with self._kernel.store.reading() as conn:
            by_id = (await conn.execute(select(t.channels.c.channel_id).where(t.channels.c.channel_id == name_or_id))).scalar()
            if by_id is None:
                query = select(t.channels.c.channel_id).where(t.channels.c.name == name, t.channels.c.kind != documents.ChannelKind.DIRECT)
                if len(name) >= SHORT_ID and not prefix and all(c in "0123456789abcdef" for c in name):
                    query = select(t.channels.c.channel_id).where((t.channels.c.name == name) | t.channels.c.channel_id.startswith(name))
                candidates: Sequence[str] = (await conn.execute(query.order_by(t.channels.c.created_at, t.channels.c.channel_id))).scalars().all()
            else:
                candidates = [by_id]
        readable = [head for head in [await self.head(c) for c in candidates] if head is not None and visible(head)]
        if prefix:
            readable = [head for head in readable if head.channel_id.startswith(prefix)]
        if len(readable) > 1:
            listed = "; ".join(f"#{h.name}~{short_id(h.channel_id)} (created by {self.creator_name(h)}, id {h.channel_id})" for h in readable)
            raise AmbiguousChannel(f"{len(readable)} channels are called #{name}: name one of them - {listed}")
        if readable:
            if not every:
                self._channel_by_name[name_or_id] = readable[0].channel_id
            return readable[0]
        raise NotFound(f"no channel {name_or_id!r} that you can read")

    async def _direct(self, spec: str) -> documents.ChannelHead:
        """The acting user's direct conversation with the users `@a,b` names."""
        channel_id, _ = self.direct_id(spec.lstrip("@").split(","))
        head = await self.head(channel_id)
        if head is None or not self.can_read(head, self._identity.user_key):
            raise NotFound(f"no direct conversation {spec} yet: start it with `rallypoint dm {' '.join(spec.lstrip('@').split(','))}`")
        return head

    def direct_id(self, user_names: Sequence[str]) -> tuple[str, tuple[bytes, ...]]:
        """The id and participants of the acting user's direct conversation with `user_names`."""
        keys = [self._identity.user_key]
        for user_name in user_names:
            cert = self._roster.current.user_by_name(user_name.strip().lstrip("@"))
            if cert is None:
                raise NotFound(f"no user {user_name!r}")
            keys.append(cert.key)
        participants = direct.participants_of(keys)
        return direct.direct_channel_id(participants), participants
