"""A Rallypoint node: one workspace member's local-first store of channels.

`Node` is an async context manager. It is created by `Node.init` or `Node.join` and opened
with `Node.open`; every operation checks the acting user's certificate and channel role
here, in the node, whatever interface calls it.

Write path of a local edit: change the in-memory Automerge document, sign the new change,
then in ONE database transaction append it to the change log and update the materialised
views (and the audit log where it applies). If that transaction fails the cached document
is dropped and reloaded from the store, so memory never runs ahead of disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nacl.signing
from automerge._automerge import Document
from sqlalchemy import and_, bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import audit, backups, cbor, certs, crypto, documents, identity, ids, netpolicy
from appliance import schema as t
from appliance.changes import (
    ChangeHeader,
    SignedChange,
    VerifiedChange,
    parse_change,
    sign_change,
    verify_batch,
)
from appliance.feed import ChangeFeed, DirectoryChanged, DocumentsChanged, NodeWiped, Origin
from appliance.errors import (
    AlreadyInitialised,
    BlobTooLarge,
    CertificateInvalid,
    ChangeRejected,
    EnrollmentRejected,
    IdentityConflict,
    InvalidInput,
    NodeLocked,
    NotFound,
    NotInitialised,
    PermissionDenied,
    RallypointError,
    StorageError,
    WrongPassphrase,
)
from appliance.model import (
    MAX_READ_PAGE,
    AuditRecord,
    BackupInfo,
    ChannelIntake,
    ChannelSummary,
    Delta,
    Enrollment,
    FileView,
    Identity,
    ImportResult,
    ImportSummary,
    LanPeer,
    MessageView,
    NodeInfo,
    PeerStatus,
    Receipt,
    UserInfo,
)
from appliance.files import COPY_CHUNK_BYTES, create_private, open_regular, owned
from appliance.store import DB_FILE, Storage, Store, check_database_file, ensure_home

Clock = Callable[[], int]
Random = Callable[[int], bytes]

SEGMENT_SIZE = 512  # messages per segment document: keeps each commit well under a millisecond
SNAPSHOT_EVERY = 256  # changes appended to a document before its snapshot is refreshed
CACHED_DOCUMENTS = 64  # loaded documents kept in memory (a full segment takes ~0.6 MB)
DEFAULT_MAX_BLOB_BYTES = 25 * 1024 * 1024
MAX_TEXT = 40_000
MAX_CHANNEL_NAME = 64
ENROLLMENT_FORMAT = "rallypoint-enrollment/1"
MAX_ENROLLMENT_FILE_BYTES = 16 * 1024 * 1024  # certificates and the directory: far below this in any workspace
ENROLLMENT_CODE_CHARS = 12  # 60 bits, behind Argon2id "moderate": not brute-forceable offline
CHANNEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
BACKUP_SUFFIX = ".backup.db"  # a SQLite file: `sqlite3` opens it read-only for inspection
LOCKED_SETTING = "locked"  # set by a remote wipe; its value is the reason shown on open
MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_.-]{1,64})")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


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


@dataclass(frozen=True)
class Attachment:
    name: str
    data: bytes


@dataclass
class _Keys:
    """Secrets held in memory while the node is unlocked."""

    data_key: bytes
    node: nacl.signing.SigningKey
    workspace: nacl.signing.SigningKey | None
    users: dict[bytes, nacl.signing.SigningKey]


@dataclass(frozen=True)
class _Row:
    workspace_name: str
    workspace_key: bytes
    node_name: str
    node_key: bytes
    default_user: bytes
    incarnation: bytes  # this installation of the identity (see schema.node_identity)


class Node:
    def __init__(
        self,
        home: Path,
        store: Storage,
        row: _Row,
        keys: _Keys,
        acting_user: bytes,
        clock: Clock,
        rng: Random,
    ) -> None:
        self.home = home
        self.store = store
        self._row = row
        self._keys = keys
        self._user = acting_user
        self._clock = clock
        self._rng = rng
        self._actor_suffix = rng(16)  # fresh per process: a restored backup never reuses a seq
        self._message_ids = ids.MessageIdFactory()
        self._docs: OrderedDict[str, Document] = OrderedDict()  # least recently used first
        self._known: dict[str, set[bytes]] = {}
        self._since_snapshot: dict[str, int] = {}
        self._segment_cursor: dict[str, tuple[int, int]] = {}
        self._heads_cache: dict[str, documents.ChannelHead] = {}
        self._channel_by_name: dict[str, str] = {}
        self._doc_rows: set[str] = set()
        self._watermark = 0
        self._api_directory = certs.resolve_directory(row.workspace_key, [], [], clock())
        self._node_names: dict[bytes, str] = {}
        self._users_ever: dict[bytes, certs.Certificate] = {}
        self._decoded: dict[tuple[str, bytes], certs.Certificate | certs.Revocation] = {}  # entries are checked once
        self._api_max_blob_bytes = DEFAULT_MAX_BLOB_BYTES
        self._lock = asyncio.Lock()
        self._locked: str | None = None  # the reason, once a remote wipe happened
        self._hold_snapshots = False  # set while an import's transaction is open
        self.feed = ChangeFeed(self._api_refresh)
        # Writes that failed without failing what was asked (a snapshot, a read marker): said once each.
        self._api_skipped_writes: list[str] = []
        self.identity = _IdentityFacet(self)
        self.directory = _DirectoryFacet(self)
        self.enrollment = _EnrollmentFacet(self)
        self.chat = _ChatFacet(self)
        self.views = _ViewsFacet(self)
        self.replica = _ReplicaFacet(self)
        self.blobs = _BlobsFacet(self)
        self.intake = _IntakeFacet(self)
        self.exchange = _ExchangeFacet(self)
        self.peers = _PeersFacet(self)
        self.audit = _AuditFacet(self)
        self.custody = _CustodyFacet(self)

    # --- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Node:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self._flush_snapshots()
        finally:
            await self.store.__aexit__(None, None, None)

    @staticmethod
    async def _fresh_store(home: Path, store: Storage | None) -> Storage:
        ensure_home(home)
        store = store or Store.at(home)
        await store.__aenter__()
        if await store.has_identity():
            await store.__aexit__(None, None, None)
            raise AlreadyInitialised(f"{home} already holds a node")
        return store

    @classmethod
    async def init(
        cls,
        home: Path,
        *,
        workspace_name: str,
        user_name: str,
        node_name: str,
        passphrase: str,
        kdf: crypto.KdfParams = crypto.INTERACTIVE,
        clock: Clock = wall_clock_ms,
        rng: Random = crypto.random_bytes,
        store: Storage | None = None,
    ) -> Node:
        """A new workspace whose first admin is `user_name` on this node."""
        workspace_name = certs.check_name(workspace_name)
        user_name = certs.check_name(user_name)
        node_name = certs.check_name(node_name)
        _check_passphrase(passphrase)
        store = await cls._fresh_store(home, store)
        try:
            workspace_key = crypto.new_signing_key(rng(32))
            node_key = crypto.new_signing_key(rng(32))
            user_key = crypto.new_signing_key(rng(32))
            ws_pub = bytes(workspace_key.verify_key)
            now = clock()
            issued = [
                certs.issue_certificate(workspace_key, workspace=ws_pub, kind="user", key=bytes(user_key.verify_key), name=user_name, role="admin", issued_at=now, home=bytes(node_key.verify_key)),
                certs.issue_certificate(workspace_key, workspace=ws_pub, kind="node", key=bytes(node_key.verify_key), name=node_name, role="node", issued_at=now),
            ]
            keys = _Keys(rng(32), node_key, workspace_key, {bytes(user_key.verify_key): user_key})
            row = _Row(workspace_name, ws_pub, node_name, bytes(node_key.verify_key), bytes(user_key.verify_key), rng(identity.INCARNATION_BYTES))
            await cls._write_identity(store, row, keys, passphrase, kdf, rng, now)
            node = cls(home, store, row, keys, row.default_user, clock, rng)
            await node._add_directory_entries(issued, "init", {"workspace": node._api_workspace_id, "user": user_name, "node": node._api_node_id})
            return node
        except BaseException:
            await store.__aexit__(None, None, None)
            raise

    @staticmethod
    async def _write_identity(store: Storage, row: _Row, keys: _Keys, passphrase: str, kdf: crypto.KdfParams, rng: Random, now: int) -> None:
        salt = rng(crypto.SALT_BYTES)
        sealed_data_key = await asyncio.to_thread(crypto.seal_with_passphrase, passphrase, keys.data_key, salt, rng(crypto.NONCE_BYTES), kdf)
        secrets_rows = [(bytes(keys.node.verify_key), "node", keys.node)]
        if keys.workspace is not None:
            secrets_rows.append((row.workspace_key, "workspace", keys.workspace))
        secrets_rows += [(pub, "user", sk) for pub, sk in keys.users.items()]
        async with store.transaction() as conn:
            await conn.execute(
                insert(t.node_identity).values(
                    id=1,
                    workspace_name=row.workspace_name,
                    workspace_key=row.workspace_key,
                    node_name=row.node_name,
                    node_key=row.node_key,
                    default_user=row.default_user,
                    kdf_salt=salt,
                    kdf_opslimit=kdf.opslimit,
                    kdf_memlimit=kdf.memlimit,
                    sealed_data_key=sealed_data_key,
                    created_at=now,
                    incarnation=row.incarnation,
                    audit_legacy_until=0,
                )
            )
            for pub, kind, sk in secrets_rows:
                sealed = crypto.secretbox_seal(keys.data_key, bytes(sk), rng(crypto.NONCE_BYTES))
                await conn.execute(insert(t.sealed_secrets).values(public_key=pub, kind=kind, sealed=sealed))

    @staticmethod
    def exists(home: Path) -> bool:
        """Whether `home` holds a node (to choose between first-run setup and unlock)."""
        return (home / DB_FILE).exists()

    @classmethod
    async def open(
        cls,
        home: Path,
        passphrase: str,
        *,
        as_user: str | None = None,
        clock: Clock = wall_clock_ms,
        rng: Random = crypto.random_bytes,
        store: Storage | None = None,
    ) -> Node:
        """Unlocks the node. A wrong passphrase raises WrongPassphrase, is audited, and
        changes nothing else."""
        if store is None and not Node.exists(home):
            raise NotInitialised(f"no node in {home}: run `rallypoint init` or `rallypoint join` first")
        store = store or Store.at(home)
        await store.__aenter__()
        try:
            async with store.reading() as conn:
                ident = (await conn.execute(select(t.node_identity))).mappings().first()
                if ident is None:
                    raise NotInitialised(f"no node in {home}: run `rallypoint init` or `rallypoint join` first")
                sealed_rows = (await conn.execute(select(t.sealed_secrets))).all()
                locked = (await conn.execute(select(t.settings.c.value).where(t.settings.c.name == LOCKED_SETTING))).scalar()
            if locked is not None:
                raise NodeLocked(locked)
            params = crypto.KdfParams(ident["kdf_opslimit"], ident["kdf_memlimit"])
            try:
                data_key = await asyncio.to_thread(crypto.open_with_passphrase, passphrase, ident["sealed_data_key"], ident["kdf_salt"], params)
            except WrongPassphrase:
                with contextlib.suppress(StorageError):  # a full disk: the attempt goes unaudited, the answer stays right
                    async with store.transaction() as conn:
                        await _append_audit(conn, None, clock(), "-", "unlock_failed", {"reason": "wrong passphrase"})
                raise
            keys = _Keys(data_key, None, None, {})  # type: ignore[arg-type]
            for pub, kind, sealed in sealed_rows:
                seed = crypto.secretbox_open(data_key, sealed)
                if seed is None:
                    raise RallypointError(f"sealed {kind} key is damaged")
                sk = crypto.new_signing_key(seed)
                if kind == "node":
                    keys.node = sk
                elif kind == "workspace":
                    keys.workspace = sk
                else:
                    keys.users[pub] = sk
            row = _Row(ident["workspace_name"], ident["workspace_key"], ident["node_name"], ident["node_key"], ident["default_user"], ident["incarnation"])
            node = cls(home, store, row, keys, row.default_user, clock, rng)
            await node._load_state()
            await node._judge_upgraded()
            if as_user is not None:
                await node._api_act_as(as_user)
            return node
        except BaseException:
            await store.__aexit__(None, None, None)
            raise

    async def _load_state(self) -> None:
        async with self.store.reading() as conn:
            rows = (await conn.execute(select(t.directory_entries.c.kind, t.directory_entries.c.data))).all()
            self._watermark = await self._newest_change_id(conn)
            limit = (await conn.execute(select(t.settings.c.value).where(t.settings.c.name == "max_blob_bytes"))).scalar()
        if limit is not None:
            self._api_max_blob_bytes = int(limit)
        self._resolve([(kind, data) for kind, data in rows])

    async def _judge_upgraded(self) -> None:
        """Messages an upgrade marked as not yet judged (deleted_by '') are read once from their
        documents."""
        async with self.store.reading() as conn:
            unjudged = (await conn.execute(select(t.messages.c.message_id).where(t.messages.c.deleted_by == "").limit(1))).first()
        if unjudged is not None:
            with contextlib.suppress(StorageError):  # a full disk still opens; the next open retries
                async with self._lock, self.store.transaction() as conn:
                    await self._rejudge(conn, self._admin_hexes(), t.messages.c.deleted_by == "")

    def _resolve(self, entries: Iterable[tuple[str, bytes]]) -> None:
        self._api_directory, decoded = self._resolved(entries)
        self._node_names = {e.key: e.name for e in decoded if isinstance(e, certs.Certificate) and e.kind == "node"}
        user_certs = sorted((e for e in decoded if isinstance(e, certs.Certificate) and e.kind == "user"), key=lambda c: c.issued_at)
        self._users_ever = {c.key: c for c in user_certs}  # newest certificate per user, revoked ones too

    def _resolved(self, entries: Iterable[tuple[str, bytes]]) -> tuple[certs.Directory, list[certs.Certificate | certs.Revocation]]:
        decoded = []
        for kind, data in entries:
            entry = self._decoded.get((kind, data))
            if entry is None:
                try:
                    entry = self._decoded[(kind, data)] = _decode_entry(kind, data)
                except CertificateInvalid:
                    continue  # stored entries were checked on arrival; a damaged one trusts nothing
            decoded.append(entry)
        return certs.resolve_directory(self._row.workspace_key, *_split_entries(decoded), self._clock()), decoded

    # --- who -----------------------------------------------------------------------

    @property
    def _api_workspace_id(self) -> str:
        return ids.key_id(self._row.workspace_key)

    @property
    def _api_node_id(self) -> str:
        return ids.key_id(self._row.node_key)

    @property
    def _api_workspace_key(self) -> bytes:
        return self._row.workspace_key

    @property
    def _api_node_key(self) -> bytes:
        return self._row.node_key

    @property
    def _api_incarnation(self) -> bytes:
        """This installation of the node's identity (what peers see in handshakes and bundles)."""
        return self._row.incarnation

    @property
    def _api_locked_reason(self) -> str | None:
        """Why this node holds nothing any more (its revocation arrived and it wiped itself)."""
        return self._locked

    def _notify(self, doc_ids: Iterable[str], origin: Origin, received_from: str | None = None) -> None:
        changed = frozenset(doc_ids)
        if not changed:
            return
        channels = frozenset(channel for channel in (documents.parse_doc_id(doc_id)[1] for doc_id in changed) if channel is not None)
        self.feed.publish(DocumentsChanged(changed, channels, origin, received_from))
        if documents.DIRECTORY_DOC in changed:
            self.feed.publish(DirectoryChanged(origin))

    def _api_now(self) -> int:
        """This node's clock, in ms."""
        return self._clock()

    @property
    def _api_user_key(self) -> bytes:
        return self._user

    async def _api_act_as(self, name: str) -> None:
        """Makes `name` the acting user. The passphrase unlocks the node, not a person: every
        local user's key is sealed under it, so acting as anyone but the node's default user
        would need that user's own sign-in, which this version does not have yet. Until it
        does, only the default user acts; a refusal is audited."""
        default = self._api_directory.user(self._row.default_user)
        if default is not None and default.name == name:
            self._user = self._row.default_user
            return
        if not any((cert := self._api_directory.user(pub)) is not None and cert.name == name for pub in self._keys.users):
            raise NotFound(f"no local user {name!r} on this node")
        async with self.store.transaction() as conn:
            await _append_audit(conn, self._keys.node, self._clock(), self._row.default_user.hex(), "permission_denied", {"action": f"act as {name}"})
        owner = default.name if default is not None else ids.key_id(self._row.default_user)
        raise PermissionDenied(
            f"this node acts only as its own user {owner}: acting as {name} needs {name}'s own sign-in, which this version does not have yet"
            f" (the node's passphrase is not {name}'s secret); {name} can use a node enrolled for them (rallypoint invite)"
        )

    def _api_whoami(self) -> Identity:
        cert = self._api_directory.user(self._user)
        return Identity(
            workspace_name=self._row.workspace_name,
            workspace_id=self._api_workspace_id,
            workspace_key=self._row.workspace_key,
            node_name=self._row.node_name,
            node_id=self._api_node_id,
            node_key=self._row.node_key,
            user_name=cert.name if cert else ids.key_id(self._user),
            user_key=self._user,
            role=cert.role if cert else "revoked",
            holds_workspace_key=self._keys.workspace is not None,
        )

    def _api_user_name(self, user_hex: str) -> str:
        try:
            cert = self._api_directory.user(bytes.fromhex(user_hex))
        except ValueError:
            cert = None
        return cert.name if cert else f"unknown:{user_hex[:8]}"

    def _api_users(self, revoked: bool = False) -> list[UserInfo]:
        """The workspace's users; with `revoked`, also those whose certificate was revoked (role as last certified)."""
        listed = [
            UserInfo(name=c.name, key=k, role=c.role, local=k in self._keys.users)
            for k, c in self._api_directory.users.items()
        ]
        if revoked:
            listed += [
                UserInfo(name=c.name, key=k, role=c.role, local=k in self._keys.users, revoked=True)
                for k, c in self._users_ever.items()
                if k in self._api_directory.revoked
            ]
        return sorted(listed, key=lambda u: (u.name, u.revoked))

    def _acting_cert(self) -> certs.Certificate:
        cert = self._api_directory.user(self._user)
        if cert is None:
            raise PermissionDenied("this user's certificate is revoked, expired or unknown")
        return cert

    async def _require_admin(self, action: str) -> nacl.signing.SigningKey:
        cert = self._api_directory.user(self._user)
        if cert is None or cert.role != "admin":
            async with self.store.transaction() as conn:
                await _append_audit(conn, self._keys.node, self._clock(), self._user.hex(), "permission_denied", {"action": action})
            raise PermissionDenied(f"{action} needs the admin role")
        return self._keys.users[self._user]

    # --- directory: certificates, users, enrollment, revocation ---------------------

    async def _add_directory_entries(
        self,
        entries: Sequence[certs.Certificate | certs.Revocation],
        action: str,
        detail: dict[str, object],
        extra: Callable[[AsyncConnection], Any] | None = None,
    ) -> None:
        """Writes signed entries into the directory document (as the acting admin) and the
        append-only directory table, with an audit entry, in one transaction."""
        now = self._clock()

        def mutate(doc: Document) -> None:
            with doc.transaction() as tx:
                for entry in entries:
                    prefix = "cert" if isinstance(entry, certs.Certificate) else "rev"
                    tx.put(documents.ROOT, f"{prefix}:{entry.fingerprint.hex()}", documents.Bytes, entry.encoded)

        async def also(conn: AsyncConnection) -> None:
            await self._store_directory_entries(conn, [(_entry_kind(e), e.encoded, e.fingerprint) for e in entries], now)
            await _append_audit(conn, self._keys.node, now, self._user.hex(), action, detail)
            if extra is not None:
                await extra(conn)

        await self._commit_local(documents.DIRECTORY_DOC, mutate, also)

    async def _store_directory_entries(self, conn: AsyncConnection, entries: Iterable[tuple[str, bytes, bytes]], now: int) -> frozenset[str]:
        """Returns the admins as the directory now stands; when they changed, the messages whose
        view depends on it are re-read in this same transaction."""
        for kind, data, fingerprint in entries:
            exists = (await conn.execute(select(t.directory_entries.c.fingerprint).where(t.directory_entries.c.fingerprint == fingerprint))).first()
            if exists is None:
                await conn.execute(insert(t.directory_entries).values(fingerprint=fingerprint, kind=kind, data=data, added_at=now))
        rows = (await conn.execute(select(t.directory_entries.c.kind, t.directory_entries.c.data))).all()
        admins = _admin_hexes(self._resolved(rows)[0])
        if admins != self._admin_hexes():
            await self._rejudge(conn, admins, t.messages.c.deleted_by.is_not(None))
        return admins

    async def _reload_directory(self) -> None:
        async with self.store.reading() as conn:
            rows = (await conn.execute(select(t.directory_entries.c.kind, t.directory_entries.c.data))).all()
        self._resolve([(kind, data) for kind, data in rows])

    async def _api_add_user(self, name: str, role: str = "member") -> UserInfo:
        """A new user whose secret key lives on this node (sealed), certified by the acting admin."""
        issuer = await self._require_admin("user add")
        name = certs.check_name(name)
        if self._api_directory.user_by_name(name) is not None:
            raise InvalidInput(f"user {name!r} already exists; use `user role` to change the role")
        user_key = crypto.new_signing_key(self._rng(32))
        pub = bytes(user_key.verify_key)
        cert = certs.issue_certificate(issuer, workspace=self._row.workspace_key, kind="user", key=pub, name=name, role=role, issued_at=self._clock(), home=self._row.node_key)
        sealed = crypto.secretbox_seal(self._keys.data_key, bytes(user_key), self._rng(crypto.NONCE_BYTES))

        async def keep_secret(conn: AsyncConnection) -> None:
            await conn.execute(insert(t.sealed_secrets).values(public_key=pub, kind="user", sealed=sealed))

        await self._add_directory_entries([cert], "user_added", {"user": name, "role": role, "key": pub.hex()}, keep_secret)
        self._keys.users[pub] = user_key
        return UserInfo(name=name, key=pub, role=role, local=True)

    async def _api_set_role(self, name: str, role: str) -> UserInfo:
        issuer = await self._require_admin("user role")
        current = self._api_directory.user_by_name(name)
        if current is None:
            raise NotFound(f"no user {name!r}")
        cert = certs.issue_certificate(issuer, workspace=self._row.workspace_key, kind="user", key=current.key, name=name, role=role, issued_at=max(self._clock(), current.issued_at + 1), home=current.home)
        await self._add_directory_entries([cert], "role_changed", {"user": name, "from": current.role, "to": role})
        return UserInfo(name=name, key=current.key, role=role, local=current.key in self._keys.users)

    async def _api_revoke(self, subject: bytes, reason: str) -> None:
        """A signed revocation entry in the directory; it travels with the directory document."""
        issuer = await self._require_admin("revoke")
        if subject == self._user:
            raise InvalidInput("an admin cannot revoke themselves")
        known = self._api_directory.users.get(subject) or self._api_directory.nodes.get(subject)
        if known is None:
            raise NotFound("no such user or node in the directory")
        rev = certs.issue_revocation(issuer, workspace=self._row.workspace_key, subject=subject, reason=reason, revoked_at=self._clock())
        await self._add_directory_entries([rev], "revoked", {"subject": known.name, "kind": known.kind, "key": subject.hex(), "reason": reason})

    async def _api_invite(self, node_name: str, user_name: str, role: str = "member", *, kdf: crypto.KdfParams = crypto.MODERATE) -> Enrollment:
        """Certificates and fresh keys for a new node and its first user, sealed in a file
        that opens only with a one-time code shown here (so a lost stick exposes nothing)."""
        issuer = await self._require_admin("invite")
        node_name, user_name = certs.check_name(node_name), certs.check_name(user_name)
        if self._api_directory.user_by_name(user_name) is not None:
            raise InvalidInput(f"user {user_name!r} already exists")
        node_key, user_key = crypto.new_signing_key(self._rng(32)), crypto.new_signing_key(self._rng(32))
        now = self._clock()
        ws = self._row.workspace_key
        issued = [
            certs.issue_certificate(issuer, workspace=ws, kind="node", key=bytes(node_key.verify_key), name=node_name, role="node", issued_at=now),
            certs.issue_certificate(issuer, workspace=ws, kind="user", key=bytes(user_key.verify_key), name=user_name, role=role, issued_at=now, home=bytes(node_key.verify_key)),
        ]
        node_id = ids.key_id(bytes(node_key.verify_key))
        await self._add_directory_entries(issued, "invited", {"node": node_name, "node_id": node_id, "user": user_name, "role": role})
        directory_changes = await self._api_changes_for(documents.DIRECTORY_DOC, [])
        inner = cbor.encode(
            {
                "workspace_name": self._row.workspace_name,
                "workspace_key": ws,
                "node_name": node_name,
                "node_seed": bytes(node_key),
                "user_seed": bytes(user_key),
                "invited_by": self._api_node_id,
                "issued_at": now,
                "directory": [[c.data, c.signature or b""] for c in directory_changes],
            }
        )
        code = "".join(secrets.choice(ids.CROCKFORD) for _ in range(ENROLLMENT_CODE_CHARS))
        salt = self._rng(crypto.SALT_BYTES)
        sealed = await asyncio.to_thread(crypto.seal_with_passphrase, _normalise_code(code), inner, salt, self._rng(crypto.NONCE_BYTES), kdf)
        data = cbor.encode({"format": ENROLLMENT_FORMAT, "salt": salt, "opslimit": kdf.opslimit, "memlimit": kdf.memlimit, "sealed": sealed})
        shown = "-".join(code[i : i + 4] for i in range(0, len(code), 4))
        return Enrollment(data=data, code=shown, node_id=node_id, user_name=user_name)

    @classmethod
    async def join(
        cls,
        home: Path,
        enrollment: bytes,
        code: str,
        passphrase: str,
        *,
        kdf: crypto.KdfParams = crypto.INTERACTIVE,
        clock: Clock = wall_clock_ms,
        rng: Random = crypto.random_bytes,
        store: Storage | None = None,
    ) -> Node:
        _check_passphrase(passphrase)
        inner = await asyncio.to_thread(_open_enrollment, enrollment, code)
        store = await cls._fresh_store(home, store)
        try:
            node_key = crypto.new_signing_key(inner["node_seed"])
            user_key = crypto.new_signing_key(inner["user_seed"])
            row = _Row(inner["workspace_name"], inner["workspace_key"], inner["node_name"], bytes(node_key.verify_key), bytes(user_key.verify_key), rng(identity.INCARNATION_BYTES))
            keys = _Keys(rng(32), node_key, None, {row.default_user: user_key})
            node = cls(home, store, row, keys, row.default_user, clock, rng)
            signed = [SignedChange(data, sig or None) for data, sig in inner["directory"]]
            await node._api_import_changes(documents.DIRECTORY_DOC, signed, received_from=inner["invited_by"])
            if node._api_directory.nodes.get(row.node_key) is None or node._api_directory.user(row.default_user) is None:
                raise EnrollmentRejected("the enrollment file's certificates do not verify up to its workspace key")
            await cls._write_identity(store, row, keys, passphrase, kdf, rng, clock())
            async with store.transaction() as conn:
                await _append_audit(conn, keys.node, clock(), row.default_user.hex(), "joined", {"workspace": node._api_workspace_id, "node": node._api_node_id, "invited_by": inner["invited_by"]})
            return node
        except ChangeRejected as exc:
            await store.__aexit__(None, None, None)
            _remove_db(home)
            raise EnrollmentRejected(f"the enrollment file's directory does not verify: {exc}") from exc
        except BaseException:
            await store.__aexit__(None, None, None)
            _remove_db(home)
            raise

    # --- documents: load, local commit, import ---------------------------------------

    def _actor(self) -> bytes:
        return self._user + self._actor_suffix

    async def _doc(self, doc_id: str) -> Document:
        cached = self._docs.get(doc_id)
        if cached is not None:
            self._docs.move_to_end(doc_id)
            return cached
        async with self.store.reading() as conn:
            snap = (await conn.execute(select(t.snapshots.c.data, t.snapshots.c.upto_change_id).where(t.snapshots.c.doc_id == doc_id))).first()
            upto = snap.upto_change_id if snap else 0
            rows = (await conn.execute(select(t.changes.c.data).where(and_(t.changes.c.doc_id == doc_id, t.changes.c.id > upto)).order_by(t.changes.c.id))).scalars().all()
            hashes = (await conn.execute(select(t.changes.c.hash).where(t.changes.c.doc_id == doc_id))).scalars().all()
        data = (snap.data if snap else b"") + b"".join(rows)
        doc = documents.load_document(data, self._actor()) if data else documents.new_document(self._actor())
        self._docs[doc_id] = doc
        self._known[doc_id] = set(hashes)
        self._since_snapshot[doc_id] = len(rows)
        while len(self._docs) > CACHED_DOCUMENTS:
            await self._evict(next(iter(self._docs)))
        return doc

    async def _evict(self, doc_id: str) -> None:
        """Drops a document from memory; one with many changes since its snapshot is
        snapshotted first so that reloading it stays cheap."""
        if not self._hold_snapshots and self._since_snapshot.get(doc_id, 0) >= SNAPSHOT_EVERY // 8:
            await self._snapshot(doc_id)
        self._forget(doc_id)

    def _forget(self, doc_id: str) -> None:
        self._doc_rows.discard(doc_id)
        self._docs.pop(doc_id, None)
        self._known.pop(doc_id, None)
        self._since_snapshot.pop(doc_id, None)

    async def _ensure_document_row(self, conn: AsyncConnection, doc_id: str) -> None:
        if doc_id in self._doc_rows:
            return
        exists = (await conn.execute(select(t.documents.c.doc_id).where(t.documents.c.doc_id == doc_id))).first()
        if exists is None:
            kind, channel_id, index = documents.parse_doc_id(doc_id)
            await conn.execute(insert(t.documents).values(doc_id=doc_id, kind=kind, channel_id=channel_id, segment_index=index))
        self._doc_rows.add(doc_id)  # only after commit would be exact; a rollback forgets all caches

    async def _commit_local(
        self,
        doc_id: str,
        mutate: Callable[[Document], None] | Sequence[Callable[[Document], None]],
        also: Callable[[AsyncConnection], Any] | None = None,
    ) -> list[ChangeHeader]:
        """Makes one signed change per mutation and stores them, with whatever `also` writes,
        in one transaction."""
        self._require_unlocked()
        mutations = [mutate] if callable(mutate) else list(mutate)
        signer = self._keys.users[self._user]
        async with self._lock:
            doc = await self._doc(doc_id)
            doc.set_actor(self._actor())
            made: list[tuple[ChangeHeader, bytes, bytes]] = []
            try:
                for mutation in mutations:
                    before = doc.get_heads()
                    mutation(doc)
                    change = doc.get_last_local_change()
                    if change is None or doc.get_heads() == before:
                        raise RallypointError("the edit changed nothing")
                    header = parse_change(change.raw_bytes)
                    made.append((header, change.raw_bytes, sign_change(signer, doc_id, header.hash)))
                async with self.store.transaction() as conn:
                    await self._ensure_document_row(conn, doc_id)
                    await self._append_changes(conn, doc_id, [(header, data, signature, header.hash) for header, data, signature in made], None)
                    if also is not None:
                        await also(conn)
            except BaseException:
                self._forget(doc_id)  # memory must not run ahead of the store
                raise
            if self._docs.get(doc_id) is doc:
                self._known[doc_id].update(header.hash for header, _, _ in made)
                await self._count_for_snapshot(doc_id, len(made))
            else:  # evicted by what `also` loaded (a directory change re-reads many segments)
                self._forget(doc_id)
            if doc_id == documents.DIRECTORY_DOC:
                await self._reload_directory()  # under the lock: nothing is materialised with the old admins
        self._notify([doc_id], Origin.LOCAL)
        return [header for header, _, _ in made]

    async def _append_changes(
        self, conn: AsyncConnection, doc_id: str, rows: Sequence[tuple[ChangeHeader, bytes, bytes | None, bytes]], received_from: str | None
    ) -> None:
        """(header, bytes, signature, vouched_by) rows, in one executemany."""
        now = self._clock()
        await conn.execute(
            _INSERT_CHANGE,
            [
                {
                    "doc_id": doc_id,
                    "hash": header.hash,
                    "actor": header.actor,
                    "seq": header.seq,
                    "deps": b"".join(header.deps),
                    "data": data,
                    "signature": signature,
                    "vouched_by": vouched_by,
                    "received_from": received_from,
                    "received_at": now,
                }
                for header, data, signature, vouched_by in rows
            ],
        )

    async def _count_for_snapshot(self, doc_id: str, added: int) -> None:
        self._since_snapshot[doc_id] = self._since_snapshot.get(doc_id, 0) + added
        if self._since_snapshot[doc_id] >= SNAPSHOT_EVERY:
            await self._snapshot(doc_id)

    async def _snapshot(self, doc_id: str) -> None:
        doc = self._docs.get(doc_id)
        if doc is None:
            return
        try:
            async with self.store.transaction() as conn:
                await self._write_snapshot(conn, doc_id, doc)
        except StorageError as exc:
            # A snapshot only makes loading faster; the change log it condenses is stored. It stays
            # pending and is written when there is room, so a full disk fails no post, import or read.
            self._skipped_write(f"document snapshots were not saved (the changes are stored; they are saved later): {exc}")

    def _skipped_write(self, what: str) -> None:
        if what not in self._api_skipped_writes:
            self._api_skipped_writes.append(what)

    async def _write_snapshot(self, conn: AsyncConnection, doc_id: str, doc: Document) -> None:
        upto = (await conn.execute(select(func.max(t.changes.c.id)).where(t.changes.c.doc_id == doc_id))).scalar_one()
        known = len(self._known.get(doc_id, ()))
        stored = (await conn.execute(select(func.count()).where(and_(t.changes.c.doc_id == doc_id, t.changes.c.id <= upto)))).scalar_one()
        if stored != known:
            return  # another process appended meanwhile; the next snapshot will catch up
        values = {"data": doc.save(), "upto_change_id": upto, "saved_at": self._clock()}
        updated = await conn.execute(update(t.snapshots).where(t.snapshots.c.doc_id == doc_id).values(**values))
        if updated.rowcount == 0:
            await conn.execute(insert(t.snapshots).values(doc_id=doc_id, **values))
        self._since_snapshot[doc_id] = 0

    async def _flush_snapshots(self) -> None:
        for doc_id, pending in list(self._since_snapshot.items()):
            if pending:
                await self._snapshot(doc_id)

    def _authoriser(
        self, doc_id: str, directory: certs.Directory, head_of: Callable[[str], documents.ChannelHead | None], relay: bytes | None = None
    ) -> Callable[[bytes], str | None]:
        """Who may write `doc_id`, judged on `directory` and the channel heads `head_of` gives
        (during an import: as they will be once the batch's own directory and head changes apply).

        A revoked author's changes are refused - unless `relay`, the trusted node that sent the
        batch, is not the author's own node: a relay accepted them before it learnt of the
        revocation (it refuses new ones from then on), and refusing them here would make every
        later bundle from it, which builds on them, unacceptable for ever."""
        kind, channel_id, _ = documents.parse_doc_id(doc_id)

        def authorise(author: bytes) -> str | None:
            cert = directory.user(author)
            if author in directory.revoked:
                former = self._users_ever.get(author)
                if relay is None or former is None or relay == former.home or relay in directory.revoked:
                    return f"author {ids.key_id(author)} is revoked"
                cert = former
            if cert is None:
                return f"author {ids.key_id(author)} is not a user of this workspace"
            if kind == "directory":
                return None if cert.role == "admin" else f"{cert.name} is not an admin and cannot change the directory"
            if cert.role == "observer":
                return f"{cert.name} is an observer and cannot write"
            head = head_of(channel_id)
            if head is None:
                return None if kind == "head" else f"segment of unknown channel {channel_id}"
            if head.kind != "public" and author.hex() not in head.members and not directory.is_admin(author):
                return f"{cert.name} is not a member of private channel #{head.name}"
            return None

        return authorise

    async def _api_import_changes(self, doc_id: str, incoming: Sequence[SignedChange], received_from: str) -> ImportResult:
        """One document's batch through `import_batches`."""
        summary = await self._api_import_batches([(doc_id, incoming)], received_from=received_from)
        return ImportResult(doc_id, summary.changes, summary.duplicates)

    async def _api_import_batches(
        self,
        batches: Sequence[tuple[str, Sequence[SignedChange]]],
        *,
        blobs: Sequence[tuple[bytes, bytes]] = (),
        received_from: str,
        receipt: Receipt | None = None,
        preview: bool = False,
        progress: Callable[[str, int], None] | None = None,
    ) -> ImportSummary:
        """The verification path for everything from elsewhere (bundles, LAN, enrollment),
        all or nothing. Every change is checked - format, hash chain, author signature, the
        author's certificate and channel role - before anything is written: directory changes
        against the certificates they carry, channel heads against the directory as it will
        be, segments against the heads as they will be. Then one transaction appends, applies,
        materialises and records `receipt` (peer heads, bundle log, audit). One bad change
        rejects everything (ChangeRejected; MissingDependencies when it only lacks earlier
        changes). `preview` runs the same path and rolls it back. `progress` hears ("verify" or
        "write", its changes) as each document is done: a big bundle takes seconds."""
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
            if len(data) > self._api_max_blob_bytes:
                raise ChangeRejected(f"blob {digest.hex()[:12]} ({len(data)} bytes) is over this node's limit of {self._api_max_blob_bytes} bytes")
        order = sorted(grouped, key=_import_rank)
        async with self._lock:
            self._require_unlocked()
            known = await self._stored_hashes(order)
            relay = receipt.sender if receipt is not None else None
            plan, new_entries = await self._verify_batches(order, grouped, known, relay, progress)
            touched = [doc_id for doc_id, _ in plan]
            self._hold_snapshots = True  # an evicted document must not open a second write transaction
            try:
                async with self.store.transaction() as conn:
                    first = await self._newest_change_id(conn)
                    summary = await self._write_batches(conn, plan, known, new_entries, blobs, received_from, preview, progress)
                    summary = replace(summary, duplicates=sum(len(c) for c in grouped.values()) - summary.changes)
                    if receipt is not None:
                        await self._record_receipt(conn, receipt, summary, blobs, preview)
                    if preview:
                        raise _Rollback(summary)
                    last = await self._newest_change_id(conn)
                # The write lock made (first, last] this import's rows alone: `refresh` need not
                # read them back, unless rows of another process still wait before them.
                if self._watermark == first:
                    self._watermark = last
            except _Rollback as rollback:
                self._forget_after_import(touched)
                return rollback.summary
            except BaseException:
                self._forget_after_import(touched)
                raise
            finally:
                self._hold_snapshots = False
            if new_entries:
                await self._reload_directory()  # under the lock: nothing is materialised with the old admins
        if new_entries:
            if self._row.node_key in self._api_directory.revoked:
                await self._wipe_after_revocation(self._api_directory.revoked[self._row.node_key])
                return replace(summary, wiped=True)
        self._notify(touched, Origin.PEER if received_from is not None else Origin.LOCAL, received_from)
        return summary

    @staticmethod
    async def _newest_change_id(conn: AsyncConnection) -> int:
        return int((await conn.execute(select(func.coalesce(func.max(t.changes.c.id), 0)))).scalar_one())

    async def _stored_hashes(self, doc_ids: Sequence[str]) -> dict[str, set[bytes]]:
        known: dict[str, set[bytes]] = {doc_id: set() for doc_id in doc_ids}
        async with self.store.reading() as conn:
            for start in range(0, len(doc_ids), 500):
                chunk = doc_ids[start : start + 500]
                rows = await conn.execute(select(t.changes.c.doc_id, t.changes.c.hash).where(t.changes.c.doc_id.in_(chunk)))
                for doc_id, digest in rows:
                    known[doc_id].add(digest)
        return known

    async def _verify_batches(
        self, order: Sequence[str], grouped: dict[str, list[SignedChange]], known: dict[str, set[bytes]], relay: bytes | None, progress: Callable[[str, int], None] | None = None
    ) -> tuple[list[tuple[str, list[VerifiedChange]]], list[tuple[str, bytes, bytes]]]:
        directory = self._api_directory
        new_entries: list[tuple[str, bytes, bytes]] = []
        trial_heads: dict[str, documents.ChannelHead | None] = {}
        plan: list[tuple[str, list[VerifiedChange]]] = []
        for doc_id in order:
            kind, channel_id, _ = documents.parse_doc_id(doc_id)
            if kind == "directory":
                verified = verify_batch(doc_id, grouped[doc_id], known[doc_id], lambda author: None)
                if verified:
                    new_entries, directory = self._check_directory_batch(await self._doc(doc_id), verified)
            else:
                if channel_id not in trial_heads:
                    trial_heads[channel_id] = await self._load_head(channel_id)
                verified = verify_batch(doc_id, grouped[doc_id], known[doc_id], self._authoriser(doc_id, directory, trial_heads.get, relay))
                if verified and kind == "head":
                    trial = self._trial(await self._doc(doc_id), verified)
                    trial_heads[channel_id] = documents.read_head(trial, channel_id) or trial_heads[channel_id]
            if verified:
                plan.append((doc_id, verified))
            if progress is not None:
                progress("verify", len(grouped[doc_id]))
        return plan, new_entries

    async def _write_batches(
        self,
        conn: AsyncConnection,
        plan: Sequence[tuple[str, list[VerifiedChange]]],
        known: dict[str, set[bytes]],
        new_entries: Sequence[tuple[str, bytes, bytes]],
        blobs: Sequence[tuple[bytes, bytes]],
        received_from: str,
        preview: bool,
        progress: Callable[[str, int], None] | None = None,
    ) -> ImportSummary:
        now = self._clock()
        intake: dict[str, list[int]] = {}
        applied = 0
        admins = self._admin_hexes()
        for doc_id, verified in plan:
            kind, channel_id, _ = documents.parse_doc_id(doc_id)
            doc = await self._doc(doc_id)
            if not known[doc_id] <= self._known[doc_id]:  # another process wrote meanwhile
                self._forget(doc_id)
                doc = await self._doc(doc_id)
            await self._ensure_document_row(conn, doc_id)
            await self._append_changes(conn, doc_id, [(c.header, c.data, c.signature, c.vouched_by) for c in verified], received_from)
            before = doc.get_heads()
            try:
                documents.apply_changes(doc, [c.data for c in verified])
            except documents.DocumentError as exc:
                raise ChangeRejected(f"{doc_id}: {exc}") from exc
            self._known[doc_id].update(c.header.hash for c in verified)
            applied += len(verified)
            new_messages = 0
            if kind == "directory":
                admins = await self._store_directory_entries(conn, new_entries, now)
            elif kind == "head":
                await self._materialise_head(conn, channel_id, doc)
            else:
                new_messages = await self._materialise_segment(conn, channel_id, doc_id, doc, documents.touched_messages(doc, before) if before else None, admins)
            if kind != "directory":
                counts = intake.setdefault(channel_id, [0, 0])
                counts[0] += len(verified)
                counts[1] += new_messages
            pending = self._since_snapshot.get(doc_id, 0) + len(verified)
            if pending >= SNAPSHOT_EVERY and not preview:
                await self._write_snapshot(conn, doc_id, doc)
                pending = 0
            self._since_snapshot[doc_id] = pending
            if progress is not None:
                progress("write", len(verified))
        added_blobs = 0
        for digest, data in blobs:
            if (await conn.execute(select(t.blobs.c.hash).where(t.blobs.c.hash == digest))).first() is None:
                await self._store_blob(conn, digest, data)
                added_blobs += 1
        channels = []
        for channel_id, (changes, messages) in sorted(intake.items()):
            head = self._heads_cache.get(channel_id)
            readable = head is not None and self._can_read(head, self._user)
            channels.append(ChannelIntake(channel_id, head.name if head else "", readable, changes, messages))
        return ImportSummary(
            changes=applied,
            duplicates=0,
            directory_entries=len(new_entries),
            channels=tuple(channels),
            blobs=added_blobs,
            preview=preview,
        )

    def _trial(self, doc: Document, verified: Sequence[VerifiedChange]) -> Document:
        """A copy of `doc` with the verified changes applied: what it will be, judged before
        anything is written."""
        try:
            return documents.load_document(doc.save() + b"".join(c.data for c in verified), self._actor())
        except documents.DocumentError as exc:
            raise ChangeRejected(str(exc)) from exc

    def _forget_after_import(self, doc_ids: Iterable[str]) -> None:
        for doc_id in doc_ids:
            self._forget(doc_id)
            channel_id = documents.parse_doc_id(doc_id)[1]
            self._heads_cache.pop(channel_id, None)
            self._segment_cursor.pop(channel_id, None)
        self._channel_by_name.clear()

    def _check_directory_batch(self, doc: Document, verified: list[VerifiedChange]) -> tuple[list[tuple[str, bytes, bytes]], certs.Directory]:
        """Directory changes must be by admins - each judged on the directory as of that change
        (its history, just before or with it, and the revocations known here), so that a
        concurrent demotion of its author, arriving first or not, decides nothing. Returns the
        entries to store and the trial directory (the batch applied)."""
        trial = self._trial(doc, verified)
        decoded: dict[str, certs.Certificate | certs.Revocation] = {}

        def entries(version: Document) -> list[certs.Certificate | certs.Revocation]:
            for key, data in documents.directory_entries(version):
                if key not in decoded:
                    try:
                        decoded[key] = _decode_entry("certificate" if key.startswith("cert:") else "revocation", data)
                    except CertificateInvalid as exc:
                        raise ChangeRejected(f"directory entry {key}: {exc}") from exc
            return [decoded[key] for key, _ in documents.directory_entries(version)]

        found_certs, found_revs = _split_entries(entries(trial))
        known_revs = list(self._api_directory.revoked.values())
        history = trial.get_changes([])  # in causal order
        graph = {c.hash: b"".join(c.deps) for c in history}

        def admin_at(heads: list[bytes], author: bytes) -> bool:
            # The document as it was at `heads`, loaded from that history (Document.fork_at can
            # panic on some histories: automerge 0.7.2 "MissingOps").
            past = _ancestors(graph, heads)
            version = documents.load_document(b"".join(c.raw_bytes for c in history if c.hash in past), self._actor()) if past else documents.new_document(self._actor())
            certs_then, revs_then = _split_entries(entries(version))
            return certs.resolve_directory(self._row.workspace_key, certs_then, revs_then + known_revs, self._clock()).is_admin(author)

        for change in verified:
            # An admin before the change (a self-demotion) or after it (the first admin's own certificate).
            author = change.header.author
            if not admin_at(list(change.header.deps), author) and not admin_at([change.header.hash], author):
                raise ChangeRejected(f"directory change by {ids.key_id(author)}, who is not an admin")
        existing_certs = list(self._api_directory.users.values()) + list(self._api_directory.nodes.values())
        trial_dir = certs.resolve_directory(self._row.workspace_key, existing_certs + found_certs, known_revs + found_revs, self._clock())
        return [(_entry_kind(entry), entry.encoded, entry.fingerprint) for entry in decoded.values()], trial_dir

    async def _api_changes_for(self, doc_id: str, have: Sequence[bytes]) -> list[SignedChange]:
        """Changes of a document that a peer with heads `have` lacks: everything that is not an
        ancestor of a head known here (a head unknown here says the peer has changes we lack,
        not which of ours it has). Each actor's run ends in a signed change."""
        async with self.store.reading() as conn:
            rows = (await conn.execute(select(t.changes.c.hash, t.changes.c.deps, t.changes.c.data, t.changes.c.signature).where(t.changes.c.doc_id == doc_id).order_by(t.changes.c.id))).all()
        excluded = _ancestors({r.hash: r.deps for r in rows}, have)
        return [SignedChange(r.data, r.signature) for r in rows if r.hash not in excluded]

    async def _api_document_heads(self, doc_id: str) -> list[bytes]:
        return list((await self._doc(doc_id)).get_heads())

    async def _api_document_ids(self) -> list[str]:
        async with self.store.reading() as conn:
            return list((await conn.execute(select(t.documents.c.doc_id).order_by(t.documents.c.doc_id))).scalars().all())

    async def _api_refresh(self) -> frozenset[str]:
        """Picks up changes another process appended to this store (the CLI while the console
        runs). Returns the ids of the channels that changed - "directory" for the directory -
        counting only what this process did not write itself (empty when nothing did)."""
        self._require_unlocked()
        async with self.store.reading() as conn:
            rows = (await conn.execute(select(t.changes.c.id, t.changes.c.doc_id, t.changes.c.hash).where(t.changes.c.id > self._watermark).order_by(t.changes.c.id))).all()
            wiped = (await conn.execute(select(t.settings.c.value).where(t.settings.c.name == LOCKED_SETTING))).scalar()
        if wiped is not None:  # another process imported this node's revocation
            if self._locked is None:
                self._forget_everything(wiped)
            raise NodeLocked(wiped)
        if not rows:
            return frozenset()
        async with self._lock:
            self._watermark = max(self._watermark, rows[-1].id)  # an import may have moved it past these
            foreign = [row for row in rows if row.hash not in self._known.get(row.doc_id, ())]
            if not foreign:
                return frozenset()
            loaded = [row.id for row in foreign if row.doc_id in self._docs]  # the change bytes only where a document is in memory
            data: dict[int, bytes] = {}
            async with self.store.reading() as conn:
                for start in range(0, len(loaded), 500):
                    data.update((await conn.execute(select(t.changes.c.id, t.changes.c.data).where(t.changes.c.id.in_(loaded[start : start + 500])))).all())
            pending: dict[str, list[bytes]] = {}
            for row in foreign:
                if row.doc_id in self._docs:
                    pending.setdefault(row.doc_id, []).append(data[row.id])
                    self._known[row.doc_id].add(row.hash)
            for doc_id, data in pending.items():
                try:
                    documents.apply_changes(self._docs[doc_id], data)
                except documents.DocumentError:
                    self._forget(doc_id)
            self._heads_cache.clear()
            self._channel_by_name.clear()
            self._segment_cursor.clear()
        changed = frozenset(documents.parse_doc_id(row.doc_id)[1] or documents.DIRECTORY_DOC for row in foreign)
        if documents.DIRECTORY_DOC in changed:
            await self._reload_directory()
        self._notify((row.doc_id for row in foreign), Origin.STORE)
        return changed

    # --- exchange with peers: receipts, deltas, remote wipe ---------------------------

    async def _record_receipt(self, conn: AsyncConnection, receipt: Receipt, summary: ImportSummary, blobs: Sequence[tuple[bytes, bytes]], preview: bool) -> None:
        """In the import's transaction: what the sender told us it holds, the blobs it sent
        (so we never send them back), the bundle's log row and the audit entry."""
        now = self._clock()
        sender = ids.key_id(receipt.sender)
        await self._store_peer_heads(conn, sender, receipt.sender_heads, now)
        for digest, _ in blobs:
            await self._upsert_peer_blob(conn, sender, digest, None, None, now)
        await self._confirm_sent_blobs(conn, sender, receipt.sender_heads, now)
        outcome = "accepted" if summary.changes or summary.blobs else "duplicate"
        if receipt.digest is not None:
            await conn.execute(t.bundle_log.delete().where(t.bundle_log.c.digest == receipt.digest))  # an earlier "unknown sender"
            await conn.execute(
                insert(t.bundle_log).values(
                    digest=receipt.digest, bundle_id=receipt.bundle_id, sender=sender, created_at=receipt.created_at, outcome=outcome, reason="", decided_at=now
                )
            )
        detail: dict[str, object] = {
            "from": sender,
            "via": receipt.source,
            "changes": summary.changes,
            "duplicates": summary.duplicates,
            "directory_entries": summary.directory_entries,
            "channels": len(summary.channels),
            "messages": sum(c.new_messages for c in summary.channels),
            "blobs": summary.blobs,
        }
        if receipt.bundle_id is not None:
            detail["bundle"] = receipt.bundle_id.hex()
        await _append_audit(conn, self._keys.node, now, self._row.node_key.hex(), f"{receipt.source}_{outcome}", detail)

    async def _store_peer_heads(self, conn: AsyncConnection, peer: str, heads: Mapping[str, Sequence[bytes]], now: int) -> None:
        """The latest report to arrive replaces what we believed of each document it lists; no
        clock decides (a sender's clock a day ahead once froze its acknowledgements, and a
        receiver cannot order two boxes' clocks). A report that arrives out of order (a late,
        older bundle) only makes the next delta larger: importing twice changes nothing. Any
        rule that kept the larger of two reports would over-credit a peer restored from a
        backup, which then would never be sent what it lost."""
        stored = set((await conn.execute(select(t.peer_heads.c.doc_id).where(t.peer_heads.c.peer == peer))).scalars().all())
        for doc_id, hashes in heads.items():
            if doc_id not in stored:
                await conn.execute(insert(t.peer_heads).values(peer=peer, doc_id=doc_id, heads=b"".join(hashes), updated_at=now))
            else:
                await conn.execute(update(t.peer_heads).where(and_(t.peer_heads.c.peer == peer, t.peer_heads.c.doc_id == doc_id)).values(heads=b"".join(hashes), updated_at=now))

    async def _upsert_peer_blob(self, conn: AsyncConnection, peer: str, digest: bytes, doc_id: str | None, heads: bytes | None, now: int) -> None:
        where = and_(t.peer_blobs.c.peer == peer, t.peer_blobs.c.hash == digest)
        row = (await conn.execute(select(t.peer_blobs.c.heads).where(where))).first()
        if row is None:
            await conn.execute(insert(t.peer_blobs).values(peer=peer, hash=digest, doc_id=doc_id, heads=heads, updated_at=now))
        elif row.heads is not None:  # a confirmed row stays confirmed
            await conn.execute(update(t.peer_blobs).where(where).values(doc_id=doc_id, heads=heads, updated_at=now))

    async def _confirm_sent_blobs(self, conn: AsyncConnection, peer: str, heads: Mapping[str, Sequence[bytes]], now: int) -> None:
        """A blob we sent counts as held once the peer acknowledges the heads we had when we sent it."""
        pending = (await conn.execute(select(t.peer_blobs.c.hash, t.peer_blobs.c.doc_id, t.peer_blobs.c.heads).where(and_(t.peer_blobs.c.peer == peer, t.peer_blobs.c.heads.is_not(None))))).all()
        by_doc: dict[str, list[Any]] = {}
        for row in pending:
            if row.doc_id in heads:
                by_doc.setdefault(row.doc_id, []).append(row)
        for doc_id, rows in by_doc.items():
            graph = dict((await conn.execute(select(t.changes.c.hash, t.changes.c.deps).where(t.changes.c.doc_id == doc_id))).all())
            held = _ancestors(graph, heads[doc_id])
            for row in rows:
                if all(h in held for h in _split_hashes(row.heads)):
                    await conn.execute(update(t.peer_blobs).where(and_(t.peer_blobs.c.peer == peer, t.peer_blobs.c.hash == row.hash)).values(heads=None, updated_at=now))

    def _api_routable_to(self, peer: bytes, head: documents.ChannelHead) -> bool:
        """Whether a channel's documents may go to node `peer`: public channels go everywhere,
        private ones only to nodes that hold a member's key (its certificate's home)."""
        if head.kind == "public":
            return True
        for member in head.members:
            cert = self._api_directory.users.get(bytes.fromhex(member))
            if cert is not None and cert.home == peer:
                return True
        return False

    async def _api_delta_for(
        self, peers: Sequence[bytes], *, only: Collection[str] | None = None, also_held: Mapping[str, Sequence[bytes]] | None = None
    ) -> Delta:
        """Everything at least one of `peers` lacks, as far as the heads they last told us say
        (everything, for a peer we know nothing about), limited to documents all of them may
        receive; the blobs referenced by messages in those documents that some peer lacks.
        A revoked node receives the directory only: the news of its revocation, which makes
        it wipe itself. `only` limits the delta to those documents; `also_held` adds heads the
        peers are known to hold beyond their last acknowledgement (what a live session has
        just sent them)."""
        wanted, our_heads = await self._missing(peers, only, also_held)
        peer_ids = [ids.key_id(p) for p in peers]
        async with self.store.reading() as conn:
            delta_docs = []
            for doc_id, row_ids in wanted:
                fetched: dict[int, SignedChange] = {}
                for start in range(0, len(row_ids), 500):
                    chunk = row_ids[start : start + 500]
                    for row_id, data, signature in await conn.execute(select(t.changes.c.id, t.changes.c.data, t.changes.c.signature).where(t.changes.c.id.in_(chunk))):
                        fetched[row_id] = SignedChange(data, signature)
                delta_docs.append((doc_id, tuple(fetched[i] for i in row_ids)))
            blobs = await self._blobs_lacking(conn, peer_ids, [doc_id for doc_id, _ in wanted])
        return Delta(documents=tuple(delta_docs), blobs=blobs, heads=our_heads)

    async def _api_heads_for(self, peer: bytes) -> dict[str, tuple[bytes, ...]]:
        """Our heads of every document `peer` may receive (what a LAN session announces)."""
        return (await self._missing([peer], None, None))[1]

    async def _api_changes_behind(self, peer: bytes) -> int:
        """How many of our changes `peer` lacks, as far as the heads it last told us say."""
        return sum(count for _, count in await self._api_documents_lacking(peer))

    async def _api_documents_lacking(self, peer: bytes) -> list[tuple[str, int]]:
        """The documents `peer` lacks changes of, in the order `delta_for` sends them, with
        how many: a large delta can then be read and sent a few documents at a time."""
        wanted, _ = await self._missing([peer], None, None)
        return [(doc_id, len(row_ids)) for doc_id, row_ids in wanted]

    async def _missing(
        self, peers: Sequence[bytes], only: Collection[str] | None, also_held: Mapping[str, Sequence[bytes]] | None
    ) -> tuple[list[tuple[str, list[int]]], dict[str, tuple[bytes, ...]]]:
        """(document, change row ids) some peer lacks, in priority order, and our heads of every
        document the peers may receive."""
        self._require_unlocked()
        peer_ids = [ids.key_id(p) for p in peers]
        wanted_docs = sorted(only) if only is not None else None
        async with self.store.reading() as conn:
            doc_query = select(t.documents.c.doc_id, t.documents.c.kind, t.documents.c.channel_id, t.documents.c.segment_index)
            heads_query = select(t.peer_heads.c.peer, t.peer_heads.c.doc_id, t.peer_heads.c.heads).where(t.peer_heads.c.peer.in_(peer_ids))
            graph_query = select(t.changes.c.doc_id, t.changes.c.id, t.changes.c.hash, t.changes.c.deps)
            if wanted_docs is not None:
                doc_query = doc_query.where(t.documents.c.doc_id.in_(wanted_docs))
                heads_query = heads_query.where(t.peer_heads.c.doc_id.in_(wanted_docs))
                graph_query = graph_query.where(t.changes.c.doc_id.in_(wanted_docs))
            doc_rows = (await conn.execute(doc_query)).all()
            known_heads: dict[str, dict[str, bytes]] = {}
            for peer, doc_id, heads in await conn.execute(heads_query):
                known_heads.setdefault(doc_id, {})[peer] = heads
            graphs: dict[str, dict[bytes, bytes]] = {}
            change_ids: dict[bytes, int] = {}
            for doc_id, row_id, digest, deps in await conn.execute(graph_query):
                graphs.setdefault(doc_id, {})[digest] = deps
                change_ids[digest] = row_id
        allowed: list[Any] = []
        revoked_peer = any(p in self._api_directory.revoked for p in peers)
        for row in doc_rows:
            if row.kind != "directory" and revoked_peer:
                continue
            if row.kind != "directory":
                head = await self._load_head(row.channel_id)
                if head is None or not all(self._api_routable_to(p, head) for p in peers):
                    continue
            allowed.append(row)
        allowed.sort(key=lambda r: (_import_rank(r.doc_id), -r.segment_index, r.channel_id))
        wanted: list[tuple[str, list[int]]] = []
        our_heads: dict[str, tuple[bytes, ...]] = {}
        for row in allowed:
            graph = graphs.get(row.doc_id, {})
            our_heads[row.doc_id] = _frontier(graph)
            extra = list((also_held or {}).get(row.doc_id, ()))
            held = [_ancestors(graph, _split_hashes(known_heads.get(row.doc_id, {}).get(p, b"")) + extra) for p in peer_ids]
            common = set.intersection(*held) if held else set()
            missing = sorted(change_ids[h] for h in graph if h not in common)
            if missing:
                wanted.append((row.doc_id, missing))
        return wanted, our_heads

    async def _blobs_lacking(self, conn: AsyncConnection, peer_ids: Sequence[str], doc_ids: Sequence[str]) -> tuple[tuple[bytes, str, bytes], ...]:
        referenced: dict[bytes, str] = {}
        for start in range(0, len(doc_ids), 500):
            rows = await conn.execute(select(t.messages.c.doc_id, t.messages.c.files).where(and_(t.messages.c.doc_id.in_(doc_ids[start : start + 500]), t.messages.c.files != "[]")))
            for doc_id, files in rows:
                for file in json.loads(files):
                    referenced.setdefault(bytes.fromhex(file["hash"]), doc_id)
        if not referenced:
            return ()
        held: dict[bytes, int] = {}
        for (digest,) in await conn.execute(select(t.peer_blobs.c.hash).where(and_(t.peer_blobs.c.peer.in_(peer_ids), t.peer_blobs.c.heads.is_(None)))):
            held[digest] = held.get(digest, 0) + 1
        needed = [h for h in referenced if held.get(h, 0) < len(peer_ids)]
        found: list[tuple[bytes, str, bytes]] = []
        for start in range(0, len(needed), 100):
            for digest, data in await conn.execute(select(t.blobs.c.hash, t.blobs.c.data).where(t.blobs.c.hash.in_(needed[start : start + 100]))):
                found.append((digest, referenced[digest], data))
        return tuple(sorted(found))

    async def _api_note_sent(self, peers: Sequence[bytes], blobs: Sequence[tuple[bytes, str]], heads: Mapping[str, Sequence[bytes]]) -> None:
        """Blobs just written into a bundle for `peers`: not sent again once they acknowledge
        the heads we had (until then, every bundle repeats them: a stick can be lost)."""
        now = self._clock()
        async with self.store.transaction() as conn:
            for peer in peers:
                for digest, doc_id in blobs:
                    await self._upsert_peer_blob(conn, ids.key_id(peer), digest, doc_id, b"".join(heads.get(doc_id, ())) or b"\x00", now)

    async def _api_record_peer_heads(self, peer: bytes, heads: Mapping[str, Sequence[bytes]]) -> None:
        """What a peer just told us it holds (a LAN acknowledgement): the base of the next delta
        for it, by LAN or by bundle, and confirmation of the blobs sent before those heads."""
        now, peer_id = self._clock(), ids.key_id(peer)
        async with self.store.transaction() as conn:
            await self._store_peer_heads(conn, peer_id, heads, now)
            await self._confirm_sent_blobs(conn, peer_id, heads, now)

    async def _api_bundle_decision(self, digest: bytes) -> tuple[str, str] | None:
        """(outcome, reason) if this exact bundle file was decided on before."""
        async with self.store.reading() as conn:
            row = (await conn.execute(select(t.bundle_log.c.outcome, t.bundle_log.c.reason).where(t.bundle_log.c.digest == digest))).first()
        return None if row is None else (row.outcome, row.reason)

    async def _api_record_rejection(
        self, digest: bytes, *, outcome: str, reason: str, sender: bytes | None, bundle_id: bytes | None, created_at: int | None, source: str = "bundle", quarantine: Mapping[str, object] | None = None
    ) -> None:
        """A refused bundle: one log row and one audit entry (a re-presented one is not audited
        again), with what happened to its copy in `quarantine` (kept, dropped, problem)."""
        now = self._clock()
        async with self.store.transaction() as conn:
            exists = (await conn.execute(select(t.bundle_log.c.digest).where(t.bundle_log.c.digest == digest))).first()
            if exists is not None:
                return
            sender_id = ids.key_id(sender) if sender is not None else None
            await conn.execute(insert(t.bundle_log).values(digest=digest, bundle_id=bundle_id, sender=sender_id, created_at=created_at, outcome=outcome, reason=reason, decided_at=now))
            detail: dict[str, object] = {"outcome": outcome, "reason": reason, "from": sender_id, "digest": digest.hex()}
            if bundle_id is not None:
                detail["bundle"] = bundle_id.hex()
            if quarantine is not None:
                detail["quarantine"] = dict(quarantine)
            await _append_audit(conn, self._keys.node, now, self._row.node_key.hex(), f"{source}_rejected", detail)

    async def _api_courier_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest bundle decisions, newest first."""
        async with self.store.reading() as conn:
            rows = (await conn.execute(select(t.bundle_log).order_by(t.bundle_log.c.decided_at.desc()).limit(limit))).mappings().all()
        return [{**row, "digest": row["digest"].hex(), "bundle_id": row["bundle_id"].hex() if row["bundle_id"] else None} for row in rows]

    def _api_node_key_of(self, node_id: str) -> bytes:
        """The key of an enrolled node, by node id (check character verified) or node name."""
        for key, cert in self._api_directory.nodes.items():
            if cert.name == node_id:
                return key
        wanted = ids.normalise_key_id(node_id)
        for key in list(self._api_directory.nodes) + list(self._api_directory.revoked):
            if ids.key_id(key) == wanted:
                return key
        raise NotFound(f"no node {node_id} in this workspace's directory")

    def _api_nodes(self) -> list[NodeInfo]:
        """Every node the directory ever certified, revoked ones included."""
        keys = [*self._api_peers(revoked=True), self._row.node_key]
        return sorted(
            (NodeInfo(ids.key_id(k), self._node_names.get(k, "?"), k, k in self._api_directory.revoked, k == self._row.node_key) for k in keys),
            key=lambda n: (n.revoked, n.name),
        )

    def _api_peers(self, *, revoked: bool = False) -> list[bytes]:
        """Every other enrolled node of the workspace; with `revoked`, revoked ones too."""
        keys = set(self._api_directory.nodes) | ({k for k in self._api_directory.revoked if k in self._node_names} if revoked else set())
        return sorted(k for k in keys if k != self._row.node_key)

    def _api_trust_of(self, node_key: bytes) -> str:
        """"trusted" (a current node of this workspace), "revoked" or "unknown"."""
        if node_key in self._api_directory.revoked:
            return "revoked"
        return "trusted" if node_key in self._api_directory.nodes else "unknown"

    # --- LAN: peers seen, IP rules for incoming sessions ---------------------------

    async def _api_note_lan_peer(self, node_id: str, workspace_id: str, address: str, port: int) -> None:
        """Remembers where a node was seen on the LAN (mDNS or an incoming session)."""
        now = self._clock()
        async with self.store.transaction() as conn:
            updated = await conn.execute(
                update(t.lan_peers).where(t.lan_peers.c.node_id == node_id).values(workspace_id=workspace_id, address=address, port=port, last_seen=now)
            )
            if updated.rowcount == 0:
                await conn.execute(insert(t.lan_peers).values(node_id=node_id, workspace_id=workspace_id, address=address, port=port, last_seen=now))

    async def _api_note_lan_sync(self, node_key: bytes, address: str, port: int) -> None:
        """A session with this workspace node just exchanged heads."""
        now = self._clock()
        node_id, workspace_id = ids.key_id(node_key), ids.key_id(self._row.workspace_key)
        async with self.store.transaction() as conn:
            updated = await conn.execute(update(t.lan_peers).where(t.lan_peers.c.node_id == node_id).values(last_seen=now, last_sync=now))
            if updated.rowcount == 0:
                await conn.execute(
                    insert(t.lan_peers).values(node_id=node_id, workspace_id=workspace_id, address=address, port=port, last_seen=now, last_sync=now)
                )

    async def _api_lan_peers(self) -> list[LanPeer]:
        async with self.store.reading() as conn:
            rows = (await conn.execute(select(t.lan_peers).order_by(t.lan_peers.c.node_id))).all()
        return [LanPeer(r.node_id, r.workspace_id, r.address, r.port, r.last_seen, r.last_sync) for r in rows]

    async def _api_peer_overview(self, local_networks: Sequence[netpolicy.LocalNetwork] = ()) -> list[PeerStatus]:
        """Every other node of the directory and every node seen on the LAN: trust, where it
        was seen, when it last synced by LAN and by courier, how far behind it is, and - for a
        trusted node seen at an address the IP allowlist refuses - why, and how to allow it."""
        workspace_id = ids.key_id(self._row.workspace_key)
        seen = {p.node_id: p for p in await self._api_lan_peers()}
        rules = await self._api_network_rules(local_networks)
        async with self.store.reading() as conn:
            courier = dict(
                (await conn.execute(select(t.bundle_log.c.sender, func.max(t.bundle_log.c.decided_at)).where(t.bundle_log.c.outcome == "accepted").group_by(t.bundle_log.c.sender))).all()
            )
            conflicted = await identity.conflicted_keys(conn)
        rows: list[PeerStatus] = []
        for info in self._api_nodes():
            if info.this_node:
                continue
            lan = seen.pop(info.node_id, None)
            trust = self._api_trust_of(info.key)
            behind = None if trust != "trusted" or self._locked is not None else await self._api_changes_behind(info.key)
            decision = netpolicy.decide(lan.address, rules) if lan and trust == "trusted" else None
            rows.append(
                PeerStatus(
                    info.node_id, info.name, trust, info.key,
                    lan.address if lan else None, lan.port if lan else None, lan.last_seen if lan else None, lan.last_sync if lan else None,
                    courier.get(info.node_id), behind,
                    self._conflict_text(info.key) if trust == "trusted" and info.key in conflicted else None,
                    netpolicy.refusal_reason(lan.address, decision) if lan and decision and not decision.allowed else None,
                )
            )
        for lan in seen.values():
            if lan.node_id == self._api_node_id:
                continue
            trust = "unknown" if lan.workspace_id == workspace_id else "other workspace"
            rows.append(PeerStatus(lan.node_id, "", trust, None, lan.address, lan.port, lan.last_seen, lan.last_sync, None, None))
        order = {"trusted": 0, "unknown": 1, "revoked": 2, "other workspace": 3}
        return sorted(rows, key=lambda r: (order[r.trust], r.name, r.node_id))

    async def _api_network_rules(self, local_networks: Sequence[netpolicy.LocalNetwork] = ()) -> list[netpolicy.NetworkRule]:
        """The rules in force for LAN sessions (both directions), the defaults - this node's
        interface networks, as the caller found them, and the private ranges - included while
        the operator has allowed nothing."""
        async with self.store.reading() as conn:
            rows = (await conn.execute(select(t.network_rules.c.network, t.network_rules.c.action).order_by(t.network_rules.c.network))).all()
        return netpolicy.effective_rules([netpolicy.NetworkRule(network, action) for network, action in rows], local_networks)

    async def _api_set_network_rule(self, network: str, action: str | None) -> str:
        """Admin: allows or denies a network for LAN sessions, both directions (None removes the
        operator's rule for it). Audited. Returns the network in normal form."""
        normal = netpolicy.parse_network(network)
        if action not in ("allow", "deny", None):
            raise InvalidInput(f"unknown network rule action {action!r}")
        await self._require_admin(f"network rule {action or 'remove'}")
        now = self._clock()
        async with self.store.transaction() as conn:
            removed = await conn.execute(t.network_rules.delete().where(t.network_rules.c.network == normal))
            if action is None and removed.rowcount == 0:
                raise NotFound(f"there is no rule for {normal}")
            if action is not None:
                await conn.execute(insert(t.network_rules).values(network=normal, action=action, created_at=now, created_by=self._user.hex()))
            await _append_audit(conn, self._keys.node, now, self._user.hex(), "network_rule", {"network": normal, "action": action or "removed"})
        return normal

    async def _api_check_peer_incarnation(self, peer: bytes, incarnation: bytes, *, via: str, address: str | None = None, record: bool = True) -> None:
        """Judges a node key presented with `incarnation` (a LAN handshake, a bundle). Raises
        IdentityConflict - audited, at most once an hour per key after the first - when the key
        is this node's own from another machine, was first seen with another incarnation, or is
        already in conflict; otherwise remembers the first incarnation seen. Without `record`
        (a preview) it judges and writes nothing."""
        own = peer == self._row.node_key
        if own and incarnation == self._row.incarnation:
            return
        async with self.store.reading() as conn:
            if await identity.known_good(conn, peer, incarnation):
                return
        now = self._clock()
        async with self.store.transaction() as conn:
            verdict = await identity.record_incarnation(conn, peer, incarnation, now, first=self._row.incarnation if own else None, record=record)
            if verdict.audit:
                detail: dict[str, object] = {"node": ids.key_id(peer), "via": via, "incarnation": incarnation.hex(), "detected": verdict.detected, "refusals": verdict.refusals}
                if address is not None:
                    detail["address"] = address
                await _append_audit(conn, self._keys.node, now, self._row.node_key.hex(), "identity_conflict", detail)
        if verdict.refused:
            raise IdentityConflict(self._conflict_text(peer))

    def _conflict_text(self, node_key: bytes) -> str:
        if node_key == self._row.node_key:
            return (
                f"{identity.CONFLICT_PREFIX}another machine presents this node's own identity (its enrollment file was used twice, or its disk copied)"
                f" -- revoke it and re-enroll both (rallypoint node revoke {self._row.node_name})"
            )
        name = self._node_names.get(node_key, ids.key_id(node_key))
        return f"{identity.CONFLICT_PREFIX}two nodes present the identity of {name} ({ids.key_id(node_key)}) -- revoke it and re-enroll (rallypoint node revoke {name})"

    async def _api_audit_conflict_reported(self, peer: bytes, reason: str, *, via: str, address: str | None = None) -> None:
        """A peer refused this node because it sees this node's identity on two machines."""
        detail: dict[str, object] = {"by": ids.key_id(peer), "via": via, "reason": reason}
        if address is not None:
            detail["address"] = address
        async with self.store.transaction() as conn:
            await _append_audit(conn, self._keys.node, self._clock(), self._row.node_key.hex(), "identity_conflict_reported", detail)

    async def _api_audit_lan_refusal(self, address: str, reason: str, peer: bytes | None = None) -> None:
        """Records that an incoming or outgoing LAN session was refused, and why."""
        detail: dict[str, object] = {"address": address, "reason": reason}
        if peer is not None:
            detail["peer"] = ids.key_id(peer)
        async with self.store.transaction() as conn:
            await _append_audit(conn, self._keys.node, self._clock(), self._row.node_key.hex(), "lan_refused", detail)

    async def _api_audit_lan_refusals(self, summary: str, kind: str, refusals: int, addresses: int) -> None:
        """Records a summary of LAN refusals too many to audit one by one (a flood)."""
        detail: dict[str, object] = {"summary": summary, "reason": kind, "refusals": refusals, "addresses": addresses}
        async with self.store.transaction() as conn:
            await _append_audit(conn, self._keys.node, self._clock(), self._row.node_key.hex(), "lan_refusals_summarised", detail)

    @property
    def _api_signing_key(self) -> nacl.signing.SigningKey:
        """This node's identity key: signs bundles, opens the ones addressed to it."""
        self._require_unlocked()
        return self._keys.node

    def _require_unlocked(self) -> None:
        if self._locked is not None:
            raise NodeLocked(self._locked)

    async def _wipe_after_revocation(self, revocation: certs.Revocation) -> None:
        """Remote wipe: this node's own revocation arrived. Its data key and sealed secrets are
        destroyed and its content deleted (overwritten on disk, then the file is rewritten), so
        the store left behind opens to nothing but the audit log and the reason."""
        by = self._api_directory.users.get(revocation.issuer)
        reason = f"this node was revoked by {by.name if by else ids.key_id(revocation.issuer)} ({revocation.reason or 'no reason given'}); its data was wiped"
        async with self._lock:
            async with self.store.transaction() as conn:
                for table in (t.changes, t.snapshots, t.messages, t.read_markers, t.channels, t.blobs, t.peer_heads, t.peer_blobs, t.documents, t.sealed_secrets):
                    await conn.execute(table.delete())
                if self.store.is_sqlite:  # FTS5 keeps deleted terms in its index until told otherwise
                    await conn.execute(text("INSERT INTO messages_fts(messages_fts) VALUES ('delete-all')"))
                await conn.execute(update(t.node_identity).values(sealed_data_key=b""))
                await conn.execute(insert(t.settings).values(name=LOCKED_SETTING, value=reason))
                await _append_audit(conn, self._keys.node, self._clock(), self._row.node_key.hex(), "wiped", {"revoked_by": revocation.issuer.hex(), "reason": revocation.reason})
            self._forget_everything(reason)
        await self.store.scrub()

    def _forget_everything(self, reason: str) -> None:
        """The in-memory half of a remote wipe: documents and keys go, and every call from now on
        raises NodeLocked(reason)."""
        self._docs.clear()
        self._known.clear()
        self._since_snapshot.clear()
        self._heads_cache.clear()
        self._channel_by_name.clear()
        self._doc_rows.clear()
        self._keys = _Keys(b"", crypto.new_signing_key(self._rng(32)), None, {})
        self._locked = reason
        self.feed.publish(NodeWiped(reason))

    # --- channels ------------------------------------------------------------------

    async def _load_head(self, channel_id: str) -> documents.ChannelHead | None:
        head = self._heads_cache.get(channel_id)
        if head is not None:
            return head
        async with self.store.reading() as conn:
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

    async def _materialise_head(self, conn: AsyncConnection, channel_id: str, doc: Document) -> None:
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

    def _can_read(self, head: documents.ChannelHead, user: bytes) -> bool:
        return head.kind == "public" or user.hex() in head.members

    async def _channel(self, name_or_id: str) -> documents.ChannelHead:
        """By id, or by name among the channels the acting user can read."""
        self._require_unlocked()
        cached = self._channel_by_name.get(name_or_id)
        if cached is not None:
            head = await self._load_head(cached)
            if head is not None and self._can_read(head, self._user):
                return head
        async with self.store.reading() as conn:
            by_id = (await conn.execute(select(t.channels.c.channel_id).where(t.channels.c.channel_id == name_or_id))).scalar()
            if by_id is None:
                name = name_or_id.lstrip("#").lower()
                candidates = (await conn.execute(select(t.channels.c.channel_id).where(t.channels.c.name == name).order_by(t.channels.c.created_at))).scalars().all()
            else:
                candidates = [by_id]
        for channel_id in candidates:
            head = await self._load_head(channel_id)
            if head is not None and self._can_read(head, self._user):
                self._channel_by_name[name_or_id] = channel_id
                return head
        raise NotFound(f"no channel {name_or_id!r} that you can read")

    async def _api_create_channel(self, name: str, *, private: bool = False, purpose: str = "") -> ChannelSummary:
        cert = self._acting_cert()
        if cert.role == "observer":
            raise PermissionDenied("observers cannot create channels")
        name = check_channel_name(name)
        if len(purpose) > 250:
            raise InvalidInput("purpose too long (at most 250 characters)")
        async with self.store.reading() as conn:
            clash = (await conn.execute(select(t.channels.c.channel_id).where(and_(t.channels.c.name == name, t.channels.c.archived.is_(False))))).first()
        if clash is not None:
            raise InvalidInput(f"a channel named #{name} already exists")
        channel_id = self._rng(10).hex()
        doc_id = documents.head_doc_id(channel_id)
        kind = "private" if private else "public"

        def mutate(doc: Document) -> None:
            documents.create_head(doc, name=name, purpose=purpose, kind=kind, created_by=self._user.hex(), created_at=self._clock())

        async def also(conn: AsyncConnection) -> None:
            await self._materialise_head(conn, channel_id, self._docs[doc_id])
            await _append_audit(conn, self._keys.node, self._clock(), self._user.hex(), "channel_created", {"channel": name, "kind": kind})

        await self._commit_local(doc_id, mutate, also)
        return ChannelSummary(channel_id, name, purpose, kind, False, 0, 0, (cert.name,))

    async def _api_add_member(self, channel: str, user_name: str) -> None:
        head = await self._channel(channel)
        if head.kind != "private":
            raise InvalidInput(f"#{head.name} is public: every user can already read it")
        if head.members.get(self._user.hex()) != "owner" and not self._api_directory.is_admin(self._user):
            raise PermissionDenied(f"only the owner of #{head.name} or an admin can add members")
        target = self._api_directory.user_by_name(user_name)
        if target is None:
            raise NotFound(f"no user {user_name!r}")
        doc_id = documents.head_doc_id(head.channel_id)

        async def also(conn: AsyncConnection) -> None:
            await self._materialise_head(conn, head.channel_id, self._docs[doc_id])
            await _append_audit(conn, self._keys.node, self._clock(), self._user.hex(), "member_added", {"channel": head.name, "user": user_name, "role": "member"})

        await self._commit_local(doc_id, lambda doc: documents.set_member(doc, target.key.hex(), "member"), also)

    async def _api_list_channels(self) -> list[ChannelSummary]:
        self._require_unlocked()
        me = self._user.hex()
        async with self.store.reading() as conn:
            rows = (await conn.execute(select(t.channels).order_by(t.channels.c.name))).mappings().all()
            markers = dict((await conn.execute(select(t.read_markers.c.channel_id, t.read_markers.c.last_read).where(t.read_markers.c.user_key == self._user))).all())
            out = []
            for row in rows:
                members = json.loads(row["members"])
                if row["kind"] != "public" and me not in members:
                    continue
                since = markers.get(row["channel_id"], "")
                # Unread counts top-level messages (replies show as reply counts); mentions count anywhere.
                newer = select(func.count()).where(
                    and_(t.messages.c.channel_id == row["channel_id"], t.messages.c.message_id > since, t.messages.c.author != me, t.messages.c.deleted.is_(False))
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
                        members=tuple(sorted(self._api_user_name(u) for u in members)) if row["kind"] == "private" else (),
                    )
                )
        return out

    async def _api_export_channel(self, channel: str) -> dict[str, bytes]:
        """Each of the channel's Automerge documents, saved whole (doc id -> bytes)."""
        head = await self._channel(channel)
        async with self.store.reading() as conn:
            doc_ids = (await conn.execute(select(t.documents.c.doc_id).where(t.documents.c.channel_id == head.channel_id).order_by(t.documents.c.doc_id))).scalars().all()
        return {doc_id: (await self._doc(doc_id)).save() for doc_id in doc_ids}

    # --- messages ------------------------------------------------------------------

    async def _writable(self, channel: str) -> documents.ChannelHead:
        head = await self._channel(channel)
        cert = self._acting_cert()
        if cert.role == "observer":
            raise PermissionDenied("observers can read but not write")
        if head.archived:
            raise PermissionDenied(f"#{head.name} is archived")
        return head

    async def _segment_for_new_message(self, channel_id: str) -> str:
        cursor = self._segment_cursor.get(channel_id)
        if cursor is None:
            async with self.store.reading() as conn:
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
            cert = self._api_directory.user_by_name(name.rstrip("."))
            if cert is not None and cert.key.hex() not in found:
                found.append(cert.key.hex())
        return found

    async def _api_post(self, channel: str, body: str, *, reply_to: str | None = None, attachments: Sequence[Attachment] = ()) -> str:
        head = await self._writable(channel)
        if reply_to is not None:
            parent = await self._message_row(reply_to)
            if parent["channel_id"] != head.channel_id:
                raise InvalidInput("a reply must be in the same channel as its thread")
            reply_to = parent["root_id"] or parent["message_id"]
        files = [self._check_attachment(a) for a in attachments]
        (message_id,) = await self._post_into_segment(head, [check_text(body)], reply_to, files)
        return message_id

    async def _api_post_many(self, channel: str, bodies: Sequence[str]) -> list[str]:
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
        refs = [documents.FileRef(name=a.name, size=len(a.data), hash=digest.hex()) for a, digest in files]
        mutations, message_ids = [], []
        for body in bodies:
            now = self._clock()
            message_id = self._message_ids.new(now, int.from_bytes(self._rng(10), "big"))
            message_ids.append(message_id)
            mutations.append(
                lambda doc, message_id=message_id, now=now, body=body: documents.post_message(
                    doc, message_id=message_id, author=self._user.hex(), created_at=now, text=body, root_id=reply_to, files=refs, mentions=self._mentions(body)
                )
            )

        async def also(conn: AsyncConnection) -> None:
            for attachment, digest in files:
                await self._store_blob(conn, digest, attachment.data)
            doc, admins = self._docs[doc_id], self._admin_hexes()
            states = [documents.read_message(doc, message_id, admins) for message_id in message_ids]
            await self._insert_messages(conn, [self._message_values(head.channel_id, doc_id, state) for state in states if state is not None])
            # Under the write lock: an import that came first may have reset the cursor (it is
            # then recounted from the store) or moved it to another segment.
            cursor = self._segment_cursor.get(head.channel_id)
            if cursor is not None and documents.segment_doc_id(head.channel_id, cursor[0]) == doc_id:
                self._segment_cursor[head.channel_id] = (cursor[0], cursor[1] + len(message_ids))

        await self._commit_local(doc_id, mutations, also)
        return message_ids

    def _check_attachment(self, attachment: Attachment) -> tuple[Attachment, bytes]:
        name = os.path.basename(attachment.name.replace("\\", "/"))
        if not name or len(name) > 255 or any(not c.isprintable() for c in name):
            raise InvalidInput(f"invalid attachment name {attachment.name!r}")
        if len(attachment.data) > self._api_max_blob_bytes:
            raise BlobTooLarge(f"{name} is {len(attachment.data)} bytes; the limit is {self._api_max_blob_bytes}")
        return Attachment(name, attachment.data), crypto.sha256(attachment.data)

    async def _store_blob(self, conn: AsyncConnection, digest: bytes, data: bytes) -> None:
        exists = (await conn.execute(select(t.blobs.c.hash).where(t.blobs.c.hash == digest))).first()
        if exists is None:
            await conn.execute(insert(t.blobs).values(hash=digest, size=len(data), data=data, added_at=self._clock()))

    async def _api_blob(self, digest_hex: str) -> bytes:
        """An attachment by its hash, or by any unique start of it (`read` shows 12 hex digits)."""
        self._require_unlocked()
        low, high = ids.hash_prefix_range(digest_hex)
        matching = t.blobs.c.hash.between(low, high)
        async with self.store.reading() as conn:
            found = (await conn.execute(select(t.blobs.c.hash).where(matching).limit(2))).scalars().all()
            if len(found) > 1:
                count = (await conn.execute(select(func.count()).select_from(t.blobs).where(matching))).scalar_one()
                raise InvalidInput(f"{digest_hex} starts the hashes of {count} attachments on this node: give more of it")
            data = (await conn.execute(select(t.blobs.c.data).where(t.blobs.c.hash == found[0]))).scalar() if found else None
        if data is None:
            raise NotFound(f"this node does not have blob {digest_hex[:12]}")
        return data

    async def _api_blob_count(self) -> int:
        async with self.store.reading() as conn:
            return (await conn.execute(select(func.count()).select_from(t.blobs))).scalar_one()

    async def _api_set_max_blob_bytes(self, limit: int) -> None:
        await self._require_admin("set attachment limit")
        if limit < 1:
            raise InvalidInput("the attachment limit must be positive")
        async with self.store.transaction() as conn:
            updated = await conn.execute(update(t.settings).where(t.settings.c.name == "max_blob_bytes").values(value=str(limit)))
            if updated.rowcount == 0:
                await conn.execute(insert(t.settings).values(name="max_blob_bytes", value=str(limit)))
            await _append_audit(conn, self._keys.node, self._clock(), self._user.hex(), "setting_changed", {"max_blob_bytes": limit})
        self._api_max_blob_bytes = limit

    async def _message_row(self, message_id: str) -> dict[str, Any]:
        if not ids.is_message_id(message_id.upper()):
            raise InvalidInput(f"not a message id: {message_id!r}")
        async with self.store.reading() as conn:
            row = (await conn.execute(select(t.messages).where(t.messages.c.message_id == message_id.upper()))).mappings().first()
        if row is None:
            raise NotFound(f"no message {message_id}")
        head = await self._load_head(row["channel_id"])
        if head is None or not self._can_read(head, self._user):
            raise NotFound(f"no message {message_id}")
        return dict(row)

    async def _modify(self, message_id: str, mutate: Callable[[Document], None], audited: str | None = None) -> None:
        """`audited`: the audit action to record with the change (its detail names the message)."""
        row = await self._message_row(message_id)
        head = await self._writable(row["channel_id"])
        if row["deleted"]:
            raise InvalidInput(f"message {message_id} was deleted")
        doc_id = row["doc_id"]

        async def also(conn: AsyncConnection) -> None:
            await self._materialise_message(conn, row["channel_id"], doc_id, self._docs[doc_id], row["message_id"])
            if audited is not None:
                detail = {"message": row["message_id"], "channel": head.name, "author": self._api_user_name(row["author"])}
                await _append_audit(conn, self._keys.node, self._clock(), self._user.hex(), audited, detail)

        await self._commit_local(doc_id, mutate, also)

    async def _api_edit(self, message_id: str, body: str) -> None:
        row = await self._message_row(message_id)
        if row["author"] != self._user.hex():
            raise PermissionDenied("only a message's author can edit it")
        body = check_text(body)
        mentions = self._mentions(body)
        await self._modify(message_id, lambda doc: documents.edit_message(doc, row["message_id"], body, self._clock(), mentions))

    async def _api_delete(self, message_id: str) -> None:
        row = await self._message_row(message_id)
        moderated = row["author"] != self._user.hex()
        if moderated and not self._api_directory.is_admin(self._user):
            raise PermissionDenied("only a message's author or an admin can delete it")
        await self._modify(message_id, lambda doc: documents.delete_message(doc, row["message_id"], self._clock()), "message_deleted" if moderated else None)

    async def _api_react(self, message_id: str, emoji: str, *, remove: bool = False) -> None:
        emoji = check_emoji(emoji)
        row = await self._message_row(message_id)
        if (self._user.hex() in json.loads(row["reactions"]).get(emoji, [])) != remove:
            return  # already as asked: reacting twice (or removing what is not there) changes nothing
        await self._modify(message_id, lambda doc: documents.set_reaction(doc, row["message_id"], emoji, self._user.hex(), not remove))

    @staticmethod
    def _message_values(channel_id: str, doc_id: str, state: documents.MessageState) -> dict[str, Any]:
        return {
            "message_id": state.message_id,
            "channel_id": channel_id,
            "doc_id": doc_id,
            "author": state.author,
            "created_at": state.created_at,
            "text": state.text,
            "root_id": state.root_id,
            "edited_at": state.edited_at,
            "deleted": state.deleted,
            # Most messages have none of these: the literals spare a bulk import ~8 us a message.
            "reactions": json.dumps(state.reactions, sort_keys=True) if state.reactions else "{}",
            "files": json.dumps([{"name": f.name, "size": f.size, "hash": f.hash} for f in state.files]) if state.files else "[]",
            "mentions": json.dumps(list(state.mentions)) if state.mentions else "[]",
            "tampered": state.tampered,
            "deleted_by": state.deleted_by,
        }

    async def _materialise_message(self, conn: AsyncConnection, channel_id: str, doc_id: str, doc: Document, message_id: str) -> None:
        state = documents.read_message(doc, message_id, self._admin_hexes())
        if state is None:
            return
        values = self._message_values(channel_id, doc_id, state)
        updated = await conn.execute(_UPDATE_MESSAGE, {**values, "target_id": message_id})
        if not updated.rowcount:
            await self._insert_messages(conn, [values])

    async def _insert_messages(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        """Adds rows to the view and, on SQLite, their text to the search index in one
        statement (FTS5 indexes a batch about ten times faster than a trigger per row)."""
        if not rows:
            return
        before = (await conn.execute(select(func.coalesce(func.max(t.messages.c.row_id), 0)))).scalar_one() if self.store.is_sqlite else 0
        await conn.execute(_INSERT_MESSAGE, rows)
        if self.store.is_sqlite:  # row_id only grows, and the write lock is ours: the new rows are those above
            await conn.execute(_INDEX_NEW_MESSAGES, {"before": before})

    async def _materialise_segment(
        self, conn: AsyncConnection, channel_id: str, doc_id: str, doc: Document, only: set[str] | None, admins: frozenset[str]
    ) -> int:
        """Rewrites the view of the segment's messages that changes from elsewhere touched
        (`only`; None: every message), judged with `admins`: two executemany statements,
        whatever the segment holds. Returns how many messages are new."""
        present_query = select(t.messages.c.message_id).where(t.messages.c.doc_id == doc_id)
        if only is None:
            states = documents.read_messages(doc, admins)
        else:
            wanted = sorted(only)
            states = [documents.read_message(doc, m, admins) for m in wanted]
            present_query = present_query.where(t.messages.c.message_id.in_(wanted))
        rows = [self._message_values(channel_id, doc_id, s) for s in states if s is not None and ids.is_message_id(s.message_id)]
        present = set((await conn.execute(present_query)).scalars())
        updates = [{**row, "target_id": row["message_id"]} for row in rows if row["message_id"] in present]
        inserts = [row for row in rows if row["message_id"] not in present]
        if updates:
            await conn.execute(_UPDATE_MESSAGE, updates)
        if inserts:
            await self._insert_messages(conn, inserts)
        self._segment_cursor.pop(channel_id, None)
        return len(inserts)

    def _admin_hexes(self) -> frozenset[str]:
        return _admin_hexes(self._api_directory)

    async def _rejudge(self, conn: AsyncConnection, admins: frozenset[str], which: Any) -> None:
        """Re-reads, with `admins`, the messages `which` selects among those whose delete flag
        someone other than the author set (found by their index): whether that deletion counts
        is the only part of a view that depends on the directory."""
        m = t.messages.c
        affected: dict[tuple[str, str], set[str]] = {}
        for message_id, channel_id, doc_id in await conn.execute(select(m.message_id, m.channel_id, m.doc_id).where(which)):
            affected.setdefault((channel_id, doc_id), set()).add(message_id)
        held, self._hold_snapshots = self._hold_snapshots, True  # an eviction must not open a second write transaction
        try:
            for (channel_id, doc_id), message_ids in sorted(affected.items()):
                await self._materialise_segment(conn, channel_id, doc_id, await self._doc(doc_id), message_ids, admins)
        finally:
            self._hold_snapshots = held

    def _view(self, row: Any, channel_name: str, reply_count: int = 0) -> MessageView:
        reactions = {emoji: [self._api_user_name(u) for u in users] for emoji, users in json.loads(row["reactions"]).items()}
        return MessageView(
            id=row["message_id"],
            channel=channel_name,
            channel_id=row["channel_id"],
            author=self._api_user_name(row["author"]),
            author_key=row["author"],
            created_at=row["created_at"],
            text=row["text"],
            root_id=row["root_id"],
            edited_at=row["edited_at"],
            deleted=bool(row["deleted"]),
            reactions=reactions,
            files=[FileView(**f) for f in json.loads(row["files"])],
            mentions=[self._api_user_name(u) for u in json.loads(row["mentions"])],
            reply_count=reply_count,
            tampered=bool(row["tampered"]),
        )

    async def _api_read(self, channel: str, *, thread: str | None = None, limit: int = 50, before: str | None = None, mark_read: bool = True) -> list[MessageView]:
        """Oldest first. Without `thread`: the channel's top-level messages, each with its reply
        count; with `thread`: the thread's root and its replies."""
        head = await self._channel(channel)
        m = t.messages.c
        if thread is not None:
            root = await self._message_row(thread)
            root_id = root["root_id"] or root["message_id"]
            query = select(t.messages).where(and_(m.channel_id == head.channel_id, (m.message_id == root_id) | (m.root_id == root_id)))
        else:
            query = select(t.messages).where(and_(m.channel_id == head.channel_id, m.root_id.is_(None)))
        if before is not None:
            query = query.where(m.message_id < before)
        query = query.order_by(m.message_id.desc()).limit(max(1, min(limit, MAX_READ_PAGE)))
        async with self.store.reading() as conn:
            rows = list(reversed((await conn.execute(query)).mappings().all()))
            counts: dict[str, int] = {}
            if thread is None and rows:
                counted = await conn.execute(
                    select(m.root_id, func.count()).where(and_(m.root_id.in_([r["message_id"] for r in rows]), m.deleted.is_(False))).group_by(m.root_id)
                )
                counts = dict(counted.all())
        if mark_read and rows and before is None:
            # Seeing the newest page (or a thread) means having seen the channel up to its
            # newest message, replies included.
            async with self.store.reading() as conn:
                newest = (await conn.execute(select(func.max(m.message_id)).where(m.channel_id == head.channel_id))).scalar_one()
            try:
                await self._api_mark_read(head.channel_id, newest)
            except StorageError as exc:  # the messages were read all the same (a full disk, say)
                self._skipped_write(f"#{head.name} was not marked read: {exc}")
        return [self._view(r, head.name, counts.get(r["message_id"], 0)) for r in rows]

    async def _api_mark_read(self, channel_id: str, last_read: str) -> None:
        async with self.store.transaction() as conn:
            current = (await conn.execute(select(t.read_markers.c.last_read).where(and_(t.read_markers.c.user_key == self._user, t.read_markers.c.channel_id == channel_id)))).scalar()
            if current is None:
                await conn.execute(insert(t.read_markers).values(user_key=self._user, channel_id=channel_id, last_read=last_read))
            elif current < last_read:
                await conn.execute(update(t.read_markers).where(and_(t.read_markers.c.user_key == self._user, t.read_markers.c.channel_id == channel_id)).values(last_read=last_read))

    async def _api_message(self, message_id: str) -> MessageView:
        row = await self._message_row(message_id)
        head = await self._load_head(row["channel_id"])
        assert head is not None
        return self._view(row, head.name)

    async def _api_search(self, query: str, *, limit: int = 50) -> list[MessageView]:
        """Full-text search over the channels the acting user can read, newest first."""
        self._require_unlocked()
        terms = re.findall(r"\w+", query)
        if not terms:
            raise InvalidInput("search needs at least one word")
        readable = {c.channel_id: c.name for c in await self._api_list_channels()}
        async with self.store.reading() as conn:
            if self.store.is_sqlite:
                match = " ".join(f'"{term}"' for term in terms[:-1]) + f' "{terms[-1]}"*'
                rows = (await conn.execute(
                    text(
                        "SELECT m.* FROM messages_fts f JOIN messages m ON m.row_id = f.rowid "
                        "WHERE messages_fts MATCH :q AND m.deleted = 0 ORDER BY m.message_id DESC LIMIT :n"
                    ),
                    {"q": match.strip(), "n": limit * 4},
                )).mappings().all()
            else:
                condition = and_(*(t.messages.c.text.ilike(f"%{term}%") for term in terms), t.messages.c.deleted.is_(False))
                rows = (await conn.execute(select(t.messages).where(condition).order_by(t.messages.c.message_id.desc()).limit(limit * 4))).mappings().all()
        return [self._view(r, readable[r["channel_id"]]) for r in rows if r["channel_id"] in readable][:limit]

    # --- audit ---------------------------------------------------------------------

    async def _api_audit_entries(self, limit: int | None = None) -> list[AuditRecord]:
        query = select(t.audit_log).order_by(t.audit_log.c.seq.desc())
        if limit:
            query = query.limit(limit)
        async with self.store.reading() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [AuditRecord(r["seq"], r["at"], r["actor"], r["action"], json.loads(r["detail"])) for r in reversed(rows)]

    async def _api_verify_audit(self) -> audit.AuditVerdict:
        """The chain checked against this node's key; entries from before audit signing (up to
        the store's upgrade) count as legacy."""
        async with self.store.reading() as conn:
            legacy_until = (await conn.execute(select(t.node_identity.c.audit_legacy_until))).scalar_one()
            rows = (await conn.execute(select(t.audit_log).order_by(t.audit_log.c.seq))).mappings().all()
        entries = (audit.AuditEntry(r["seq"], r["at"], r["actor"], r["action"], r["detail"], r["prev_hash"], r["hash"], r["signature"]) for r in rows)
        return audit.verify_chain(entries, self._row.node_key, legacy_until=legacy_until)

    # --- backups -------------------------------------------------------------------

    async def _api_backup(self, directory: Path) -> BackupInfo:
        """Admin: writes a consistent copy of this node's store into `directory` while the node
        keeps running, and audits it. The copy holds content in the clear and secrets sealed
        under the passphrase; `Node.restore` brings it back on a new or rebuilt machine."""
        await self._require_admin("backup")
        if not directory.is_dir():
            raise InvalidInput(f"no folder {directory}")
        taken_at = self._clock()
        name = f"rallypoint-{self._api_node_id}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(taken_at / 1000))}{BACKUP_SUFFIX}"
        target = directory / name
        if target.exists():
            raise InvalidInput(f"{target} exists already")
        try:
            debris = await asyncio.to_thread(backups.remove_debris, directory)
            with backups.partial_file(directory / backups.partial_name(name)) as partial:
                await self.store.backup_into(partial)
                await asyncio.to_thread(_publish_backup, partial, target)
            size = target.stat().st_size
        except OSError as exc:
            raise StorageError(f"cannot write the backup into {directory}: {exc.strerror or exc}") from exc
        detail: dict[str, object] = {"file": name, "bytes": size}
        if debris.files:
            detail["removed_debris"] = {"files": debris.files, "bytes": debris.bytes}
        try:
            async with self.store.transaction() as conn:
                await _append_audit(conn, self._keys.node, self._clock(), self._user.hex(), "backup", detail)
        except StorageError as exc:  # a full disk is when a backup is wanted most: keep it, say so
            self._skipped_write(f"the backup {name} was written but is not in the audit log: {exc}")
        return BackupInfo(target, size, taken_at, debris.files, debris.bytes)

    @classmethod
    async def restore(cls, home: Path, backup: Path, passphrase: str, *, clock: Clock = wall_clock_ms, rng: Random = crypto.random_bytes) -> Node:
        """Makes an empty `home` the node a backup was taken of: the file is checked, copied in and
        unlocked with `passphrase`; if any step fails, `home` is left without a node again."""
        if Node.exists(home):
            raise AlreadyInitialised(f"{home} already holds a node: restore into an empty home")
        ensure_home(home)
        try:
            await asyncio.to_thread(_copy_durably, backup, home / DB_FILE)
            node = await cls.open(home, passphrase, clock=clock, rng=rng)
        except OSError as exc:
            _remove_db(home)
            raise StorageError(f"cannot copy {backup.name} into {home}: {exc.strerror or exc}") from exc
        except BaseException:
            _remove_db(home)
            raise
        async with node.store.transaction() as conn:
            await _append_audit(conn, node._keys.node, clock(), "-", "restored", {"file": backup.name})
        return node



# Built once: SQLAlchemy then reuses their compiled form on the hot path.
_INSERT_CHANGE = insert(t.changes)
_INSERT_MESSAGE = insert(t.messages)
_INDEX_NEW_MESSAGES = text("INSERT INTO messages_fts(rowid, text) SELECT row_id, text FROM messages WHERE row_id > :before")
_UPDATE_MESSAGE = (
    update(t.messages)
    .where(t.messages.c.message_id == bindparam("target_id"))
    .values({c.name: bindparam(c.name) for c in t.messages.c if c.name not in ("row_id", "message_id")})
)


async def _append_audit(conn: AsyncConnection, signer: nacl.signing.SigningKey | None, at: int, actor: str, action: str, detail: dict[str, object]) -> None:
    """Appends an entry signed with `signer`, the node's key (None only while it is still sealed)."""
    last = (await conn.execute(select(t.audit_log).order_by(t.audit_log.c.seq.desc()).limit(1))).mappings().first()
    prev = audit.AuditEntry(last["seq"], last["at"], last["actor"], last["action"], last["detail"], last["prev_hash"], last["hash"]) if last else None
    entry = audit.make_entry(prev, at, actor, action, detail, signer)
    await conn.execute(
        insert(t.audit_log).values(
            seq=entry.seq, at=entry.at, actor=entry.actor, action=entry.action, detail=entry.detail, prev_hash=entry.prev_hash, hash=entry.hash, signature=entry.signature
        )
    )


class _Rollback(Exception):
    """Ends a preview import's transaction, carrying what it would have changed."""

    def __init__(self, summary: ImportSummary) -> None:
        super().__init__("preview")
        self.summary = summary


def _import_rank(doc_id: str) -> int:
    """Directory first (it decides who may write), then channel heads (they decide private
    membership), then segments."""
    return ("directory", "head", "segment").index(documents.parse_doc_id(doc_id)[0])


def _split_hashes(joined: bytes) -> list[bytes]:
    return [joined[i : i + 32] for i in range(0, len(joined) - len(joined) % 32, 32)]


def _ancestors(graph: Mapping[bytes, bytes], heads: Iterable[bytes]) -> set[bytes]:
    """Every change reachable from the heads that `graph` (hash -> concatenated deps) knows."""
    found: set[bytes] = set()
    stack = [h for h in heads if h in graph]
    while stack:
        current = stack.pop()
        if current in found:
            continue
        found.add(current)
        stack.extend(dep for dep in _split_hashes(graph[current]) if dep in graph)
    return found


def _frontier(graph: Mapping[bytes, bytes]) -> tuple[bytes, ...]:
    """The heads of a document: changes no other change depends on."""
    depended = {dep for deps in graph.values() for dep in _split_hashes(deps)}
    return tuple(sorted(h for h in graph if h not in depended))


def _admin_hexes(directory: certs.Directory) -> frozenset[str]:
    return frozenset(k.hex() for k, c in directory.users.items() if c.role == "admin")


def _decode_entry(kind: str, data: bytes) -> certs.Certificate | certs.Revocation:
    return certs.decode_certificate(data) if kind == "certificate" else certs.decode_revocation(data)


def _split_entries(entries: Iterable[certs.Certificate | certs.Revocation]) -> tuple[list[certs.Certificate], list[certs.Revocation]]:
    found_certs: list[certs.Certificate] = []
    found_revs: list[certs.Revocation] = []
    for entry in entries:
        if isinstance(entry, certs.Certificate):
            found_certs.append(entry)
        else:
            found_revs.append(entry)
    return found_certs, found_revs


def _entry_kind(entry: certs.Certificate | certs.Revocation) -> str:
    return "certificate" if isinstance(entry, certs.Certificate) else "revocation"


def _check_passphrase(passphrase: str) -> None:
    if len(passphrase) < 8:
        raise InvalidInput("the passphrase must have at least 8 characters")


def _normalise_code(code: str) -> str:
    return re.sub(r"[\s-]", "", code).upper().replace("O", "0").replace("I", "1").replace("L", "1")


def _open_enrollment(data: bytes, code: str) -> dict[str, Any]:
    try:
        outer = cbor.decode(data, "enrollment file")
    except InvalidInput as exc:
        raise EnrollmentRejected(f"not an enrollment file ({exc})") from exc
    if isinstance(outer, dict) and outer.get("format") == identity.USED_ENROLLMENT_FORMAT:
        used_at = outer.get("used_at")
        when = f" at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(used_at / 1000))}" if isinstance(used_at, int) else ""
        raise EnrollmentRejected(f"this enrollment file was already used (by node {str(outer.get('node'))[:40]}{when}): ask an admin for a new invitation")
    if not isinstance(outer, dict) or outer.get("format") != ENROLLMENT_FORMAT:
        raise EnrollmentRejected("not a Rallypoint enrollment file (or an unsupported version)")
    try:
        params = crypto.KdfParams(int(outer["opslimit"]), int(outer["memlimit"]))
        if params.memlimit > 1 << 30 or params.opslimit > 16:
            raise EnrollmentRejected("enrollment file asks for an unreasonable key-derivation cost")
        inner_bytes = crypto.open_with_passphrase(_normalise_code(code), outer["sealed"], outer["salt"], params)
    except WrongPassphrase as exc:
        raise EnrollmentRejected("wrong enrollment code (or the file was altered)") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise EnrollmentRejected("damaged enrollment file") from exc
    inner = cbor.decode(inner_bytes, "enrollment contents")
    if not isinstance(inner, dict):
        raise EnrollmentRejected("damaged enrollment contents")
    return inner


def _publish_backup(partial: Path, target: Path) -> None:
    """Checks the fresh copy, makes it durable, then gives it its name: a crash or a full disk
    never leaves a file that looks like a finished backup."""
    check_database_file(partial)
    _fsync_path(partial)
    os.rename(partial, target)
    _fsync_path(target.parent)


def _copy_durably(source: Path, target: Path) -> None:
    """Copies the backup at `source` (a regular file: a named pipe would block the copy forever)
    to `target`, readable by its owner only, and checks the copy before giving it its name: what
    is checked is what is used, even if `source` is swapped meanwhile."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.unlink(missing_ok=True)  # left by a restore that was killed
        fd, _ = open_regular(source)
        with owned(fd), open(fd, "rb", closefd=False) as reader, open(create_private(partial), "wb") as writer:
            shutil.copyfileobj(reader, writer, COPY_CHUNK_BYTES)
            writer.flush()
            os.fsync(writer.fileno())
        check_database_file(partial, source.name)
        os.rename(partial, target)
        _fsync_path(target.parent)
    finally:
        partial.unlink(missing_ok=True)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_db(home: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path = home / f"{DB_FILE}{suffix}"
        if path.exists():
            path.unlink()


def _facet(name: str, members: dict[str, str]) -> type:
    """Stand-in while the services move out of Node: each member reads the Node's own."""
    namespace: dict[str, Any] = {new: property(lambda self, old=old: getattr(self._node, "_api_" + old)) for new, old in members.items()}
    namespace["__init__"] = lambda self, node: setattr(self, "_node", node)
    return type(name, (), namespace)

_IdentityFacet = _facet("identity", {'node_id': 'node_id', 'workspace_id': 'workspace_id', 'workspace_key': 'workspace_key', 'node_key': 'node_key', 'incarnation': 'incarnation', 'signing_key': 'signing_key', 'user_key': 'user_key', 'whoami': 'whoami', 'act_as': 'act_as', 'now': 'now', 'locked_reason': 'locked_reason'})
_DirectoryFacet = _facet("directory", {'users': 'users', 'user_name': 'user_name', 'add_user': 'add_user', 'set_role': 'set_role', 'revoke': 'revoke', 'nodes': 'nodes', 'peers': 'peers', 'trust_of': 'trust_of', 'node_key_of': 'node_key_of', 'current': 'directory'})
_EnrollmentFacet = _facet("enrollment", {'invite': 'invite'})
_ChatFacet = _facet("chat", {'create_channel': 'create_channel', 'add_member': 'add_member', 'post': 'post', 'post_many': 'post_many', 'edit': 'edit', 'delete': 'delete', 'react': 'react'})
_ViewsFacet = _facet("views", {'list_channels': 'list_channels', 'read': 'read', 'message': 'message', 'search': 'search', 'mark_read': 'mark_read'})
_ReplicaFacet = _facet("replica", {'changes_for': 'changes_for', 'document_heads': 'document_heads', 'document_ids': 'document_ids', 'export_channel': 'export_channel', 'skipped_writes': 'skipped_writes'})
_BlobsFacet = _facet("blobs", {'blob': 'blob', 'blob_count': 'blob_count', 'set_max_blob_bytes': 'set_max_blob_bytes', 'max_blob_bytes': 'max_blob_bytes'})
_IntakeFacet = _facet("intake", {'import_changes': 'import_changes', 'import_batches': 'import_batches', 'bundle_decision': 'bundle_decision', 'record_rejection': 'record_rejection', 'courier_log': 'courier_log'})
_ExchangeFacet = _facet("exchange", {'delta_for': 'delta_for', 'heads_for': 'heads_for', 'changes_behind': 'changes_behind', 'documents_lacking': 'documents_lacking', 'note_sent': 'note_sent', 'record_peer_heads': 'record_peer_heads', 'routable_to': 'routable_to'})
_PeersFacet = _facet("peers", {'note_lan_peer': 'note_lan_peer', 'note_lan_sync': 'note_lan_sync', 'lan_peers': 'lan_peers', 'peer_overview': 'peer_overview', 'network_rules': 'network_rules', 'set_network_rule': 'set_network_rule', 'check_peer_incarnation': 'check_peer_incarnation', 'audit_conflict_reported': 'audit_conflict_reported', 'audit_lan_refusal': 'audit_lan_refusal', 'audit_lan_refusals': 'audit_lan_refusals'})
_AuditFacet = _facet("audit", {'entries': 'audit_entries', 'verify': 'verify_audit'})
_CustodyFacet = _facet("custody", {'backup': 'backup'})
