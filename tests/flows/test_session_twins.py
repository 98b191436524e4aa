"""The LAN session's behaviour on the in-memory twins (`sync.twins`): the same `Session` and
`SessionTable` that `sync.lan` runs over sockets and a store, here over queue channels and
in-memory replicas that verify every change - milliseconds a test."""

from __future__ import annotations

import ast
import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable

import pytest

from appliance import certs, crypto, documents
from sync.events import Received, SessionDown, SessionUp
from sync.memory_replica import Workspace
from sync.session import BLOB_PART_BYTES, SessionTiming
from sync.twins import TwinNode, time_ms, twin_nodes
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(30)

CHANNEL = "0123456789abcdef0123"
SEGMENT = documents.segment_doc_id(CHANNEL, 0)


async def eventually(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


@pytest.fixture
async def three() -> AsyncIterator[tuple[Workspace, list[TwinNode]]]:
    workspace, nodes = await twin_nodes(3)
    try:
        yield workspace, nodes
    finally:
        for node in nodes:
            await node.aclose()


async def test_heads_then_exactly_the_delta_then_acknowledged(three: tuple[Workspace, list[TwinNode]]) -> None:
    workspace, (alpha, bravo, _) = three
    for i in range(5):
        alpha.replica.post(SEGMENT, workspace.admin, f"before {i}")
    bravo.replica.post(SEGMENT, workspace.admin, "bravo's own")
    started = time.monotonic()
    alpha.connect(bravo)
    await eventually(lambda: len(bravo.replica.texts(SEGMENT)) == 6 and len(alpha.replica.texts(SEGMENT)) == 6, "both sides have all six")
    assert sorted(alpha.replica.texts(SEGMENT)) == sorted(bravo.replica.texts(SEGMENT))
    # Each acknowledged what it got: nothing is left to send either way, by LAN or by bundle.
    await eventually(lambda: alpha.sessions.with_node(bravo.node_id) is not None and alpha.sessions.with_node(bravo.node_id).info().received_changes == 1, "alpha received one change")  # type: ignore[union-attr]
    for sender, receiver in ((alpha, bravo), (bravo, alpha)):
        await asyncio.wait_for(_until_nothing_lacking(sender, receiver), 5)
    assert [type(e) for e in alpha.host.events[:1]] == [SessionUp]
    assert sum(e.changes for e in bravo.host.events if isinstance(e, Received)) == 5  # each change crossed once
    assert time.monotonic() - started < 2


async def _until_nothing_lacking(sender: TwinNode, receiver: TwinNode) -> None:
    while await sender.replica.documents_lacking(receiver.node_key):
        await asyncio.sleep(0.01)


async def test_a_change_made_during_the_session_is_pushed_at_once(three: tuple[Workspace, list[TwinNode]]) -> None:
    workspace, (alpha, bravo, _) = three
    alpha.connect(bravo)
    await eventually(lambda: any(isinstance(e, SessionUp) for e in bravo.host.events), "the session")
    alpha.replica.post(SEGMENT, workspace.admin, "live")
    await eventually(lambda: bravo.replica.texts(SEGMENT) == ["live"], "the live post")


async def test_what_one_peer_sent_is_relayed_to_a_third(three: tuple[Workspace, list[TwinNode]]) -> None:
    """alpha - bravo - charlie in a line: alpha's post reaches charlie through bravo."""
    workspace, (alpha, bravo, charlie) = three
    alpha.connect(bravo)
    bravo.connect(charlie)
    await eventually(lambda: len(bravo.sessions.infos()) == 2, "both of bravo's sessions")
    alpha.replica.post(SEGMENT, workspace.admin, "over two hops")
    await eventually(lambda: charlie.replica.texts(SEGMENT) == ["over two hops"], "the relayed post")
    assert any(isinstance(e, Received) and e.node_id == bravo.node_id for e in charlie.host.events)


async def test_a_peer_revoked_mid_session_gets_the_news_then_nothing(three: tuple[Workspace, list[TwinNode]]) -> None:
    workspace, (alpha, bravo, _) = three
    alpha_side, _ = alpha.connect(bravo)
    await eventually(lambda: any(isinstance(e, SessionUp) for e in bravo.host.events), "the session")
    revocation = certs.issue_revocation(workspace.admin, workspace=workspace.id, subject=bravo.node_key, reason="stolen", revoked_at=time_ms())
    alpha.replica.add_directory_entries(workspace.admin, [revocation])
    alpha.replica.post(SEGMENT, workspace.admin, "not for bravo")
    reason = await asyncio.wait_for(alpha_side, 5)
    assert reason is not None and "has been revoked" in reason
    await eventually(lambda: bravo.host.wiped, "bravo wiping itself")
    assert bravo.replica.locked_reason is not None
    assert any(isinstance(e, SessionDown) for e in alpha.host.events)
    # The post made after the revocation never reached bravo, and alpha offers it only the directory.
    assert not any(isinstance(e, Received) and CHANNEL in e.channels for e in bravo.host.events)
    assert set(await alpha.replica.heads_for(bravo.node_key)) == {documents.DIRECTORY_DOC}
    assert all(doc_id == documents.DIRECTORY_DOC for doc_id, _ in (await alpha.replica.delta_for([bravo.node_key])).documents)


async def test_a_peer_that_goes_silent_is_let_go() -> None:
    workspace, (alpha, bravo) = await twin_nodes(2, timing=SessionTiming(ping_interval_s=60, idle_timeout_s=0.1))
    try:
        alpha_side, bravo_side = alpha.connect(bravo)
        # Neither pings within the idle timeout: both give up on the other. Whichever notices
        # first says so; the other may see the connection close before its own timer fires.
        reasons = {await asyncio.wait_for(alpha_side, 5), await asyncio.wait_for(bravo_side, 5)}
        assert "the peer went silent" in reasons and reasons <= {"the peer went silent", "connection lost"}
    finally:
        await alpha.aclose()
        await bravo.aclose()


@pytest.mark.parametrize("module", ["session", "ports", "lan", "replica", "channel", "twins", "memory_replica"])
def test_the_lan_side_names_no_node_class_and_the_session_no_stream(module: str) -> None:
    """Sync reaches the node through its ports (and `LanNode`, a structural type), never the
    `Node` class or a private appliance module; the session sees frames, not a socket's streams."""
    tree = ast.parse((REPO / "sync" / f"{module}.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "appliance.node" not in imported
    assert not [name for name in imported if name.startswith("appliance.") and name.split(".")[1].startswith("_")]
    if module in ("session", "ports", "twins", "memory_replica"):
        names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)} | {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert not names & {"StreamReader", "StreamWriter", "socket", "open_connection"}


async def test_attachments_small_and_in_pieces_reach_a_peer_and_are_relayed(three: tuple[Workspace, list[TwinNode]]) -> None:
    workspace, (alpha, bravo, charlie) = three
    alpha.connect(bravo)
    bravo.connect(charlie)
    await eventually(lambda: len(bravo.sessions.infos()) == 2, "both of bravo's sessions")
    small, large = os.urandom(3_000), os.urandom(BLOB_PART_BYTES * 2 + 17)  # the large one goes in three pieces
    alpha.replica.post(SEGMENT, workspace.admin, "small", attachment=small)
    alpha.replica.post(SEGMENT, workspace.admin, "large", attachment=large)
    for node in (bravo, charlie):
        await eventually(lambda node=node: node.replica.blob(crypto.sha256(small)) == small and node.replica.blob(crypto.sha256(large)) == large, f"both blobs on {node.node_id}")  # type: ignore[misc]
    assert charlie.replica.texts(SEGMENT) == ["small", "large"]


async def test_a_segment_a_peer_lacks_travels_whole_is_acknowledged_and_relayed_whole(three: tuple[Workspace, list[TwinNode]]) -> None:
    """alpha - bravo - charlie in a line, neither holding alpha's segment: it crosses each hop
    as one compacted document (not change chunks), each receiver acknowledges it, and bravo
    relays it to charlie whole."""
    workspace, (alpha, bravo, charlie) = three
    for i in range(3):
        alpha.replica.post(SEGMENT, workspace.admin, f"whole {i}")
    delta = await alpha.replica.delta_for([bravo.node_key])
    assert [whole.doc_id for whole in delta.wholes] == [SEGMENT] and SEGMENT not in dict(delta.documents)
    alpha.connect(bravo)
    bravo.connect(charlie)
    await eventually(lambda: charlie.replica.texts(SEGMENT) == ["whole 0", "whole 1", "whole 2"], "the relayed segment")
    assert sum(e.changes for e in bravo.host.events if isinstance(e, Received)) == 3
    assert sum(e.changes for e in charlie.host.events if isinstance(e, Received) and e.node_id == bravo.node_id) == 3
    for sender, receiver in ((alpha, bravo), (bravo, charlie)):
        await asyncio.wait_for(_until_nothing_lacking(sender, receiver), 5)
    # Acknowledged: what follows in the segment goes as a change chunk, not the segment again.
    assert (await alpha.replica.delta_for([bravo.node_key])).wholes == ()
    alpha.replica.post(SEGMENT, workspace.admin, "after")
    await eventually(lambda: charlie.replica.texts(SEGMENT)[-1:] == ["after"], "the next post, relayed")
