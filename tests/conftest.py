"""Shared fixtures: nodes with cheap key derivation (the real cost is Argon2id "interactive").

Tests live in tier folders, and each test gets its folder's marker (`-m "not system"` is
`make test-fast`): unit (pure modules and codecs), contracts (one acceptance suite per port, run
on every implementation), flows (node and multi-service behaviour in one process), console
(Pilot, snapshots, tmux), system (real processes, sockets, namespaces, the image, Vagrant). A test
that needs root is also marked `root` (`tests.netns.requires_root` implies it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from appliance import crypto
from appliance.node import Node
from sync.sneakernet import export_bundles
from tests.netns import requires_root

FAST = crypto.KdfParams(1, 8192)
PASSPHRASE = "correct horse battery"
REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
TIERS = ("unit", "contracts", "flows", "console", "system")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(tier)
        if any(mark == requires_root.mark for mark in item.iter_markers("skipif")):
            item.add_marker("root")


def tier_of(path: Path) -> str | None:
    """The tier folder a test file is in, None outside the tiers."""
    parts = path.resolve().relative_to(TESTS).parts if path.resolve().is_relative_to(TESTS) else ()
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


async def make_workspace(root: Path, *names: str) -> list[Node]:
    """A workspace created on the first node (user `alice`) and one joined node per extra name,
    each with its own home under `root`. Returned nodes are open; close them."""
    first = await Node.init(root / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    nodes = [first]
    for name in names:
        enrollment = await first.enrollment.invite(f"{name}-node", name, kdf=FAST)
        nodes.append(await Node.join(root / name, enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST))
    return nodes


async def revocation_on_stick(admin: Node, revoked: Node, root: Path) -> Path:
    """`admin` revokes `revoked` ("stolen") and writes the bundles that carry the news into a
    stick folder under `root`; returns the stick."""
    stick = root / "stick"
    stick.mkdir(exist_ok=True)
    await admin.directory.revoke(revoked.identity.node_key, "stolen")
    await export_bundles(admin, stick)
    return stick


async def sync_all(source: Node, target: Node) -> int:
    """Sends everything `source` has that `target` lacks; returns the changes applied."""
    applied = 0
    for doc_id in sorted(await source.replica.document_ids(), key=_doc_order):
        have = await target.replica.document_heads(doc_id) if doc_id in await target.replica.document_ids() else []
        result = await target.intake.import_changes(doc_id, await source.replica.changes_for(doc_id, have), source.identity.node_id)
        applied += result.applied
    return applied


def _doc_order(doc_id: str) -> tuple[int, str]:
    """Directory first, then channel heads, then segments: what a bundle does too."""
    return (0 if doc_id == "directory" else 1 if doc_id.endswith("/head") else 2, doc_id)


@pytest.fixture
async def alice(tmp_path: Path) -> AsyncIterator[Node]:
    node = await Node.init(tmp_path / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    async with node:
        yield node


def run_cli(home: Path, *args: str, passphrase: str | None = PASSPHRASE, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command, env = cli_command(home, passphrase)
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, input=stdin, timeout=timeout, cwd=REPO)


def start_cli(home: Path, *args: str, passphrase: str | None = PASSPHRASE) -> subprocess.Popen[str]:
    """`rallypoint ARGS` running in the background (stdin closed), for a test that kills it or
    watches it; the caller waits for it."""
    command, env = cli_command(home, passphrase)
    return subprocess.Popen([*command, *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def cli_command(home: Path, passphrase: str | None = PASSPHRASE) -> tuple[list[str], dict[str, str]]:
    """The `rallypoint` command of this checkout and its environment, for `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RALLYPOINT_")}
    env["RALLYPOINT_HOME"] = str(home)
    if passphrase is not None:
        env["RALLYPOINT_PASSPHRASE"] = passphrase
    executable = shutil.which("rallypoint", path=str(Path(sys.executable).parent))
    return ([executable] if executable else [sys.executable, "-m", "tui.cli"]), env


def node_db_key(home: Path, passphrase: str = PASSPHRASE) -> bytes:
    """The key a node's database is encrypted under (node.key unsealed with the passphrase)."""
    from appliance import atrest, keystore

    return atrest.database_key(keystore.unseal(keystore.read_key_file(keystore.key_path(home)), passphrase))


def connect_node_db(db: Path, passphrase: str = PASSPHRASE, **kwargs: object) -> Any:
    """A DB-API connection to the node database file `db` (its home's node.key unsealed): what
    `sqlite3.connect` was for a store before encryption, for tests that look into the file."""
    from appliance import cipher

    return cipher.Keyed(str(db), node_db_key(db.parent, passphrase)).connect(**kwargs)


def node_store(home: Path, passphrase: str = PASSPHRASE) -> Any:
    """`Store.at(home)` keyed as the node opens it."""
    from appliance.store import Store

    return Store.at(home, node_db_key(home, passphrase))


def node_engine(db: Path, passphrase: str = PASSPHRASE) -> Any:
    """A synchronous SQLAlchemy engine on the node database file `db`, keyed."""
    from sqlalchemy import create_engine

    from appliance import cipher

    return create_engine("sqlite://", module=cipher.DRIVER, creator=cipher.Keyed(str(db), node_db_key(db.parent, passphrase)).sync_creator())


def store_at_revision(db: Path, revision: str) -> None:
    """The node database file `db` as the release at `revision` left it: later migrations
    undone (the node upgrades it again as it opens)."""
    from alembic import command
    from alembic.config import Config

    from appliance.store import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with node_engine(db).begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


@contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `where` (made if missing) with mount `options` - a small stick, a full
    or write-protected disk -, unmounted afterwards. Skips the test where mounting is refused."""
    where.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"needs root to mount a small tmpfs disk (a stick, a full or read-only disk): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], capture_output=True, timeout=30)
