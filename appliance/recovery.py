"""Disaster recovery: a lost node rebuilt on new hardware from its recovery kit.

`recover` opens the kit with its code and installs what it holds into an empty home: the same
node key, name, workspace and incarnation (the same machine, replaced - as a restore keeps
them), each local user's key still sealed under their own secret, and the directory's signed
changes, imported through the normal verification path. The store is otherwise empty: a LAN
session or a courier's bundles from any peer refill it. A peer learns that the node holds
nothing from the node's first complete report of what it holds (a LAN session's opening heads,
a bundle addressed to that peer alone) and from then on sends it everything it may receive.

A node whose hardware was taken is not recovered with its old key: an admin replaces it from its
kit (`CustodyService.replace_node`: the old key revoked, a new one certified, its users certified
anew with the new home) and `recover` installs the new identity's kit the same way.

The kit an admin makes at enrollment (recovery_kit.KitKind.ENROLLMENT) holds the first user's key
itself: it is sealed anew under the secret given here, as at join. Its incarnation is the one
the node's certificate commits to, not the lost machine's: each peer that meets the node accepts
it in place of the one it knew (services/peers.py) and refuses the lost machine's from then on.
Users added on the lost node after its enrollment are not in it (their keys were made there):
an admin re-keys them with `user reset-secret`; a node's own kit brings them back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import insert

from appliance import atrest, crypto, documents, ids, keystore, user_keys
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.changes import SignedChange
from appliance.errors import AlreadyInitialised, ChangeRejected
from appliance.kernel import Clock, Random, append_audit, wall_clock_ms
from appliance.node import Node
from appliance.recovery_kit import KitContents, KitKind, KitRejected, open_kit
from appliance.services.custody import remove_db
from appliance.services.identity import IdentityRow, Keys, check_passphrase, insert_identity, write_identity
from appliance.store import Storage, Store, ensure_home


async def recover(
    home: Path,
    kit: bytes,
    code: str,
    passphrase: str,
    *,
    user_secret: str | None = None,
    clock: Clock = wall_clock_ms,
    rng: Random = crypto.random_bytes,
) -> Node:
    """The node a recovery kit was made of, in the empty `home`, unlocked by the new `passphrase`
    and its own user signed in with `user_secret` (default: the passphrase). From a node's own
    kit, that is the user's secret as it was on the lost node; from the kit an admin made at
    enrollment, it becomes their secret, as at join. On any failure `home` is left without a
    node."""
    check_passphrase(passphrase)
    contents = await asyncio.to_thread(open_kit, kit, code)
    return await recover_opened(home, contents, passphrase, user_secret=user_secret, clock=clock, rng=rng)


async def recover_opened(
    home: Path,
    contents: KitContents,
    passphrase: str,
    *,
    user_secret: str | None = None,
    clock: Clock = wall_clock_ms,
    rng: Random = crypto.random_bytes,
) -> Node:
    """`recover` of a kit already opened (`open_kit`): the caller knows its kind."""
    check_passphrase(passphrase)
    if user_secret is not None and contents.kind == KitKind.ENROLLMENT:
        user_keys.check_secret(user_secret)
    ensure_home(home)
    if keystore.key_path(home).exists():
        raise AlreadyInitialised(f"{home} already holds a node: recover into an empty home")
    # A new data key, sealed under the new passphrase into the home's key file: the store is
    # encrypted from its first page, as a new node's is.
    data_key = rng(32)
    key_file = await asyncio.to_thread(keystore.seal_key_file, data_key, passphrase, contents.kdf, rng(crypto.SALT_BYTES), rng(crypto.NONCE_BYTES))
    store = Store.at(home, atrest.database_key(data_key))
    await store.__aenter__()
    try:
        if await store.has_identity():
            raise AlreadyInitialised(f"{home} already holds a node: recover into an empty home")
        await asyncio.to_thread(keystore.write_private_atomically, keystore.key_path(home), atrest.encode_key_file(key_file))
        await _install(home, store, contents, data_key, key_file, clock, rng, user_secret or passphrase)
    except AlreadyInitialised:
        await store.__aexit__(None, None, None)
        raise
    except BaseException:
        await store.__aexit__(None, None, None)
        remove_db(home)
        raise
    await store.__aexit__(None, None, None)
    try:
        return await Node.open(home, passphrase, user_secret=user_secret, clock=clock, rng=rng)
    except BaseException:
        remove_db(home)
        raise


async def _install(home: Path, store: Storage, kit: KitContents, data_key: bytes, key_file: atrest.KeyFile, clock: Clock, rng: Random, first_secret: str) -> None:
    node_key = crypto.new_signing_key(kit.node_seed)
    workspace_key = crypto.new_signing_key(kit.workspace_seed) if kit.workspace_seed else None
    row = IdentityRow(kit.workspace_name, kit.workspace_key, kit.node_name, bytes(node_key.verify_key), kit.default_user, kit.incarnation, kit.kdf)
    first_user = {kit.default_user: crypto.new_signing_key(kit.first_user_seed)} if kit.first_user_seed is not None else {}
    keys = Keys(data_key, node_key, workspace_key, first_user, {user.public_key for user in kit.users})
    node = Node(home, store, row, keys, clock, rng)
    try:
        signed = [SignedChange(data, signature) for data, signature in kit.directory]
        await node.intake.import_changes(documents.DIRECTORY_DOC, signed, received_from=ids.key_id(row.node_key))
    except ChangeRejected as exc:
        raise KitRejected(f"the recovery kit's directory does not verify: {exc}") from exc
    finally:
        node.intake.close()
    roster = node.directory.current
    if roster.nodes.get(row.node_key) is None:
        raise KitRejected("the recovery kit's node is revoked or unknown to its own directory: an admin enrolls a new node for its users instead")
    if kit.kind == KitKind.ENROLLMENT:
        cert = roster.nodes[row.node_key]
        if not cert.recovers_as(kit.incarnation):  # its peers would refuse it as a copy of the lost node
            raise KitRejected("the recovery kit's node certificate does not name this kit: it is not the kit made when the node was enrolled")
        if roster.user(row.default_user) is None:
            raise KitRejected("the recovery kit's first user is revoked or unknown to its own directory")
    now = clock()
    if kit.kind == KitKind.ENROLLMENT:  # the first user's key, sealed under their secret as at join
        await write_identity(store, row, keys, first_secret, kit.kdf, rng, now, first_secret, key_file)
    async with store.transaction() as conn:
        if kit.kind != KitKind.ENROLLMENT:
            await insert_identity(conn, row, keys, key_file, now, rng)
        for user in kit.users:
            await conn.execute(insert(t.user_secrets).values(public_key=user.public_key, salt=user.salt, sealed=user.sealed, must_change=user.must_change, changed_at=user.changed_at))
            if user.mfa is not None:
                await conn.execute(insert(t.user_mfa).values(public_key=user.public_key, sealed_secret=user.mfa[0], enrolled_at=user.mfa[1], last_step=user.mfa[2]))
        detail: dict[str, object] = {"node": ids.key_id(row.node_key), "users": len(kit.user_keys), "kit_made_at": kit.made_at, "kind": str(kit.kind)}
        await append_audit(conn, node_key, now, "-", AuditAction.RECOVERED, detail)
