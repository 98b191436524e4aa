"""Running a channel: members in and out, channel admins, name, purpose, archived and
read-only, and direct conversations. Channel admins (the creator by default) and workspace
admins do it; every change is a signed head change, checked here and again by every node that
imports it (appliance/head_rules.py), and audited. A direct conversation's id comes from its
participants (appliance/direct.py), so two nodes that start it apart make one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from automerge._automerge import Document
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import certs, direct, documents, policy
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.documents import ChannelRole, HeadField
from appliance.errors import InvalidInput, NotFound, PermissionDenied
from appliance.kernel import Kernel
from appliance.model import ChannelMember, MemberRole
from appliance.services.heads import ChannelHeads
from appliance.services.identity import IdentityService
from appliance.services.replica import ReplicaService
from appliance.services.roster import Roster

MAX_PURPOSE = 250


class ChannelAdmin:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, heads: ChannelHeads, replica: ReplicaService, check_name: Callable[[str], str]) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._heads = heads
        self._replica = replica
        self._check_name = check_name

    async def denied(self, reason: str, detail: dict[str, object]) -> PermissionDenied:
        """The refusal, audited."""
        async with self._kernel.store.transaction() as conn:
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.PERMISSION_DENIED, {"reason": reason, **detail})
        return PermissionDenied(reason)

    async def administered(self, channel: str) -> documents.ChannelHead:
        """The channel, if the acting user may run it (a channel admin of it, or a workspace admin)."""
        head = await self._heads.channel(channel, administering=True)
        me = self._identity.user_key
        if head.kind == documents.ChannelKind.DIRECT:
            raise InvalidInput("a direct conversation has no channel admins: its participants never change")
        if self._identity.acting_cert().role == certs.Role.OBSERVER or not (head.is_channel_admin(me.hex()) or self._roster.current.is_admin(me)):
            raise await self.denied(f"only a channel admin of #{head.name} or a workspace admin can do that", {"channel": head.name, "channel_id": head.channel_id})
        return head

    async def _commit(self, head: documents.ChannelHead, mutate: Callable[[Document], None], action: AuditAction, detail: dict[str, object]) -> None:
        doc_id = documents.head_doc_id(head.channel_id)

        async def also(conn: AsyncConnection) -> None:
            await self._heads.materialise_head(conn, head.channel_id, self._replica.loaded(doc_id))
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), action, {"channel": head.name, "channel_id": head.channel_id, **detail})

        await self._replica.commit_local(doc_id, mutate, also)

    def _user(self, user_name: str) -> certs.Certificate:
        cert = self._roster.current.user_by_name(user_name.lstrip("@"))
        if cert is None:
            raise NotFound(f"no user {user_name!r}")
        return cert

    async def members(self, channel: str) -> list[ChannelMember]:
        """Who is in a channel the acting user can read (a workspace admin: any channel but
        direct conversations), channel admins first. A public channel lists its channel admins
        and anyone added by name; everyone reads it."""
        head = await self._heads.channel(channel, administering=True)
        if head.kind == documents.ChannelKind.DIRECT:
            role_of = {user: MemberRole.PARTICIPANT for user in head.members}
        else:
            role_of = {user: MemberRole.CHANNEL_ADMIN if head.is_channel_admin(user) else MemberRole.MEMBER for user in head.members}
        listed = [ChannelMember(self._roster.user_name(user), user, role) for user, role in role_of.items()]
        return sorted(listed, key=lambda m: (m.role != MemberRole.CHANNEL_ADMIN, m.name))

    async def add_member(self, channel: str, user_name: str, *, role: ChannelRole = ChannelRole.MEMBER) -> None:
        head = await self.administered(channel)
        target = self._user(user_name)
        if head.kind == documents.ChannelKind.PUBLIC and role == ChannelRole.MEMBER:
            raise InvalidInput(f"#{head.name} is public: every user can already read it")
        if target.key.hex() in head.members:
            raise InvalidInput(f"{target.name} is already in #{head.name}")
        if not policy.satisfies(target.attributes, head.requires):
            raise InvalidInput(f"{target.name} lacks the attributes #{head.name} requires ({policy.describe(head.requires)})")
        action = AuditAction.MEMBER_ADDED if role == ChannelRole.MEMBER else AuditAction.CHANNEL_ADMIN_GRANTED
        await self._commit(head, lambda doc: documents.set_member(doc, target.key.hex(), role), action, {"user": target.name, "role": str(role)})

    async def remove_member(self, channel: str, user_name: str) -> None:
        """Takes a user out of a channel: their node gets none of its new changes unless it
        serves another member, and they no longer read it, here or there."""
        head = await self.administered(channel)
        target = self._user(user_name)
        if target.key.hex() not in head.members:
            raise InvalidInput(f"{target.name} is not in #{head.name}")
        if head.admins == (target.key.hex(),) and not self._roster.current.is_admin(self._identity.user_key):
            raise InvalidInput(f"{target.name} is the only channel admin of #{head.name}: make someone else one first")
        await self._commit(head, lambda doc: documents.set_member(doc, target.key.hex(), ChannelRole.REMOVED), AuditAction.MEMBER_REMOVED, {"user": target.name})

    async def set_channel_admin(self, channel: str, user_name: str, admin: bool) -> None:
        """Makes a user a channel admin (adding them if they were not in it) or a plain member again."""
        head = await self.administered(channel)
        target = self._user(user_name)
        key = target.key.hex()
        if admin == head.is_channel_admin(key):
            raise InvalidInput(f"{target.name} {'is already' if admin else 'is not'} a channel admin of #{head.name}")
        if not admin and head.admins == (key,):
            raise InvalidInput(f"{target.name} is the only channel admin of #{head.name}: make someone else one first")
        if admin and not policy.satisfies(target.attributes, head.requires):
            raise InvalidInput(f"{target.name} lacks the attributes #{head.name} requires ({policy.describe(head.requires)})")
        if admin and head.kind == documents.ChannelKind.PRIVATE and target.role == certs.Role.OBSERVER:
            raise InvalidInput(f"{target.name} is an observer and cannot run a channel")
        role = ChannelRole.ADMIN if admin else ChannelRole.MEMBER
        action = AuditAction.CHANNEL_ADMIN_GRANTED if admin else AuditAction.CHANNEL_ADMIN_REVOKED
        await self._commit(head, lambda doc: documents.set_member(doc, key, role), action, {"user": target.name})

    async def rename(self, channel: str, new_name: str) -> None:
        head = await self.administered(channel)
        name = self._check_name(new_name)
        async with self._kernel.store.reading() as conn:
            clash = (await conn.execute(select(t.channels.c.channel_id).where(and_(t.channels.c.name == name, t.channels.c.channel_id != head.channel_id)))).first()
        if clash is not None:
            raise InvalidInput(f"a channel named #{name} already exists")
        await self._commit(head, lambda doc: documents.set_head_field(doc, HeadField.NAME, name), AuditAction.CHANNEL_RENAMED, {"from": head.name, "to": name})

    async def set_purpose(self, channel: str, purpose: str) -> None:
        head = await self.administered(channel)
        if len(purpose) > MAX_PURPOSE:
            raise InvalidInput(f"purpose too long (at most {MAX_PURPOSE} characters)")
        await self._commit(head, lambda doc: documents.set_head_field(doc, HeadField.PURPOSE, purpose), AuditAction.CHANNEL_PURPOSE_SET, {"from": head.purpose, "to": purpose})

    async def set_archived(self, channel: str, archived: bool) -> None:
        head = await self.administered(channel)
        if head.archived == archived:
            raise InvalidInput(f"#{head.name} is {'already' if archived else 'not'} archived")
        action = AuditAction.CHANNEL_ARCHIVED if archived else AuditAction.CHANNEL_UNARCHIVED
        await self._commit(head, lambda doc: documents.set_head_field(doc, HeadField.ARCHIVED, archived), action, {})

    async def set_read_only(self, channel: str, read_only: bool) -> None:
        head = await self.administered(channel)
        if head.read_only == read_only:
            raise InvalidInput(f"#{head.name} is {'already' if read_only else 'not'} read-only")
        await self._commit(head, lambda doc: documents.set_head_field(doc, HeadField.READ_ONLY, read_only), AuditAction.CHANNEL_READ_ONLY_SET, {"read_only": read_only})

    async def set_requirements(self, channel: str, attributes: policy.Attributes) -> None:
        """The attributes a user needs to be in the channel, read it, or have it reach their node
        (none: no requirement). Members who lack them stay listed but read nothing; their nodes
        get nothing new of it."""
        head = await self.administered(channel)
        required = policy.check_attributes(attributes)
        if required == head.requires:
            raise InvalidInput(f"#{head.name} already requires {policy.describe(required)}")
        detail: dict[str, object] = {"from": policy.describe(head.requires), "to": policy.describe(required)}
        await self._commit(head, lambda doc: documents.set_head_field(doc, HeadField.REQUIRES, policy.encode(required)), AuditAction.CHANNEL_POLICY_SET, detail)

    async def start_direct(self, user_names: Sequence[str]) -> documents.ChannelHead:
        """The acting user's direct conversation with `user_names` (1 to 7 others), made if it
        does not exist here yet - with the same id and the same head values every participant's
        node makes, so two started apart are one."""
        if self._identity.acting_cert().role == certs.Role.OBSERVER:
            raise PermissionDenied("observers can read but not write")
        channel_id, participants = self._heads.direct_id(user_names)
        existing = await self._heads.head(channel_id)
        if existing is not None:
            return existing
        for key in participants:
            if key in self._roster.current.revoked or self._roster.current.user(key) is None:
                raise InvalidInput("a direct conversation is between current users of this workspace")
        doc_id = documents.head_doc_id(channel_id)
        names = sorted(self._roster.user_name(key.hex()) for key in participants)

        async def also(conn: AsyncConnection) -> None:
            await self._heads.materialise_head(conn, channel_id, self._replica.loaded(doc_id))
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.DIRECT_STARTED, {"channel_id": channel_id, "participants": names})

        await self._replica.commit_local(doc_id, lambda doc: documents.create_direct_head(doc, direct.encode_participants(participants)), also)
        head = await self._heads.head(channel_id)
        assert head is not None
        return head
