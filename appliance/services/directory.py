"""The workspace directory's write side and lookups: users, nodes, roles, revocations (and,
through `terms`, the terms of service and their acceptances), written as signed entries into
the directory document and the append-only entry table."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import nacl.signing
from automerge._automerge import Document
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import certs, crypto, documents, ids, policy, user_keys
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.directory_records import Record, record_key, record_kind
from appliance.errors import InvalidInput, NotFound
from appliance.kernel import Kernel
from appliance.model import NodeInfo, UserInfo
from appliance.services.identity import IdentityService
from appliance.services.replica import ReplicaService
from appliance.services.roster import Roster, admin_hexes
from appliance.services.terms import TermsService
from appliance.services.views import ViewsService


class DirectoryService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, replica: ReplicaService, views: ViewsService) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._replica = replica
        self._views = views
        self.terms = TermsService(kernel, identity, roster, self.add_entries)

    @property
    def current(self) -> certs.Directory:
        """The resolved directory (who is trusted, as what), as this node now judges it."""
        return self._roster.current

    def user_name(self, user_hex: str) -> str:
        return self._roster.user_name(user_hex)

    def users(self, revoked: bool = False) -> list[UserInfo]:
        """The workspace's users; with `revoked`, also those whose certificate was revoked (role as last certified)."""
        listed = [
            UserInfo(name=c.name, key=k, role=c.role, local=k in self._identity.keys.local, attributes=c.attributes)
            for k, c in self._roster.current.users.items()
        ]
        if revoked:
            listed += [
                UserInfo(name=c.name, key=k, role=c.role, local=k in self._identity.keys.local, revoked=True)
                for k, c in self._roster.users_ever.items()
                if k in self._roster.current.revoked
            ]
        return sorted(listed, key=lambda u: (u.name, u.revoked))

    async def add_entries(
        self,
        entries: Sequence[Record],
        action: AuditAction,
        detail: dict[str, object],
        extra: Callable[[AsyncConnection], Any] | None = None,
    ) -> None:
        """Writes signed entries into the directory document (as the acting admin) and the
        append-only directory table, with an audit entry, in one transaction."""
        now = self._kernel.clock()

        def mutate(doc: Document) -> None:
            with doc.transaction() as tx:
                for entry in entries:
                    tx.put(documents.ROOT, record_key(entry), documents.Bytes, entry.encoded)

        async def also(conn: AsyncConnection) -> None:
            await self.store_entries(conn, [(record_kind(e), e.encoded, e.fingerprint) for e in entries], now)
            await self._kernel.audit(conn, now, self._identity.user_key.hex(), action, detail)
            if extra is not None:
                await extra(conn)

        await self._replica.commit_local(documents.DIRECTORY_DOC, mutate, also)

    async def store_entries(self, conn: AsyncConnection, entries: Iterable[tuple[str, bytes, bytes]], now: int) -> frozenset[str]:
        """Returns the admins as the directory now stands; when they changed, the messages whose
        view depends on it are re-read in this same transaction."""
        for kind, data, fingerprint in entries:
            exists = (await conn.execute(select(t.directory_entries.c.fingerprint).where(t.directory_entries.c.fingerprint == fingerprint))).first()
            if exists is None:
                await conn.execute(insert(t.directory_entries).values(fingerprint=fingerprint, kind=kind, data=data, added_at=now))
        rows = (await conn.execute(select(t.directory_entries.c.kind, t.directory_entries.c.data))).all()
        admins = admin_hexes(self._roster.resolved(rows)[0])
        if admins != self._roster.admin_hexes():
            await self._views.rejudge(conn, admins, t.messages.c.deleted_by.is_not(None))
        return admins

    async def add_user(self, name: str, role: str = "member", secret: str | None = None) -> UserInfo:
        """A new user whose secret key lives on this node, certified by the acting admin. Their key
        is sealed under `secret` - their initial secret, from the admin (made up by the node when
        not given, and returned once) - which they must replace at their first sign-in."""
        issuer = await self._identity.require_admin("user add")
        name, granted = certs.check_name(name), certs.check_role(role)
        if self._roster.current.user_by_name(name) is not None:
            raise InvalidInput(f"user {name!r} already exists; use `user role` to change the role")
        initial = secret or user_keys.one_time_secret(self._kernel.rng(user_keys.ONE_TIME_SECRET_CHARS))
        user_keys.check_secret(initial)
        user_key = crypto.new_signing_key(self._kernel.rng(32))
        pub = bytes(user_key.verify_key)
        workspace = self._identity.row.workspace_key
        cert = certs.issue_certificate(issuer, workspace=workspace, kind=certs.SubjectKind.USER, key=pub, name=name, role=granted, issued_at=self._kernel.clock(), home=self._identity.row.node_key)
        salt = self._kernel.rng(crypto.SALT_BYTES)
        derived = await asyncio.to_thread(user_keys.derive, initial, salt, self._identity.row.kdf)
        sealed = user_keys.seal(derived, bytes(user_key), self._kernel.rng(crypto.NONCE_BYTES))

        async def keep_secret(conn: AsyncConnection) -> None:
            await conn.execute(insert(t.user_secrets).values(public_key=pub, salt=salt, sealed=sealed, must_change=True, changed_at=self._kernel.clock()))

        await self.add_entries([cert], AuditAction.USER_ADDED, {"user": name, "role": role, "key": pub.hex(), "initial_secret": "given" if secret else "made up"}, keep_secret)
        self._identity.keys.local.add(pub)
        return UserInfo(name=name, key=pub, role=granted, local=True, initial_secret=None if secret else initial)

    async def set_role(self, name: str, role: str) -> UserInfo:
        issuer = await self._identity.require_admin("user role")
        granted = certs.check_role(role)
        current = self._roster.current.user_by_name(name)
        if current is None:
            raise NotFound(f"no user {name!r}")
        cert = self._recertified(issuer, current, granted, current.attributes)
        await self.add_entries([cert], AuditAction.ROLE_CHANGED, {"user": name, "from": current.role, "to": role})
        return UserInfo(name=name, key=current.key, role=granted, local=current.key in self._identity.keys.local, attributes=current.attributes)

    async def set_attributes(self, name: str, attributes: policy.Attributes) -> UserInfo:
        """Replaces a user's attributes (none: clears them) with a new certificate signed by the
        acting admin; it travels with the directory, and every node routes and admits by it."""
        issuer = await self._identity.require_admin("user attributes")
        attributes = policy.check_attributes(attributes)
        current = self._roster.current.user_by_name(name)
        if current is None:
            raise NotFound(f"no user {name!r}")
        cert = self._recertified(issuer, current, current.role, attributes)
        detail: dict[str, object] = {"user": name, "from": policy.describe(current.attributes), "to": policy.describe(attributes)}
        await self.add_entries([cert], AuditAction.ATTRIBUTES_SET, detail)
        return UserInfo(name=name, key=current.key, role=current.role, local=current.key in self._identity.keys.local, attributes=attributes)

    def _recertified(self, issuer: nacl.signing.SigningKey, current: certs.Certificate, role: certs.Role, attributes: policy.Attributes) -> certs.Certificate:
        """`current`'s user certified anew with `role` and `attributes` by `issuer`."""
        return certs.issue_certificate(
            issuer,
            workspace=self._identity.row.workspace_key,
            kind=certs.SubjectKind.USER,
            key=current.key,
            name=current.name,
            role=role,
            issued_at=max(self._kernel.clock(), current.issued_at + 1),  # newer than the certificate it replaces
            home=current.home,
            attributes=attributes,
        )

    async def revoke(self, subject: bytes, reason: str) -> None:
        """A signed revocation entry in the directory; it travels with the directory document."""
        issuer = await self._identity.require_admin("revoke")
        if subject == self._identity.user_key:
            raise InvalidInput("an admin cannot revoke themselves")
        known = self._roster.current.users.get(subject) or self._roster.current.nodes.get(subject)
        if known is None:
            raise NotFound("no such user or node in the directory")
        rev = certs.issue_revocation(issuer, workspace=self._identity.row.workspace_key, subject=subject, reason=reason, revoked_at=self._kernel.clock())
        await self.add_entries([rev], AuditAction.REVOKED, {"subject": known.name, "kind": known.kind, "key": subject.hex(), "reason": reason})

    def node_key_of(self, node_id: str) -> bytes:
        """The key of an enrolled node, by node id (check character verified) or node name."""
        for key, cert in self._roster.current.nodes.items():
            if cert.name == node_id:
                return key
        wanted = ids.normalise_key_id(node_id)
        for key in list(self._roster.current.nodes) + list(self._roster.current.revoked):
            if ids.key_id(key) == wanted:
                return key
        raise NotFound(f"no node {node_id} in this workspace's directory")

    def nodes(self) -> list[NodeInfo]:
        """Every node the directory ever certified, revoked ones included."""
        keys = [*self.peers(revoked=True), self._identity.row.node_key]
        return sorted(
            (NodeInfo(ids.key_id(k), self._roster.node_names.get(k, "?"), k, k in self._roster.current.revoked, k == self._identity.row.node_key) for k in keys),
            key=lambda n: (n.revoked, n.name),
        )

    def peers(self, *, revoked: bool = False) -> list[bytes]:
        """Every other enrolled node of the workspace; with `revoked`, revoked ones too."""
        keys = set(self._roster.current.nodes) | ({k for k in self._roster.current.revoked if k in self._roster.node_names} if revoked else set())
        return sorted(k for k in keys if k != self._identity.row.node_key)

    def trust_of(self, node_key: bytes) -> certs.Trust:
        return self._roster.current.trust_of(node_key)
