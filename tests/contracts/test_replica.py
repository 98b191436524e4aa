"""The `Replica` port's acceptance suite, run by every implementation: the node's services
(`sync.replica.NodeReplica` over a real node and store) and the twin
(`sync.memory_replica.MemoryReplica`). In each world a trusted peer wrote changes the replica
under test lacks; the replica's own admin can write and revoke."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
import pytest
from automerge.core import ROOT, ScalarType

from appliance import audit, certs, crypto, documents, ids
from appliance.audit_feed import AuditCarry, FeedHead, FeedPart, TrailAck, restores_in
from appliance.changes import SignedChange, parse_change
from appliance.errors import ChangeRejected, MissingDependencies
from appliance.model import Carrier, Receipt, WholeSegment
from sync.memory_replica import MemoryReplica, whole_segment
from sync.ports import Replica
from sync.replica import NodeReplica
from sync.twins import twin_nodes
from tests.conftest import make_workspace, sync_all

pytestmark = pytest.mark.timeout(60)

CHANNEL = "0123456789abcdef0123"
SIDE_CHANNEL = "89abcdef0123456789ab"


@dataclass
class World:
    replica: Replica
    peer: bytes  # a trusted peer of the replica
    doc_id: str  # the document the peer wrote in
    batch: list[SignedChange]  # the peer's two new changes there, in order, which the replica lacks
    post: Callable[[str], Awaitable[None]]  # a local write on the replica
    revoke_peer: Callable[[], Awaitable[None]]
    whole: WholeSegment  # a segment the peer wrote and the replica lacks entirely, carried whole
    with_whole: list[tuple[str, list[SignedChange]]]  # what must come with it (its channel's head)
    trail: FeedPart  # the peer's own audit trail, signed by its node key
    restored: FeedPart  # the peer's trail as it went on after a restore from a backup of its first entry


def restored_branch(trail: FeedPart, signer: nacl.signing.SigningKey) -> FeedPart:
    """The peer restored from a backup holding its trail's first entry, then wrote one more."""
    branch = [trail.entries[0]]
    branch.append(audit.make_entry(branch[-1], trail.entries[-1].at + 5, "-", "restored", {"file": "b"}, signer))
    branch.append(audit.make_entry(branch[-1], trail.entries[-1].at + 6, "-", "bundle_exported", {"after": "restore"}, signer))
    return FeedPart(trail.origin, tuple(branch))


