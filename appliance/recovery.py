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
anew with the new home) and `recover` installs the new identity's kit the same way."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import insert

from appliance import atrest, crypto, documents, ids, keystore
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.changes import SignedChange
from appliance.errors import AlreadyInitialised, ChangeRejected
from appliance.kernel import Clock, Random, append_audit, wall_clock_ms
from appliance.node import Node
from appliance.recovery_kit import KitContents, KitRejected, open_kit
from appliance.services.custody import remove_db
from appliance.services.identity import IdentityRow, Keys, check_passphrase, insert_identity
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
    and its own user signed in with `user_secret` (default: the passphrase) - their secret as it
    was on the lost node. On any failure `home` is left without a node."""
    check_passphrase(passphrase)
    contents = await asyncio.to_thread(open_kit, kit, code)
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
        await _install(home, store, contents, data_key, key_file, clock, rng)
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


async def _install(home: Path, store: Storage, kit: KitContents, data_key: bytes, key_file: atrest.KeyFile, clock: Clock, rng: Random) -> None:
    node_key = crypto.new_signing_key(kit.node_seed)
    workspace_key = crypto.new_signing_key(kit.workspace_seed) if kit.workspace_seed else None
    row = IdentityRow(kit.workspace_name, kit.workspace_key, kit.node_name, bytes(node_key.verify_key), kit.default_user, kit.incarnation, kit.kdf)
    keys = Keys(data_key, node_key, workspace_key, {}, {user.public_key for user in kit.users})
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
    now = clock()
    async with store.transaction() as conn:
        await insert_identity(conn, row, keys, key_file, now, rng)
        for user in kit.users:
            await conn.execute(insert(t.user_secrets).values(public_key=user.public_key, salt=user.salt, sealed=user.sealed, must_change=user.must_change, changed_at=user.changed_at))
            if user.mfa is not None:
                await conn.execute(insert(t.user_mfa).values(public_key=user.public_key, sealed_secret=user.mfa[0], enrolled_at=user.mfa[1], last_step=user.mfa[2]))
        detail: dict[str, object] = {"node": ids.key_id(row.node_key), "users": len(kit.users), "kit_made_at": kit.made_at}
        await append_audit(conn, node_key, now, "-", AuditAction.RECOVERED, detail)
