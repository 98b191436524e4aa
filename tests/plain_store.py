"""Test helpers for encryption at rest: a node's home as a release before encryption left it
(plain node.db, no node.key), and a grep over every file under some folders."""

from __future__ import annotations

import os
from contextlib import closing
from pathlib import Path

from appliance import cipher
from appliance.atrest import KEY_FILE
from tests.conftest import PASSPHRASE, node_db_key


def decrypt_to(home: Path, target: Path, passphrase: str = PASSPHRASE) -> None:
    """Writes a plain copy of `home`'s encrypted store to the new file `target`."""
    with closing(cipher.Keyed(str(home / "node.db"), node_db_key(home, passphrase)).connect(isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("ATTACH DATABASE ? AS plain KEY ''", (str(target),))
        conn.execute("SELECT sqlcipher_export('plain')")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA plain.user_version = {int(version)}")
        conn.execute("DETACH DATABASE plain")


def make_plain(home: Path, passphrase: str = PASSPHRASE) -> None:
    """Turns a closed node's home into what a release before encryption left: node.db plain (in
    WAL mode, as the store keeps it), no node.key. The identity row still holds the sealed data
    key, as it always did."""
    plain = home / "plain.db"
    decrypt_to(home, plain, passphrase)
    for suffix in ("-wal", "-shm"):
        (home / f"node.db{suffix}").unlink(missing_ok=True)
    os.rename(plain, home / "node.db")
    (home / KEY_FILE).unlink()
    with closing(cipher.DRIVER.connect(str(home / "node.db"))) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def files_holding(needles: list[bytes], *roots: Path) -> dict[str, list[bytes]]:
    """Every file under `roots` (recursively, whatever its name) holding one of `needles`, with
    the ones it holds."""
    paths = [root for root in roots if root.is_file()]
    for root in roots:
        paths += [Path(folder) / name for folder, _dirs, names in os.walk(root) for name in names]
    found: dict[str, list[bytes]] = {}
    for path in paths:
        data = path.read_bytes()
        if hits := [needle for needle in needles if needle in data]:
            found[str(path)] = hits
    return found
