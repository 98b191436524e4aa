"""Who this node is and who acts on it: its identity row, the keys unsealed while it is
unlocked, the acting user, and the lock a remote wipe leaves."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import atrest, certs, crypto, ids, user_keys
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.errors import InvalidInput, NodeLocked, NotInitialised, NotSignedIn, PermissionDenied, StorageError, WrongKey
from appliance.feed import NodeWiped
from appliance.kernel import Clock, Kernel, Random, append_audit
from appliance.model import Identity
from appliance.services.roster import Roster
from appliance.store import Storage

LOCKED_SETTING = "locked"  # set by a remote wipe; its value is the reason shown on open


@dataclass
class Keys:
    """Secrets held in memory while the node is unlocked. `users` holds the key of the one user
    signed in (none before a sign-in or after a sign-out); `local` names every user whose key
    this node keeps sealed (under their own secret, or the data key before the upgrade)."""

    data_key: bytes
    node: nacl.signing.SigningKey
    workspace: nacl.signing.SigningKey | None
    users: dict[bytes, nacl.signing.SigningKey]
    local: set[bytes] = field(default_factory=set)


@dataclass(frozen=True)
class IdentityRow:
    workspace_name: str
    workspace_key: bytes
    node_name: str
    node_key: bytes
    default_user: bytes
    incarnation: bytes  # this installation of the identity (see schema.node_identity)
    kdf: crypto.KdfParams = crypto.INTERACTIVE  # the node's Argon2id cost, for users' secrets too



class IdentityService:
    def __init__(self, kernel: Kernel, roster: Roster, row: IdentityRow, keys: Keys) -> None:
        self._kernel = kernel
        self._roster = roster
        self.row = row
        self.keys = keys
        self._acting = row.default_user
        self._locked: str | None = None  # the reason, once a remote wipe happened
        kernel.signer = keys.node

    @property
    def workspace_id(self) -> str:
        return ids.key_id(self.row.workspace_key)

    @property
    def node_id(self) -> str:
        return ids.key_id(self.row.node_key)

    @property
    def workspace_key(self) -> bytes:
        return self.row.workspace_key

    @property
    def node_key(self) -> bytes:
        return self.row.node_key

    @property
    def incarnation(self) -> bytes:
        """This installation of the node's identity (what peers see in handshakes and bundles)."""
        return self.row.incarnation

    @property
    def locked_reason(self) -> str | None:
        """Why this node holds nothing any more (its revocation arrived and it wiped itself)."""
        return self._locked

    def now(self) -> int:
        """This node's clock, in ms."""
        return self._kernel.clock()

    @property
    def user_key(self) -> bytes:
        return self._acting

    @property
    def signed_in(self) -> bool:
        """Whether a user is signed in (their key is in memory)."""
        return self._acting in self.keys.users

    def sign_in_as(self, user: bytes, key: nacl.signing.SigningKey) -> None:
        """Makes `user` the acting user with their unsealed key (the sign-in service's last step)."""
        self.keys.users = {user: key}
        self._acting = user

    def sign_out(self) -> None:
        """Drops the acting user's key from memory: nothing is signed until the next sign-in."""
        self.keys.users = {}

    def user_signing_key(self) -> nacl.signing.SigningKey:
        """The signed-in user's key; NotSignedIn when nobody is (or a step is still due)."""
        key = self.keys.users.get(self._acting)
        if key is None:
            raise NotSignedIn("nobody is signed in on this node: sign in first")
        return key

    def whoami(self) -> Identity:
        cert = self._roster.current.user(self.user_key)
        return Identity(
            workspace_name=self.row.workspace_name,
            workspace_id=self.workspace_id,
            workspace_key=self.row.workspace_key,
            node_name=self.row.node_name,
            node_id=self.node_id,
            node_key=self.row.node_key,
            user_name=cert.name if cert else ids.key_id(self.user_key),
            user_key=self.user_key,
            role=cert.role if cert else certs.Role.REVOKED,
            holds_workspace_key=self.keys.workspace is not None,
        )

    def acting_cert(self) -> certs.Certificate:
        cert = self._roster.current.user(self.user_key)
        if cert is None:
            raise PermissionDenied("this user's certificate is revoked, expired or unknown")
        return cert

    async def require_admin(self, action: str) -> nacl.signing.SigningKey:
        cert = self._roster.current.user(self.user_key)
        if cert is None or cert.role != "admin":
            async with self._kernel.store.transaction() as conn:
                await self._kernel.audit(conn, self._kernel.clock(), self.user_key.hex(), AuditAction.PERMISSION_DENIED, {"action": action})
            raise PermissionDenied(f"{action} needs the admin role")
        return self.user_signing_key()

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        """This node's identity key: signs bundles, opens the ones addressed to it."""
        self.require_unlocked()
        return self.keys.node

    def require_reader(self) -> None:
        """What reading content takes: the node unlocked and a user signed in (after a sign-out,
        the console's lock, nothing is read until the next sign-in)."""
        self.require_unlocked()
        self.user_signing_key()

    async def export_data_key(self, path: Path) -> None:
        """Admin: writes this node's data key to the new file `path` (0600) for an unattended
        relay (`Node.open(data_key=...)`), and audits it. Whoever reads that file reads the node."""
        await self.require_admin("export the data key")
        self.require_unlocked()
        try:
            await asyncio.to_thread(write_data_key_file, path, self.keys.data_key)
        except FileExistsError as exc:
            raise InvalidInput(f"{path} exists already: a data key file is never overwritten") from exc
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        async with self._kernel.store.transaction() as conn:
            await self._kernel.audit(conn, self._kernel.clock(), self.user_key.hex(), AuditAction.DATA_KEY_EXPORTED, {"file": str(path)})

    def require_unlocked(self) -> None:
        if self._locked is not None:
            raise NodeLocked(self._locked)

    def lock(self, reason: str) -> None:
        """The in-memory half of a remote wipe: documents and keys go, and every call from now on
        raises NodeLocked(reason)."""
        self.keys = Keys(b"", crypto.new_signing_key(self._kernel.rng(32)), None, {})
        self._kernel.signer = self.keys.node
        self._locked = reason
        self._kernel.invalidate()
        self._kernel.feed.publish(NodeWiped(reason))


