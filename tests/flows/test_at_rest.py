"""Encryption at rest (issue 17 point 1): a node's store is SQLCipher under a key derived from
its data key, which node.key holds sealed under the passphrase; a relay may be given the data
key itself; a plain store from before is converted at its first unlock; backups stay
ciphertext and carry the key file they open with."""

from __future__ import annotations

import hashlib
import os
import stat
from contextlib import closing
from pathlib import Path

import pytest

from appliance import atrest, cipher, keystore
from appliance.backups import backup_key_path
from appliance.errors import KeyFileInvalid, StorageError, WrongKey, WrongPassphrase
from appliance.node import Attachment, Node
from tests.conftest import FAST, PASSPHRASE, connect_node_db, node_db_key
from tests.plain_store import decrypt_to, files_holding, make_plain

SECRET_TEXT = "zebracrossing-7f3a quartermaster manifest"
SECRET_FILE = b"attachment-payload-0c9d: the vault code is 4471"
NEEDLES = [b"zebracrossing-7f3a", b"quartermaster", b"attachment-payload-0c9d", b"vault code is 4471"]


async def _node_with_content(home: Path) -> Node:
    node = await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    await node.chat.create_channel("general")
    await node.chat.post("general", SECRET_TEXT, attachments=[Attachment("manifest.txt", SECRET_FILE)])
    for i in range(30):
        await node.chat.post("general", f"filler {i} quartermaster")
    return node


def _digests(home: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(home.iterdir()) if p.is_file()}


