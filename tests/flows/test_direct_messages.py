"""Direct conversations (issue 16 point 5): one conversation however many nodes start it
apart, readable and writable by its participants only, routed only to their nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import direct, documents, segments
from appliance.errors import ChangeRejected, HeadChangeRefused, InvalidInput, NotFound
from appliance.node import Node
from tests.conftest import make_workspace, sync_all


def node_key(node: Node) -> bytes:
    return node.identity.signing_key.verify_key.encode()


def user_key(node: Node) -> bytes:
    return node.identity.whoami().user_key


async def texts(node: Node, channel: str) -> list[str]:
    return [m.text for m in await node.views.read(channel, limit=1000, mark_read=False)]


async def test_two_nodes_starting_one_conversation_apart_end_with_one(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await sync_all(alice, bob)
        ours = await alice.chat.admin.start_direct(["bob"])
        theirs = await bob.chat.admin.start_direct(["alice"])
        assert ours.channel_id == theirs.channel_id == direct.direct_channel_id([user_key(alice), user_key(bob)])
        await alice.chat.post("@bob", "hello from alpha")
        await bob.chat.post("@alice", "hello from bravo")
        await sync_all(alice, bob)
        await sync_all(bob, alice)
        for node, other in ((alice, "@bob"), (bob, "@alice")):
            (listed,) = [c for c in await node.views.list_channels() if c.is_direct]
            assert listed.label == other and listed.channel_id == ours.channel_id
            assert sorted(await texts(node, other)) == ["hello from alpha", "hello from bravo"]
            head = await node.replica.document(documents.head_doc_id(ours.channel_id))
            assert documents.read_head(head, ours.channel_id) == documents.read_head(head, ours.channel_id)
            assert len(head.get_changes([])) == 2  # both first changes, identical values: no hidden container


async def test_only_participants_read_and_their_nodes_alone_receive_it(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    async with alice, bob, carol:
        await sync_all(alice, bob)
        await sync_all(alice, carol)
        await bob.chat.admin.start_direct(["carol"])
        await bob.chat.post("@carol", "just us")
        channel_id = direct.direct_channel_id([user_key(bob), user_key(carol)])
        to_alice = await bob.exchange.delta_for([node_key(alice)])
        assert not [d for d in to_alice.documents if d.doc_id.startswith(channel_id)] and not [w for w in to_alice.wholes if w.doc_id.startswith(channel_id)]
        assert [d.doc_id for d in (await bob.exchange.delta_for([node_key(carol)])).documents if d.doc_id.startswith(channel_id)]
        await sync_all(bob, carol)
        assert await texts(carol, "@bob") == ["just us"]
        # Alice, a workspace admin, neither reads it (had it reached her node) nor names it.
        await sync_all(bob, alice)
        with pytest.raises(NotFound):
            await alice.views.read(channel_id)
        assert not [c for c in await alice.views.list_channels() if c.is_direct]
        with pytest.raises(NotFound):
            await alice.chat.post(channel_id, "admin barges in")
        with pytest.raises(InvalidInput, match="no channel admins"):
            await bob.chat.admin.rename("@carol", "renamed")


async def test_a_group_conversation_and_its_limits(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    async with alice, bob, carol:
        await sync_all(alice, bob)
        await sync_all(alice, carol)
        group = await alice.chat.admin.start_direct(["bob", "carol"])
        await alice.chat.post("@bob,carol", "all three")
        await sync_all(alice, bob)
        await sync_all(alice, carol)
        await carol.chat.post("@alice,bob", "carol answers")
        await sync_all(carol, bob)
        assert await texts(bob, "@carol,alice") == ["all three", "carol answers"]
        (listed,) = [c for c in await bob.views.list_channels() if c.is_direct]
        assert (listed.label, listed.channel_id, listed.members) == ("@alice,carol", group.channel_id, ("alice", "bob", "carol"))
        with pytest.raises(InvalidInput, match="2 to 8"):
            direct.direct_channel_id([bytes([i]) * 32 for i in range(9)])
        with pytest.raises(InvalidInput):
            await alice.chat.admin.start_direct([])


async def test_a_forged_participant_list_is_refused_and_audited(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    async with alice, bob, carol:
        await sync_all(alice, carol)
        real = direct.direct_channel_id([user_key(alice), user_key(bob)])
        # Carol writes a head under alice and bob's conversation id that names her in it.
        forged = direct.encode_participants([user_key(alice), user_key(bob), user_key(carol)])
        await carol.replica.commit_local(documents.head_doc_id(real), lambda doc: documents.create_direct_head(doc, forged))
        with pytest.raises(HeadChangeRefused, match="not those of its id"):
            await sync_all(carol, alice)
        assert "head_change_refused" in [e.action for e in await alice.audit.entries()]
        assert documents.head_doc_id(real) not in await alice.replica.document_ids()


async def test_a_stranger_cannot_write_into_a_conversation(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    async with alice, bob, carol:
        await sync_all(alice, bob)
        await sync_all(alice, carol)
        head = await alice.chat.admin.start_direct(["bob"])
        segment = documents.segment_doc_id(head.channel_id, 0)
        carol_hex = user_key(carol).hex()
        await carol.replica.commit_local(
            segment, lambda doc: segments.post_message(doc, message_id="01JDQ7Z0000000000000000101", author=carol_hex, created_at=1, text="let me in", root_id=None, files=[], mentions=[])
        )
        with pytest.raises(ChangeRejected, match="carol is not a participant"):
            await alice.intake.import_changes(segment, await carol.replica.changes_for(segment, []), carol.identity.node_id)
        assert await texts(alice, "@bob") == []