async def write_identity(
    store: Storage, row: IdentityRow, keys: Keys, passphrase: str, kdf: crypto.KdfParams, rng: Random, now: int, user_secret: str | None = None, key_file: atrest.KeyFile | None = None
) -> None:
    """Writes the identity: the data key sealed under the passphrase (`key_file`, the one in
    node.key beside the store, else sealed here), the node and workspace keys under the data
    key, and the node's first user's key under that user's secret (the passphrase unless
    `user_secret` is given)."""
    if key_file is None:
        salt = rng(crypto.SALT_BYTES)
        key_file = atrest.KeyFile(salt, kdf, await asyncio.to_thread(crypto.seal_with_passphrase, passphrase, keys.data_key, salt, rng(crypto.NONCE_BYTES), kdf))
    user_salt = rng(crypto.SALT_BYTES)
    derived = await asyncio.to_thread(user_keys.derive, user_secret or passphrase, user_salt, kdf)
    first_user = user_keys.seal(derived, bytes(keys.users[row.default_user]), rng(crypto.NONCE_BYTES))
    keys.local.add(row.default_user)
    async with store.transaction() as conn:
        await insert_identity(conn, row, keys, key_file, now, rng)
        await conn.execute(insert(t.user_secrets).values(public_key=row.default_user, salt=user_salt, sealed=first_user, must_change=False, changed_at=now))


async def insert_identity(conn: AsyncConnection, row: IdentityRow, keys: Keys, key_file: atrest.KeyFile, now: int, rng: Random) -> None:
    """In `conn`'s transaction: the identity row, with the data key as `key_file` seals it (the
    one in node.key), and the node's and the workspace's keys sealed under the data key."""
    await conn.execute(
        insert(t.node_identity).values(
            id=1,
            workspace_name=row.workspace_name,
            workspace_key=row.workspace_key,
            node_name=row.node_name,
            node_key=row.node_key,
            default_user=row.default_user,
            kdf_salt=key_file.salt,
            kdf_opslimit=key_file.kdf.opslimit,
            kdf_memlimit=key_file.kdf.memlimit,
            sealed_data_key=key_file.sealed,
            created_at=now,
            incarnation=row.incarnation,
            audit_legacy_until=0,
        )
    )
    secrets = [(row.node_key, "node", keys.node)] + ([(row.workspace_key, "workspace", keys.workspace)] if keys.workspace is not None else [])
    for public, kind, key in secrets:
        await conn.execute(insert(t.sealed_secrets).values(public_key=public, kind=kind, sealed=crypto.secretbox_seal(keys.data_key, bytes(key), rng(crypto.NONCE_BYTES))))


async def unlock(store: Storage, home: Path, data_key: bytes, clock: Clock, failures: Sequence[int] = ()) -> tuple[IdentityRow, Keys]:
    """Reads the identity and unseals its keys with the data key (which opened the store). The
    wrong passphrases met before (`failures`, their times: the store could not be opened to
    record them then) are audited now."""
    async with store.reading() as conn:
        ident = (await conn.execute(select(t.node_identity))).mappings().first()
        if ident is None:
            raise NotInitialised(f"no node in {home}: run `rallypoint init` or `rallypoint join` first")
        sealed_rows = (await conn.execute(select(t.sealed_secrets))).all()
        local: set[bytes] = set((await conn.execute(select(t.user_secrets.c.public_key))).scalars().all())
        locked = (await conn.execute(select(t.settings.c.value).where(t.settings.c.name == LOCKED_SETTING))).scalar()
    if locked is not None:
        raise NodeLocked(locked)
    params = crypto.KdfParams(ident["kdf_opslimit"], ident["kdf_memlimit"])
    if failures:
        with contextlib.suppress(StorageError):  # a full disk: the attempts go unaudited, the answer stays right
            async with store.transaction() as conn:
                for at in failures:
                    await append_audit(conn, None, clock(), "-", AuditAction.UNLOCK_FAILED, {"reason": "wrong passphrase", "tried_at": at})
    keys = Keys(data_key, None, None, {}, local)  # type: ignore[arg-type]
    for secret in sealed_rows:
        if secret.kind == "user":  # from before per-user sign-in: opened when that user signs in
            keys.local.add(secret.public_key)
            continue
        seed = crypto.secretbox_open(data_key, secret.sealed)
        if seed is None:
            raise WrongKey(f"the data key does not open this node's sealed {secret.kind} key (wrong key, or the key is damaged)")
        sk = crypto.new_signing_key(seed)
        if secret.kind == "node":
            keys.node = sk
        elif secret.kind == "workspace":
            keys.workspace = sk
    row = IdentityRow(ident["workspace_name"], ident["workspace_key"], ident["node_name"], ident["node_key"], ident["default_user"], ident["incarnation"], params)
    return row, keys


def write_data_key_file(path: Path, data_key: bytes) -> None:
    """A relay's data key file: a new file (an existing one is never overwritten), 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as writer:
        os.fchmod(fd, 0o600)
        writer.write(atrest.encode_data_key_file(data_key))
        writer.flush()
        os.fsync(fd)


def check_passphrase(passphrase: str) -> None:
    if len(passphrase) < 8:
        raise InvalidInput("the passphrase must have at least 8 characters")