async def node_world(root: Path) -> AsyncIterator[World]:
    alpha, bravo = await make_workspace(root, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await sync_all(alpha, bravo)
        before = {doc_id: await bravo.replica.document_heads(doc_id) for doc_id in await bravo.replica.document_ids()}
        await bravo.chat.post("general", "first from bravo")
        await bravo.chat.post("general", "second from bravo")
        changed = [doc_id for doc_id in await bravo.replica.document_ids() if await bravo.replica.document_heads(doc_id) != before.get(doc_id)]
        assert len(changed) == 1
        batch = await bravo.replica.changes_for(changed[0], before.get(changed[0], []))

        async def post(text: str) -> None:
            await alpha.chat.post("general", text)

        async def revoke() -> None:
            await alpha.directory.revoke(bravo.identity.node_key, "stolen")

        # A channel only bravo has: its head travels as changes, its segment whole.
        await bravo.chat.create_channel("side")
        await bravo.chat.post("side", "only on bravo")
        fresh = [doc_id for doc_id in await bravo.replica.document_ids() if doc_id not in before]
        head = next(doc_id for doc_id in fresh if documents.parse_doc_id(doc_id).kind == documents.DocumentKind.HEAD)
        segment = next(doc_id for doc_id in fresh if documents.parse_doc_id(doc_id).kind == documents.DocumentKind.SEGMENT)
        whole = whole_segment(segment, await bravo.replica.changes_for(segment, []))
        assert whole is not None
        with_whole = [(head, await bravo.replica.changes_for(head, []))]
        trail = next(p for p in (await bravo.audit.feeds.carry_for(alpha.identity.node_key)).parts if p.origin == bravo.identity.node_key)
        restored = restored_branch(trail, bravo.identity.keys.node)
        yield World(NodeReplica(alpha), bravo.identity.node_key, changed[0], list(batch), post, revoke, whole, with_whole, trail, restored)


async def memory_world() -> AsyncIterator[World]:
    workspace, (alpha, bravo) = await twin_nodes(2)
    segment = documents.segment_doc_id(CHANNEL, 0)
    bravo.replica.post(segment, workspace.admin, "first from bravo")
    bravo.replica.post(segment, workspace.admin, "second from bravo")

    async def post(text: str) -> None:
        alpha.replica.post(segment, workspace.admin, text)

    async def revoke() -> None:
        revocation = certs.issue_revocation(workspace.admin, workspace=workspace.id, subject=bravo.node_key, reason="stolen", revoked_at=int(time.time() * 1000))
        alpha.replica.add_directory_entries(workspace.admin, [revocation])

    side = documents.segment_doc_id(SIDE_CHANNEL, 0)
    bravo.replica.post(side, workspace.admin, "only on bravo")
    whole = whole_segment(side, bravo.replica.changes_of(side))
    assert whole is not None
    entries: list[audit.AuditEntry] = []
    for seq in range(1, 4):
        entries.append(audit.make_entry(entries[-1] if entries else None, 1000 + seq, "-", "bundle_exported", {"n": seq}, workspace.nodes[1]))
    try:
        trail = FeedPart(bravo.node_key, tuple(entries))
        yield World(alpha.replica, bravo.node_key, segment, bravo.replica.changes_of(segment), post, revoke, whole, [], trail, restored_branch(trail, workspace.nodes[1]))
    finally:
        await alpha.aclose()
        await bravo.aclose()


PORT = Replica
IMPLEMENTATIONS = {"node": NodeReplica, "memory": MemoryReplica}


@pytest.fixture(params=list(IMPLEMENTATIONS))
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    made = node_world(tmp_path) if request.param == "node" else memory_world()
    yield await anext(made)
    with pytest.raises(StopAsyncIteration):
        await anext(made)


async def test_the_batch_is_what_the_peer_wrote(world: World) -> None:
    assert len(world.batch) == 2  # the premise of the other tests


async def test_import_is_idempotent(world: World) -> None:
    peer_id = ids.key_id(world.peer)
    first = await world.replica.import_batches([(world.doc_id, world.batch)], received_from=peer_id)
    heads = await world.replica.document_heads(world.doc_id)
    second = await world.replica.import_batches([(world.doc_id, world.batch)], received_from=peer_id)
    assert first.changes == 2 and second.changes == 0 and second.duplicates == 2
    assert await world.replica.document_heads(world.doc_id) == heads


async def test_import_is_all_or_nothing(world: World) -> None:
    heads = await world.replica.document_heads(world.doc_id)
    with pytest.raises(ChangeRejected):
        await world.replica.import_batches([(world.doc_id, world.batch), (documents.DIRECTORY_DOC, [SignedChange(os.urandom(120), None)])], received_from=ids.key_id(world.peer))
    assert await world.replica.document_heads(world.doc_id) == heads  # the good document was not kept either
    tampered = [world.batch[0], SignedChange(world.batch[1].data, bytes(64))]
    with pytest.raises(ChangeRejected):
        await world.replica.import_batches([(world.doc_id, tampered)], received_from=ids.key_id(world.peer))
    assert await world.replica.document_heads(world.doc_id) == heads


async def test_a_change_without_its_dependency_is_missing_dependencies(world: World) -> None:
    with pytest.raises(MissingDependencies):
        await world.replica.import_batches([(world.doc_id, world.batch[1:])], received_from=ids.key_id(world.peer))


async def test_the_senders_heads_in_a_receipt_are_an_acknowledgement(world: World) -> None:
    assert await world.replica.documents_lacking(world.peer) != []  # nothing acknowledged yet
    held = dict(await world.replica.heads_for(world.peer))
    held[world.doc_id] = (parse_change(world.batch[-1].data).hash,)  # the sender holds what it sent
    receipt = Receipt(source=Carrier.LAN, sender=world.peer, created_at=world.replica.now(), sender_heads=held)
    await world.replica.import_batches([(world.doc_id, world.batch)], received_from=ids.key_id(world.peer), receipt=receipt)
    assert await world.replica.documents_lacking(world.peer) == []


async def test_an_acknowledged_head_is_not_sent_again(world: World) -> None:
    await world.post("ours")
    delta = await world.replica.delta_for([world.peer])
    assert delta.change_count > 0
    await world.replica.record_peer_heads(world.peer, delta.heads)
    assert await world.replica.documents_lacking(world.peer) == []
    assert (await world.replica.delta_for([world.peer])).change_count == 0
    await world.post("newer")
    again = await world.replica.delta_for([world.peer])
    assert again.change_count == 1  # only the change made after the acknowledgement


async def test_a_revoked_peer_gets_only_the_directory(world: World) -> None:
    await world.post("ours")
    assert world.replica.trust_of(world.peer) == "trusted"
    await world.revoke_peer()
    assert world.replica.trust_of(world.peer) == "revoked"
    assert set(await world.replica.heads_for(world.peer)) == {documents.DIRECTORY_DOC}
    delta = await world.replica.delta_for([world.peer])
    assert [doc_id for doc_id, _ in delta.documents] == [documents.DIRECTORY_DOC]


async def test_trust_of_an_unknown_key(world: World) -> None:
    assert world.replica.trust_of(os.urandom(32)) == "unknown"


async def test_a_whole_segment_imports_once(world: World) -> None:
    peer_id = ids.key_id(world.peer)
    first = await world.replica.import_batches(world.with_whole, wholes=[world.whole], received_from=peer_id)
    loaded = documents.load_document(world.whole.data, bytes(48))
    assert first.changes >= len(loaded.get_changes([]))
    assert sorted(await world.replica.document_heads(world.whole.doc_id)) == sorted(loaded.get_heads())
    second = await world.replica.import_batches(world.with_whole, wholes=[world.whole], received_from=peer_id)
    assert second.changes == 0 and second.duplicates == first.changes
    assert sorted(await world.replica.document_heads(world.whole.doc_id)) == sorted(loaded.get_heads())


async def test_a_change_slipped_in_under_another_actor_is_refused(world: World) -> None:
    """Whoever assembles a whole segment can add a change under an author's actor id, but cannot
    sign it as that author: the author's signature covers exactly its changes 1..n."""
    doc = documents.load_document(world.whole.data, bytes(48))
    victim = parse_change(doc.get_changes([])[-1].bytes).actor
    doc.set_actor(victim)
    with doc.transaction() as tx:
        tx.put(ROOT, "slipped", ScalarType.Str, "not written by the author")
    slipped = WholeSegment(world.whole.doc_id, doc.save(), world.whole.signatures)
    with pytest.raises(ChangeRejected):
        await world.replica.import_batches(world.with_whole, wholes=[slipped], received_from=ids.key_id(world.peer))
    assert await world.replica.document_heads(world.whole.doc_id) == []


async def test_a_bad_whole_segment_leaves_nothing(world: World) -> None:
    heads = await world.replica.document_heads(world.doc_id)
    # The same document under another segment's id: its author signed it for the first id only.
    elsewhere = WholeSegment(documents.segment_doc_id(SIDE_CHANNEL, 7), world.whole.data, world.whole.signatures)
    with pytest.raises(ChangeRejected):
        await world.replica.import_batches([*world.with_whole, (world.doc_id, world.batch)], wholes=[world.whole, elsewhere], received_from=ids.key_id(world.peer))
    assert await world.replica.document_heads(world.doc_id) == heads
    assert await world.replica.document_heads(world.whole.doc_id) == []
    unsigned = WholeSegment(world.whole.doc_id, world.whole.data, ())
    with pytest.raises(ChangeRejected):
        await world.replica.import_batches(world.with_whole, wholes=[unsigned], received_from=ids.key_id(world.peer))
    assert await world.replica.document_heads(world.whole.doc_id) == []


def acked(part: FeedPart) -> TrailAck:
    return TrailAck(FeedHead(part.entries[-1].seq, part.entries[-1].hash), restores_in(part.entries))


async def test_a_peers_audit_trail_is_stored_once_and_acknowledged(world: World) -> None:
    count = len(world.trail.entries)
    assert count >= 2
    assert await world.replica.import_audit(world.peer, AuditCarry({world.peer: acked(world.trail)}, (world.trail,))) == count
    assert await world.replica.import_audit(world.peer, AuditCarry({}, (world.trail,))) == 0  # held: skipped
    # The peer serves no admin: it is told how far its own trail is held here, and sent none.
    assert await world.replica.audit_for(world.peer, max_bytes=1 << 20) == AuditCarry({world.peer: acked(world.trail)})


async def test_a_peers_trail_after_a_restore_supersedes_the_history_it_lost(world: World) -> None:
    assert await world.replica.import_audit(world.peer, AuditCarry({}, (world.trail,))) == len(world.trail.entries)
    assert await world.replica.import_audit(world.peer, AuditCarry({}, (world.restored,))) == 2
    assert (await world.replica.audit_for(world.peer, max_bytes=1 << 20)).held[world.peer] == acked(world.restored)
    # The lost history, relayed again, does not win it back.
    assert await world.replica.import_audit(world.peer, AuditCarry({}, (world.trail,))) == 0
    assert (await world.replica.audit_for(world.peer, max_bytes=1 << 20)).held[world.peer] == acked(world.restored)


async def test_a_forged_gapped_or_unknown_trail_is_refused_and_nothing_stored(world: World) -> None:
    entries = list(world.trail.entries)
    stranger = crypto.new_signing_key(bytes(32))
    forged = audit.make_entry(entries[0], entries[1].at, entries[1].actor, "user_added", {"user": "mallory"}, stranger)
    unknown = FeedPart(bytes(stranger.verify_key), (audit.make_entry(None, 1, "-", "init", {}, stranger),))
    for part in (FeedPart(world.peer, (entries[0], forged, *entries[2:])), unknown):
        with pytest.raises(ChangeRejected):
            await world.replica.import_audit(world.peer, AuditCarry({}, (world.trail, part) if part is unknown else (part,)))
    # A gap is what a receiver restored from a backup meets: that part is skipped, not refused.
    assert await world.replica.import_audit(world.peer, AuditCarry({}, (FeedPart(world.peer, tuple(entries[1:])),))) == 0
    after = await world.replica.audit_for(world.peer, max_bytes=1 << 20)
    assert after.parts == () and all(ack.head.seq == 0 for ack in after.held.values())  # nothing of it was kept
    assert await world.replica.import_audit(world.peer, AuditCarry({}, (world.trail,))) == len(entries)
