"""Channel roles and membership (issue 16 point 4): channel admins run their channel, the
rules hold again on import (a head change by a non-admin from elsewhere is refused, audited,
changes nothing; posts into a read-only channel by non-admins are withheld), removal stops
routing, and same-named channels made apart are both kept and named apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import documents
from appliance.errors import ChangeRejected, HeadChangeRefused, InvalidInput, NotFound, PermissionDenied
from appliance.node import Node
from appliance.services.heads import AmbiguousChannel
from sync.sneakernet import export_bundles, import_bundles
from tests.conftest import make_workspace, sync_all


async def actions(node: Node) -> list[str]:
    return [entry.action for entry in await node.audit.entries()]


async def texts(node: Node, channel: str) -> list[str]:
    return [m.text for m in await node.views.read(channel, limit=1000, mark_read=False)]


async def meet(first: Node, *others: Node) -> None:
    """Every node learns the workspace's users from the first."""
    for other in others:
        await sync_all(first, other)


def node_key(node: Node) -> bytes:
    return node.identity.signing_key.verify_key.encode()


async def test_channel_admins_run_their_channel_and_every_step_is_audited(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    async with alice, bob, carol:
        await meet(alice, bob, carol)
        await bob.chat.create_channel("ops", private=True)  # bob, a plain user, is its channel admin
        await bob.chat.admin.add_member("ops", "carol")
        await sync_all(bob, alice)
        await sync_all(bob, carol)
        with pytest.raises(PermissionDenied, match="channel admin"):
            await carol.chat.admin.rename("ops", "carols")
        assert "permission_denied" in await actions(carol)
        await bob.chat.admin.set_channel_admin("ops", "carol", True)
        await sync_all(bob, carol)
        await carol.chat.admin.rename("ops", "operations")
        await carol.chat.admin.set_purpose("operations", "the night shift")
        await carol.chat.admin.set_read_only("operations", True)
        await carol.chat.admin.set_archived("operations", True)
        await sync_all(carol, bob)
        (summary,) = [c for c in await bob.views.list_channels() if c.channel_id == (await bob.views.list_channels())[0].channel_id]
        assert (summary.name, summary.purpose, summary.read_only, summary.archived) == ("operations", "the night shift", True, True)
        assert summary.admins == ("bob", "carol")
        with pytest.raises(PermissionDenied, match="archived"):
            await bob.chat.post("operations", "too late")
        await bob.chat.admin.set_archived("operations", False)
        await bob.chat.admin.set_channel_admin("operations", "carol", False)
        await bob.chat.admin.remove_member("operations", "carol")
        # A workspace admin runs any channel, without being in it.
        await sync_all(bob, alice)
        await alice.chat.admin.set_read_only("operations", False)
        assert [a for a in await actions(carol) if a.startswith("channel_")] == ["channel_renamed", "channel_purpose_set", "channel_read_only_set", "channel_archived"]
        assert [a for a in await actions(bob) if a.startswith(("channel_", "member_"))] == [
            "channel_created", "member_added", "channel_admin_granted", "channel_unarchived", "channel_admin_revoked", "member_removed"
        ]  # fmt: skip
        entry = [e for e in await bob.audit.entries() if e.action == "member_removed"][-1]
        assert entry.detail["user"] == "carol" and entry.detail["channel"] == "operations"
        assert (await alice.audit.verify()).ok


async def test_the_last_channel_admin_stays_until_another_is_named(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await meet(alice, bob)
        await bob.chat.create_channel("ops", private=True)
        with pytest.raises(InvalidInput, match="only channel admin"):
            await bob.chat.admin.set_channel_admin("ops", "bob", False)


async def test_a_membership_change_by_a_non_admin_arriving_by_bundle_is_refused_audited_and_changes_nothing(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    stick = tmp_path / "stick"
    stick.mkdir()
    async with alice, bob, carol:
        await meet(alice, bob, carol)
        await alice.chat.create_channel("ops", private=True)
        await alice.chat.add_member("ops", "bob")
        await sync_all(alice, bob)
        head = await bob.views.list_channels()
        doc_id = documents.head_doc_id(head[0].channel_id)
        # Bob writes on his own node, bypassing the local check: he signs what he writes.
        carol_key = carol.identity.whoami().user_key.hex()
        await bob.replica.commit_local(doc_id, lambda doc: documents.set_member(doc, carol_key, documents.ChannelRole.MEMBER))
        await export_bundles(bob, stick)
        report = await import_bundles(alice, stick)
        (outcome,) = [f for f in report.files if f.rejected]
        assert "bob is not a channel admin of #ops and cannot change its members" in outcome.reason
        (summary,) = [c for c in await alice.views.list_channels() if c.name == "ops"]
        assert summary.members == ("alice", "bob")
        refused = [e for e in await alice.audit.entries() if e.action == "head_change_refused"]
        assert len(refused) == 1 and refused[0].detail["channel"] == "ops" and refused[0].detail["author"] == bob.identity.whoami().user_key.hex()
        assert doc_id in await alice.replica.document_ids() and len(await alice.replica.changes_for(doc_id, [])) == 2  # creation, bob added


async def test_a_non_admin_cannot_rename_or_promote_himself_through_sync(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await meet(alice, bob)
        await alice.chat.create_channel("general")
        await sync_all(alice, bob)
        (summary,) = await bob.views.list_channels()
        doc_id = documents.head_doc_id(summary.channel_id)
        bob_key = bob.identity.whoami().user_key.hex()
        await bob.replica.commit_local(doc_id, lambda doc: documents.set_member(doc, bob_key, documents.ChannelRole.ADMIN))
        await bob.replica.commit_local(doc_id, lambda doc: documents.set_head_field(doc, documents.HeadField.NAME, "bobs"))
        with pytest.raises(HeadChangeRefused, match="bob is not a channel admin of #general"):
            await sync_all(bob, alice)
        assert [c.name for c in await alice.views.list_channels()] == ["general"]


async def test_a_concurrent_demotion_outranks_the_demoted_admins_changes(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await meet(alice, bob)
        await alice.chat.create_channel("ops", private=True)
        await alice.chat.admin.set_channel_admin("ops", "bob", True)
        await sync_all(alice, bob)
        await alice.chat.admin.set_channel_admin("ops", "bob", False)  # while apart
        await bob.chat.admin.rename("ops", "bobs")
        with pytest.raises(HeadChangeRefused, match="no longer a channel admin"):
            await sync_all(bob, alice)
        assert [c.name for c in await alice.views.list_channels()] == ["ops"]


async def test_a_member_may_leave_but_not_take_others_with_him(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await meet(alice, bob)
        await alice.chat.create_channel("ops", private=True)
        await alice.chat.add_member("ops", "bob")
        await sync_all(alice, bob)
        (summary,) = await bob.views.list_channels()
        doc_id = documents.head_doc_id(summary.channel_id)
        bob_key = bob.identity.whoami().user_key.hex()
        await bob.replica.commit_local(doc_id, lambda doc: documents.set_member(doc, bob_key, documents.ChannelRole.REMOVED))
        await sync_all(bob, alice)
        (summary,) = await alice.views.list_channels()
        assert summary.members == ("alice",)


async def test_removing_a_member_stops_routing_new_changes_to_their_node(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    stick = tmp_path / "stick"
    stick.mkdir()
    async with alice, bob, carol:
        await alice.chat.create_channel("ops", private=True)
        await alice.chat.add_member("ops", "bob")
        await alice.chat.add_member("ops", "carol")
        await alice.chat.post("ops", "before")
        await export_bundles(alice, stick)
        await import_bundles(bob, stick)
        await import_bundles(carol, stick)
        await export_bundles(bob, stick)
        await export_bundles(carol, stick)
        await import_bundles(alice, stick)  # their acknowledgements
        assert await texts(bob, "ops") == ["before"]

        await alice.chat.admin.remove_member("ops", "bob")
        await alice.chat.post("ops", "after bob left")
        channel_id = (await alice.views.list_channels())[0].channel_id
        to_bob = await alice.exchange.delta_for([node_key(bob)])
        to_carol = await alice.exchange.delta_for([node_key(carol)])
        # Bob's node gets the head (the news that he is out) and nothing else of the channel.
        assert [d.doc_id for d in to_bob.documents if d.doc_id.startswith(channel_id)] == [documents.head_doc_id(channel_id)]
        assert not [w for w in to_bob.wholes if w.doc_id.startswith(channel_id)]
        assert any(d.doc_id.startswith(f"{channel_id}/seg/") for d in to_carol.documents)

        await export_bundles(alice, stick)
        await import_bundles(bob, stick)
        await import_bundles(carol, stick)
        assert await texts(carol, "ops") == ["before", "after bob left"]
        # Bob's node keeps what it had, but shows it to him no more.
        with pytest.raises(NotFound):
            await bob.views.read("ops")
        assert "ops" not in [c.name for c in await bob.views.list_channels()]
        with pytest.raises(NotFound):
            await bob.chat.post("ops", "still here?")


async def test_a_read_only_channel_takes_posts_from_its_admins_and_reactions_from_all(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await meet(alice, bob)
        await alice.chat.create_channel("news")
        early = await alice.chat.post("news", "old news")
        await sync_all(alice, bob)
        await bob.chat.post("news", "a member's post, before it turned read-only")
        await sync_all(bob, alice)
        await alice.chat.admin.set_read_only("news", True)
        announcement = await alice.chat.post("news", "announcement")
        await sync_all(alice, bob)
        with pytest.raises(PermissionDenied, match="read-only"):
            await bob.chat.post("news", "me too")
        with pytest.raises(PermissionDenied, match="read-only"):
            await bob.chat.post("news", "a reply", reply_to=announcement)
        assert "permission_denied" in await actions(bob)
        await bob.chat.react(announcement, "👍")
        await bob.chat.react(early, "👀")
        await sync_all(bob, alice)
        shown = await alice.views.read("news")
        assert [m.text for m in shown] == ["old news", "a member's post, before it turned read-only", "announcement"]
        assert shown[2].reactions == {"👍": ["bob"]}


async def test_a_post_by_a_non_admin_into_a_read_only_channel_from_elsewhere_is_withheld_and_audited(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await meet(alice, bob)
        await alice.chat.create_channel("news")
        await sync_all(alice, bob)
        await alice.chat.admin.set_read_only("news", True)
        await bob.chat.post("news", "written before bob heard it is read-only")
        await sync_all(bob, alice)
        assert await texts(alice, "news") == []
        assert [m.text for m in await alice.views.search("heard")] == []
        withheld = [e for e in await alice.audit.entries() if e.action == "posts_withheld"]
        assert len(withheld) == 1 and withheld[0].detail["authors"] == ["bob"] and withheld[0].detail["channel"] == "news"
        # Bob's node, where he wrote it before it knew, still shows it to him: it judges what
        # arrives, and his post did not arrive there.
        await sync_all(alice, bob)
        assert await texts(bob, "news") == ["written before bob heard it is read-only"]


async def test_two_channels_made_apart_with_one_name_are_both_kept_and_named_apart(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await sync_all(alice, bob)
        ours = await alice.chat.create_channel("ops")
        theirs = await bob.chat.create_channel("ops")
        await alice.chat.post("ops", "from alpha")
        await bob.chat.post("ops", "from bravo")
        await sync_all(alice, bob)
        await sync_all(bob, alice)
        for node in (alice, bob):
            listed = sorted((c.label, c.channel_id) for c in await node.views.list_channels())
            assert listed == sorted([(f"#ops (alice, {ours.channel_id[:4]})", ours.channel_id), (f"#ops (bob, {theirs.channel_id[:4]})", theirs.channel_id)])
            with pytest.raises(AmbiguousChannel) as refused:
                await node.views.read("ops")
            assert f"#ops~{ours.channel_id[:4]}" in str(refused.value) and f"#ops~{theirs.channel_id[:4]}" in str(refused.value)
            with pytest.raises(AmbiguousChannel):
                await node.chat.post("ops", "where does this go?")
            assert await texts(node, f"ops~{ours.channel_id[:4]}") == ["from alpha"]
            assert await texts(node, theirs.channel_id) == ["from bravo"]
        await bob.chat.admin.rename(f"ops~{theirs.channel_id[:4]}", "ops-bravo")
        await sync_all(bob, alice)
        assert await texts(alice, "ops") == ["from alpha"]
        assert await texts(alice, "ops-bravo") == ["from bravo"]
        assert sorted(c.label for c in await alice.views.list_channels()) == ["#ops", "#ops-bravo"]


async def test_a_second_creation_of_a_channel_id_is_refused(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await sync_all(alice, bob)
        summary = await alice.chat.create_channel("ops", private=True)
        doc_id = documents.head_doc_id(summary.channel_id)
        bob_key = bob.identity.whoami().user_key.hex()
        # Bob makes the same channel id on his own node, with himself as its creator.
        await bob.replica.commit_local(
            doc_id, lambda doc: documents.create_head(doc, name="ops", purpose="", kind=documents.ChannelKind.PRIVATE, created_by=bob_key, created_at=1)
        )
        with pytest.raises(ChangeRejected, match="a second time"):
            await sync_all(bob, alice)
        assert [c.members for c in await alice.views.list_channels()] == [("alice",)]