async def test_a_new_node_keeps_everything_under_its_home_and_its_backups_ciphertext(tmp_path: Path) -> None:
    home, backups = tmp_path / "alpha", tmp_path / "backups"
    backups.mkdir()
    node = await _node_with_content(home)
    try:
        assert [m.text for m in await node.views.search("zebracrossing")] == [SECRET_TEXT]
        taken = await node.custody.backup(backups)
        # While the node runs: the write-ahead log and its index hold recent pages too.
        assert files_holding(NEEDLES, home, backups) == {}
    finally:
        await node.close()
    assert files_holding(NEEDLES, home, backups) == {}
    assert stat.S_IMODE((home / atrest.KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(backup_key_path(taken.path).stat().st_mode) == 0o600
    # The check can fail: the same store in the clear holds every needle.
    decrypt_to(home, tmp_path / "clear.db")
    assert set(files_holding(NEEDLES, tmp_path / "clear.db")[str(tmp_path / "clear.db")]) == set(NEEDLES)
    async with await Node.open(home, PASSPHRASE) as node:
        assert [m.text for m in await node.views.search("quartermaster manifest")] == [SECRET_TEXT]


async def test_a_wrong_passphrase_or_key_file_refuses_and_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    node = await _node_with_content(home)
    relay_key = tmp_path / "relay.key"
    await node.identity.export_data_key(relay_key)
    assert stat.S_IMODE(relay_key.stat().st_mode) == 0o600
    assert [e.action for e in await node.audit.entries()][-1] == "data_key_exported"
    await node.close()
    before = _digests(home)
    with pytest.raises(WrongPassphrase):
        await Node.open(home, "not the passphrase")
    with pytest.raises(WrongKey, match="does not open this node's store"):
        await Node.open(home, "", data_key=bytes(32), sign_in=False)
    after = _digests(home)
    assert after.pop(keystore.FAILURES) and after == before  # only the note of the wrong passphrase
    async with await Node.open(home, "", data_key=keystore.read_data_key_file(relay_key), sign_in=False) as relay:
        assert relay.identity.whoami().node_name == "alpha"
    async with await Node.open(home, PASSPHRASE) as node:
        actions = [e.action for e in await node.audit.entries()]
        assert actions.count("unlock_failed") == 1
    assert not (home / keystore.FAILURES).exists()


def test_a_data_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "relay.key"
    path.write_bytes(atrest.encode_data_key_file(bytes(range(32))))
    for mode in (0o640, 0o604, 0o644):
        path.chmod(mode)
        with pytest.raises(KeyFileInvalid, match="readable by other users"):
            keystore.read_data_key_file(path)
    path.chmod(0o400)
    assert keystore.read_data_key_file(path) == bytes(range(32))


async def test_a_plain_store_is_encrypted_in_place_at_its_first_unlock(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    await (await _node_with_content(home)).close()
    make_plain(home)
    assert files_holding([b"zebracrossing-7f3a"], home)  # what a node before this release kept
    with pytest.raises(WrongPassphrase):  # a wrong passphrase converts nothing
        await Node.open(home, "not the passphrase")
    assert not (home / atrest.KEY_FILE).exists()
    async with await Node.open(home, PASSPHRASE) as node:
        assert [m.text for m in await node.views.search("zebracrossing")] == [SECRET_TEXT]
        assert await node.blobs.blob((await node.views.search("zebracrossing"))[0].files[0].hash) == SECRET_FILE
        actions = [e.action for e in await node.audit.entries()]
        assert actions[-2:] == ["unlock_failed", "store_encrypted"]
        assert (await node.audit.verify()).ok
    assert files_holding(NEEDLES, home) == {}
    assert {p.name for p in home.iterdir()} <= {"node.db", "node.db-wal", "node.db-shm", atrest.KEY_FILE}


@pytest.mark.parametrize("left", ["key file only", "partial copy", "copy not renamed"])
async def test_an_interrupted_conversion_is_finished_by_the_next_unlock(tmp_path: Path, left: str) -> None:
    """The states a conversion killed between its steps leaves (the system test kills a real
    process at each): node.key written and node.db still plain, with or without a copy begun."""
    home = tmp_path / "alpha"
    await (await _node_with_content(home)).close()
    make_plain(home)
    unsealed = await keystore.data_key_for(home, PASSPHRASE, os.urandom, 0)  # a whole conversion, to get node.key
    assert unsealed.converted
    encrypted = (home / "node.db").read_bytes()
    make_plain(home)
    (home / atrest.KEY_FILE).write_bytes(atrest.encode_key_file(keystore.seal_key_file(unsealed.data_key, PASSPHRASE, FAST, os.urandom(16), os.urandom(24))))
    if left == "partial copy":
        (home / keystore.ENCRYPTING).write_bytes(encrypted[: len(encrypted) // 2])
    elif left == "copy not renamed":
        (home / keystore.ENCRYPTING).write_bytes(encrypted)
    async with await Node.open(home, PASSPHRASE) as node:
        assert [m.text for m in await node.views.search("zebracrossing")] == [SECRET_TEXT]
    assert not (home / keystore.ENCRYPTING).exists()
    assert files_holding(NEEDLES, home) == {}


async def test_an_encrypted_store_without_its_key_file_says_so(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    await (await _node_with_content(home)).close()
    (home / atrest.KEY_FILE).unlink()
    with pytest.raises(KeyFileInvalid, match="node.key is missing"):
        await Node.open(home, PASSPHRASE)
    (home / atrest.KEY_FILE).write_bytes(b"rallypoint-node-key/9\n")
    with pytest.raises(KeyFileInvalid, match="newer format"):
        await Node.open(home, PASSPHRASE)


async def test_a_backup_restores_with_its_key_file_and_the_passphrase(tmp_path: Path) -> None:
    home, backups = tmp_path / "alpha", tmp_path / "backups"
    backups.mkdir()
    async with await _node_with_content(home) as node:
        taken = await node.custody.backup(backups)
    with pytest.raises(WrongPassphrase):
        await Node.restore(tmp_path / "wrong", taken.path, "not the passphrase")
    assert not (tmp_path / "wrong" / "node.db").exists()
    async with await Node.restore(tmp_path / "rebuilt", taken.path, PASSPHRASE) as node:
        assert [m.text for m in await node.views.search("zebracrossing")] == [SECRET_TEXT]
    assert files_holding(NEEDLES, tmp_path / "rebuilt") == {}
    backup_key_path(taken.path).unlink()
    with pytest.raises(StorageError, match=r"not a readable node database: .* no .*\.backup\.db\.key beside it"):
        await Node.restore(tmp_path / "keyless", taken.path, PASSPHRASE)
    assert not (tmp_path / "keyless" / "node.db").exists()


async def test_a_damaged_encrypted_backup_is_refused_with_the_reason(tmp_path: Path) -> None:
    home, backups = tmp_path / "alpha", tmp_path / "backups"
    backups.mkdir()
    async with await _node_with_content(home) as node:
        taken = await node.custody.backup(backups)
    data = bytearray(taken.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one page's authentication fails
    taken.path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="damaged|not a readable"):
        await Node.restore(tmp_path / "rebuilt", taken.path, PASSPHRASE)
    assert not (tmp_path / "rebuilt" / "node.db").exists()


async def test_tests_read_the_store_keyed(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    await (await _node_with_content(home)).close()
    with connect_node_db(home / "node.db") as conn:
        assert conn.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'zebracrossing'").fetchone() == (1,)


async def test_what_a_courier_leaves_under_the_home_stays_ciphertext(tmp_path: Path) -> None:
    """A peer's node: its store fed by a bundle, and a tampered copy of the bundle in its
    quarantine with the reason beside it. Nothing under its home holds the content."""
    from sync import stick
    from sync.sneakernet import export_bundles, import_bundles
    from tests.conftest import make_workspace

    alice, bob = await make_workspace(tmp_path, "bob")
    root = tmp_path / "stick"
    root.mkdir()
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.post("general", SECRET_TEXT, attachments=[Attachment("manifest.txt", SECRET_FILE)])
        await export_bundles(alice, root)
        (path,) = sorted((root / stick.STICK_DIR).glob("*/*.rpb"))
        good = path.read_bytes()
        tampered = bytearray(good)
        tampered[-100] ^= 0x01
        path.write_bytes(bytes(tampered))
        (refused,) = (await import_bundles(bob, root)).rejected
        assert refused.quarantined is not None and refused.quarantined.is_relative_to(bob.home)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(good)
        assert (await import_bundles(bob, root)).changes_applied
        assert [m.text for m in await bob.views.search("zebracrossing")] == [SECRET_TEXT]
        assert files_holding(NEEDLES, bob.home) == {}
    assert files_holding(NEEDLES, bob.home) == {}
    assert {p.name for p in bob.home.iterdir()} <= {"node.db", "node.db-wal", "node.db-shm", atrest.KEY_FILE, "quarantine"}


def _hmac_of(db: Path, home: Path) -> str:
    with closing(cipher.Keyed(str(db), node_db_key(home)).connect()) as conn:
        return str(conn.execute("PRAGMA cipher_hmac_algorithm").fetchone()[0])


def _rewrite_with_legacy_hmac(db: Path) -> None:
    """The store as the previous release encrypted it: pages authenticated with HMAC-SHA512."""
    legacy = db.with_name("legacy.db")
    with closing(connect_node_db(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute(f"ATTACH DATABASE ? AS legacy KEY \"x'{node_db_key(db.parent).hex()}'\"", (str(legacy),))
        conn.execute(f"PRAGMA legacy.cipher_hmac_algorithm = {cipher.LEGACY_HMAC}")
        conn.execute("SELECT sqlcipher_export('legacy')")
        conn.execute(f"PRAGMA legacy.user_version = {int(conn.execute('PRAGMA user_version').fetchone()[0])}")
        conn.execute("DETACH DATABASE legacy")
    for log in (db.with_name("node.db-wal"), db.with_name("node.db-shm")):
        log.unlink(missing_ok=True)
    os.replace(legacy, db)


async def test_a_store_of_the_previous_release_opens_with_its_hmac_and_its_backup_takes_the_new_one(tmp_path: Path) -> None:
    home, backups = tmp_path / "alpha", tmp_path / "backups"
    backups.mkdir()
    await (await _node_with_content(home)).close()
    assert _hmac_of(home / "node.db", home) == cipher.HMAC
    _rewrite_with_legacy_hmac(home / "node.db")
    assert _hmac_of(home / "node.db", home) == cipher.LEGACY_HMAC
    async with await Node.open(home, PASSPHRASE) as node:
        await node.chat.post("general", "written under the old settings")
        assert [m.text for m in await node.views.search("zebracrossing")] == [SECRET_TEXT]
        taken = await node.custody.backup(backups)
    with pytest.raises(WrongPassphrase):
        await Node.open(home, "not the passphrase")
    assert _hmac_of(taken.path, home) == cipher.HMAC  # a copy is written with this release's settings
    async with await Node.restore(tmp_path / "rebuilt", taken.path, PASSPHRASE) as node:
        assert "written under the old settings" in [m.text for m in await node.views.read("general")]
    assert files_holding(NEEDLES, home) == {} and files_holding(NEEDLES, tmp_path / "rebuilt") == {}
