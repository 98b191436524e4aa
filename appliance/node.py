"""A Rallypoint node: one workspace member's local-first store of channels.

`Node` is a small facade. Its openers - `init` (a new workspace), `join` (an enrollment file),
`open` (unlock with the passphrase), `restore` (a backup into an empty home) and `exists` -
assemble the node's services over one kernel (`appliance.kernel`: store, write lock, clock,
change feed, audit writer, cache invalidation); everything else is a service attribute:
`node.identity`, `node.directory`, `node.enrollment`, `node.chat`, `node.views`,
`node.replica`, `node.blobs`, `node.intake`, `node.exchange`, `node.peers`, `node.audit`,
`node.custody`, `node.signin` (who acts: per-user sign-in and MFA), and `node.feed`. Every operation checks the acting user's certificate and
channel role in its service, whatever interface calls it. `docs/node.md` maps the services."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from appliance import atrest, certs, crypto, identity, keystore, user_keys
from appliance.audit_actions import AuditAction
from appliance.errors import AlreadyInitialised, ChangeRejected, EnrollmentRejected, NotInitialised, WrongKey
from appliance.kernel import Clock, Kernel, Random, append_audit, wall_clock_ms
from appliance.services.audit import AuditService
from appliance.services.audit_feeds import AuditFeeds
from appliance.services.blobs import Attachment, BlobsService
from appliance.services.chat import SEGMENT_SIZE, ChatService, check_channel_name
from appliance.services.compliance import ComplianceService
from appliance.services.custody import BACKUP_SUFFIX, CustodyService, bring_in, remove_db, rewind_home
from appliance.services.directory import DirectoryService
from appliance.services.enrollment import MAX_ENROLLMENT_FILE_BYTES, EnrollmentService, enrolled_identity, open_enrollment
from appliance.services.exchange import ExchangeService
from appliance.services.heads import ChannelHeads
from appliance.services.identity import IdentityRow, IdentityService, Keys, check_passphrase, unlock, write_identity
from appliance.services.intake import IntakeService
from appliance.services.peers import PeersService
from appliance.services.replica import CACHED_DOCUMENTS, ReplicaService
from appliance.services.roster import Roster
from appliance.services.signin import SignInService
from appliance.services.views import ViewsService
from appliance.store import DB_FILE, Storage, Store, ensure_home
from appliance.upkeep import Upkeep

# What callers import from here.
__all__ = ["BACKUP_SUFFIX", "CACHED_DOCUMENTS", "MAX_ENROLLMENT_FILE_BYTES", "SEGMENT_SIZE", "Attachment", "Node", "check_channel_name", "wall_clock_ms"]


class Node:
    def __init__(self, home: Path, store: Storage, row: IdentityRow, keys: Keys, clock: Clock, rng: Random) -> None:
        """Assembles the services, each given the earlier ones it uses."""
        self.home = home
        self.store = store
        kernel = Kernel(store, clock, rng, keys.node)
        self.feed = kernel.feed
        self._roster = roster = Roster(kernel, row.workspace_key)
        self.identity = IdentityService(kernel, roster, row, keys)
        heads = ChannelHeads(kernel, self.identity, roster)
        self.replica = ReplicaService(kernel, self.identity, roster, heads)
        self.views = ViewsService(kernel, self.identity, roster, heads, self.replica)
        self.directory = DirectoryService(kernel, self.identity, roster, self.replica, self.views)
        self.blobs = BlobsService(kernel, self.identity, roster)
        self.chat = ChatService(kernel, self.identity, roster, heads, self.replica, self.views, self.blobs)
        self.exchange = ExchangeService(kernel, self.identity, roster, heads, self.replica)
        self.custody = CustodyService(kernel, self.identity, roster, home, self.replica, self.directory)
        feeds = AuditFeeds(kernel, self.identity, roster)
        self.intake = IntakeService(kernel, self.identity, roster, heads, self.replica, self.views, self.directory, self.blobs, self.exchange, self.custody, feeds)
        self.enrollment = EnrollmentService(kernel, self.identity, roster, self.replica, self.directory, self.intake)
        self.peers = PeersService(kernel, self.identity, roster, self.directory, self.exchange)
        self.audit = AuditService(kernel, self.identity, roster, feeds, ComplianceService(kernel, self.identity, roster, self.replica, self.intake.pool))
        self.signin = SignInService(kernel, self.identity, roster, self.directory)
        self._upkeep = Upkeep(store, self.replica, kernel.note_skipped_write)  # started once the node is open

    def _opened(self) -> Node:
        """The node is open: its store upkeep (snapshots, checkpoints, index merges) starts, and
        what the process holds by now - modules, the node's services and caches, ~100k objects
        - is set aside from the cycle collector, which otherwise walks all of it in each full
        collection (measured: 8-13 % of an import's CPU, twice as much encrypted as plain, a
        source of the import rate's spread). They are handed back when the node closes."""
        self._upkeep.start()
        gc.freeze()
        return self

    async def __aenter__(self) -> Node:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self._upkeep.stop()
            await self.replica.flush_snapshots()
        finally:
            self.intake.close()
            await self.store.__aexit__(None, None, None)
            gc.unfreeze()

    @staticmethod
    def exists(home: Path) -> bool:
        """Whether `home` holds a node (to choose between first-run setup and unlock)."""
        return (home / DB_FILE).exists()

    @staticmethod
    async def _fresh_store(home: Path, store: Storage | None, data_key: bytes) -> Storage:
        """A store for a new node: encrypted under `data_key` unless one is given."""
        ensure_home(home)
        store = store or Store.at(home, atrest.database_key(data_key))
        try:
            await store.__aenter__()
        except WrongKey as exc:  # a store under another key: another node's
            raise AlreadyInitialised(f"{home} already holds a node") from exc
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
        user_secret: str | None = None,
        kdf: crypto.KdfParams = crypto.INTERACTIVE,
        clock: Clock = wall_clock_ms,
        rng: Random = crypto.random_bytes,
        store: Storage | None = None,
    ) -> Node:
        """A new workspace whose first admin is `user_name` on this node, signed in; their secret
        is `user_secret`, else the passphrase."""
        workspace_name = certs.check_name(workspace_name)
        user_name = certs.check_name(user_name)
        node_name = certs.check_name(node_name)
        check_passphrase(passphrase)
        if user_secret is not None:
            user_keys.check_secret(user_secret)
        # Drawn in the order of earlier releases: a seeded `rng` makes the same workspace.
        workspace_key = crypto.new_signing_key(rng(32))
        node_key = crypto.new_signing_key(rng(32))
        user_key = crypto.new_signing_key(rng(32))
        data_key, incarnation = rng(32), rng(identity.INCARNATION_BYTES)
        key_file = await _new_key_file(data_key, passphrase, kdf, rng)
        store = await cls._fresh_store(home, store, data_key)
        try:
            await asyncio.to_thread(keystore.write_private_atomically, keystore.key_path(home), atrest.encode_key_file(key_file))
            ws_pub = bytes(workspace_key.verify_key)
            now = clock()
            issued = [
                certs.issue_certificate(
                    workspace_key, workspace=ws_pub, kind=certs.SubjectKind.USER, key=bytes(user_key.verify_key), name=user_name, role=certs.Role.ADMIN, issued_at=now, home=bytes(node_key.verify_key)
                ),
                certs.issue_certificate(workspace_key, workspace=ws_pub, kind=certs.SubjectKind.NODE, key=bytes(node_key.verify_key), name=node_name, role=certs.Role.NODE, issued_at=now),
            ]
            keys = Keys(data_key, node_key, workspace_key, {bytes(user_key.verify_key): user_key})
            row = IdentityRow(workspace_name, ws_pub, node_name, bytes(node_key.verify_key), bytes(user_key.verify_key), incarnation, kdf)
            await write_identity(store, row, keys, passphrase, kdf, rng, now, user_secret, key_file)
            node = cls(home, store, row, keys, clock, rng)
            await node.directory.add_entries(issued, AuditAction.INIT, {"workspace": node.identity.workspace_id, "user": user_name, "node": node.identity.node_id})
            await node.signin.sign_in_own(user_secret or passphrase)
            return node._opened()
        except BaseException:
            await store.__aexit__(None, None, None)
            raise

    @classmethod
    async def open(
        cls,
        home: Path,
        passphrase: str,
        *,
        data_key: bytes | None = None,
        as_user: str | None = None,
        user_secret: str | None = None,
        totp_code: str | None = None,
        sign_in: bool = True,
        clock: Clock = wall_clock_ms,
        rng: Random = crypto.random_bytes,
        store: Storage | None = None,
    ) -> Node:
        """Unlocks the node. A wrong passphrase raises WrongPassphrase, is audited, and
        changes nothing else. Then signs in `as_user` (default: the node's own user) with
        `user_secret` (default: the passphrase) and `totp_code` - a refused sign-in raises and
        leaves the node closed - unless `sign_in` is False (the console asks who signs in).
        `node.signin.result` says what the user must still do before they act. An unattended
        relay gives the `data_key` itself (its key file) instead of the passphrase; a wrong one
        raises WrongKey and changes nothing. A plain store (from before encryption) is
        encrypted in place first (appliance/keystore.py)."""
        if store is None and not Node.exists(home):
            raise NotInitialised(f"no node in {home}: run `rallypoint init` or `rallypoint join` first")
        converted = plain = False
        if data_key is None:
            unsealed = await keystore.data_key_for(home, passphrase, rng, clock(), convert=store is None)
            data_key, converted, plain = unsealed.data_key, unsealed.converted, unsealed.plain
        failures = await asyncio.to_thread(keystore.noted_failures, home)
        store = store or Store.at(home, None if plain else atrest.database_key(data_key))
        try:
            await store.__aenter__()
        except BaseException:
            await store.__aexit__(None, None, None)
            raise
        try:
            row, keys = await unlock(store, home, data_key, clock, failures)
            if failures:
                await asyncio.to_thread(keystore.forget_failures, home)
            node = cls(home, store, row, keys, clock, rng)
            if converted:
                async with store.transaction() as conn:
                    await append_audit(conn, keys.node, clock(), row.node_key.hex(), AuditAction.STORE_ENCRYPTED, {"file": DB_FILE, "key_file": atrest.KEY_FILE})
                await asyncio.to_thread(keystore.forget_conversion, home)
            await node._roster.reload()
            await node.replica.load()
            await node.blobs.load()
            await node.views.judge_upgraded()
            if sign_in and as_user is None:
                await node.signin.sign_in_own(user_secret or passphrase, totp_code)
            elif sign_in and as_user is not None:
                await node.signin.sign_in(as_user, user_secret or passphrase, totp_code)
            await node.custody.hold_if_copy()
            return node._opened()
        except BaseException:
            await store.__aexit__(None, None, None)
            raise

    @classmethod
    async def join(
        cls,
        home: Path,
        enrollment: bytes,
        code: str,
        passphrase: str,
        *,
        user_secret: str | None = None,
        kdf: crypto.KdfParams = crypto.INTERACTIVE,
        clock: Clock = wall_clock_ms,
        rng: Random = crypto.random_bytes,
        store: Storage | None = None,
    ) -> Node:
        """A node made from an enrollment file and its one-time code (`node.enrollment.invite`);
        its user's secret is `user_secret`, else the passphrase."""
        check_passphrase(passphrase)
        if user_secret is not None:
            user_keys.check_secret(user_secret)
        inner = await asyncio.to_thread(open_enrollment, enrollment, code)
        incarnation, data_key = rng(identity.INCARNATION_BYTES), rng(32)  # in the order of earlier releases
        key_file = await _new_key_file(data_key, passphrase, kdf, rng)
        store = await cls._fresh_store(home, store, data_key)
        try:
            await asyncio.to_thread(keystore.write_private_atomically, keystore.key_path(home), atrest.encode_key_file(key_file))
            row, keys = enrolled_identity(inner, incarnation, data_key, kdf)
            node = cls(home, store, row, keys, clock, rng)
            await node.enrollment.install(inner, passphrase, kdf, user_secret, key_file)
            await node.signin.sign_in_own(user_secret or passphrase)
            return node._opened()
        except ChangeRejected as exc:
            await store.__aexit__(None, None, None)
            remove_db(home)
            raise EnrollmentRejected(f"the enrollment file's directory does not verify: {exc}") from exc
        except BaseException:
            await store.__aexit__(None, None, None)
            remove_db(home)
            raise

    @classmethod
    async def restore(
        cls,
        home: Path,
        backup: Path,
        passphrase: str,
        *,
        at: int | None = None,
        log: Path | None = None,
        read_only: bool = False,
        clock: Clock = wall_clock_ms,
        rng: Random = crypto.random_bytes,
    ) -> Node:
        """Makes an empty `home` the node a backup was taken of: the file is checked, copied in and
        unlocked with `passphrase`; if any step fails, `home` is left without a node again. With
        `at` (ms), the node as it was then (appliance/rewind.py: `log` a later store whose change
        log covers `at`), optionally as a `read_only` copy for inspection."""
        db_key = await bring_in(home, backup, passphrase)
        try:
            rewound = await rewind_home(home, backup, at, log, db_key) if at is not None else None
            node = await cls.open(home, passphrase, clock=clock, rng=rng)
        except BaseException:
            remove_db(home)
            raise
        if rewound is not None:
            await node.views.rebuild(rewound.rebuilt, rewound.touched)
        await node.custody.record_restore(backup, rewound, read_only)
        return node


async def _new_key_file(data_key: bytes, passphrase: str, kdf: crypto.KdfParams, rng: Random) -> atrest.KeyFile:
    """A new node's data key sealed under its passphrase (Argon2id, off the event loop)."""
    salt, nonce = rng(crypto.SALT_BYTES), rng(crypto.NONCE_BYTES)
    return await asyncio.to_thread(keystore.seal_key_file, data_key, passphrase, kdf, salt, nonce)
