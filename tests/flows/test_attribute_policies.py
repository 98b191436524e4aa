"""Attribute policies (issue 16 point 6), across three nodes: an admin assigns attributes in
users' certificates, a channel requires some, and its documents reach only nodes that serve a
user who has them - by bundle and in every delta; a user lacking them is not added and reads
nothing; changing a user's attributes is a new certificate that changes all of that; and
attributes issued by a non-admin are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import certs, documents
from appliance.audit_actions import AuditAction
from appliance.errors import AttributesRefused, ChangeRejected, InvalidInput, NotFound
from appliance.node import Node
from sync.sneakernet import export_bundles, import_bundles
from tests.conftest import make_workspace, sync_all

SECRET = (("clearance", "secret"),)


def node_key(node: Node) -> bytes:
    return node.identity.signing_key.verify_key.encode()


async def carried(admin: Node, to: Node, channel_id: str) -> list[str]:
    """The documents of a channel that a delta from `admin` to `to`'s node would carry."""
    delta = await admin.exchange.delta_for([node_key(to)])
    return sorted({d.doc_id for d in delta.documents if d.doc_id.startswith(channel_id)} | {w.doc_id for w in delta.wholes if w.doc_id.startswith(channel_id)})


async def courier(stick: Path, source: Node, *targets: Node) -> None:
    await export_bundles(source, stick)
    for target in targets:
        await import_bundles(target, stick)


async def test_a_channels_attribute_policy_keeps_its_documents_away_from_a_node_across_three_nodes(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    stick = tmp_path / "stick"
    stick.mkdir()
    async with alice, bob, carol:
        await alice.directory.set_attributes("alice", SECRET)
        await alice.directory.set_attributes("bob", SECRET + (("unit", "north"),))
        intel = await alice.chat.create_channel("intel")
        await alice.chat.admin.set_requirements("intel", SECRET)
        await alice.chat.post("intel", "briefing")
        await alice.chat.create_channel("general")
        await alice.chat.post("general", "for everyone")

        assert await carried(alice, carol, intel.channel_id) == []
        assert documents.head_doc_id(intel.channel_id) in await carried(alice, bob, intel.channel_id)
        await courier(stick, alice, bob, carol)
        assert [m.text for m in await bob.views.read("intel")] == ["briefing"]
        assert [m.text for m in await carol.views.read("general")] == ["for everyone"]
        assert not [d for d in await carol.replica.document_ids() if d.startswith(intel.channel_id)]  # never left alpha for charlie
        with pytest.raises(NotFound):
            await carol.views.read(intel.channel_id)
        assert [c.requires for c in await bob.views.list_channels() if c.name == "intel"] == [SECRET]

        # A private channel with the same requirement takes no member who lacks it.
        await alice.chat.create_channel("vault", private=True)
        await alice.chat.admin.set_requirements("vault", SECRET)
        with pytest.raises(InvalidInput, match="carol lacks the attributes #vault requires"):
            await alice.chat.admin.add_member("vault", "carol")
        await alice.chat.admin.add_member("vault", "bob")

        # Carol is cleared: a new certificate, and the channel reaches her node and her.
        await alice.directory.set_attributes("carol", SECRET)
        await courier(stick, alice, bob, carol)
        assert [m.text for m in await carol.views.read("intel")] == ["briefing"]
        # Bob loses his clearance: he reads it no more, and nothing new of it goes to bravo.
        await alice.directory.set_attributes("bob", (("unit", "north"),))
        await alice.chat.post("intel", "after bob's clearance ended")
        assert await carried(alice, bob, intel.channel_id) == []
        await courier(stick, alice, bob, carol)
        assert bob.directory.current.user_by_name("bob") is not None and bob.directory.current.user_by_name("bob").attributes == (("unit", "north"),)
        with pytest.raises(NotFound):
            await bob.views.read("intel")
        assert "intel" not in [c.name for c in await bob.views.list_channels()]
        assert [m.text for m in await carol.views.read("intel")] == ["briefing", "after bob's clearance ended"]
        actions = [e.action for e in await alice.audit.entries()]
        assert actions.count(AuditAction.ATTRIBUTES_SET) == 4 and AuditAction.CHANNEL_POLICY_SET in actions


async def test_a_post_by_a_user_lacking_the_attributes_is_refused_on_import(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.directory.set_attributes("alice", SECRET)
        await alice.directory.set_attributes("bob", SECRET)
        await alice.chat.create_channel("intel")
        await alice.chat.admin.set_requirements("intel", SECRET)
        await sync_all(alice, bob)
        await bob.chat.post("intel", "written while cleared")
        await alice.directory.set_attributes("bob", ())  # while apart
        with pytest.raises(ChangeRejected, match="bob lacks the attributes #intel requires"):
            await sync_all(bob, alice)
        assert [m.text for m in await alice.views.read("intel")] == []


async def test_a_role_change_keeps_a_users_attributes(tmp_path: Path) -> None:
    (alice,) = await make_workspace(tmp_path)
    async with alice:
        await alice.directory.add_user("dave")
        await alice.directory.set_attributes("dave", SECRET)
        await alice.directory.set_role("dave", "observer")
        (dave,) = [u for u in alice.directory.users() if u.name == "dave"]
        assert (dave.role, dave.attributes) == ("observer", SECRET)


async def test_attributes_issued_by_a_non_admin_are_refused_and_audited(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    async with alice, bob, carol:
        await sync_all(alice, bob)
        # Bob, a plain member, signs a certificate giving carol a clearance; alice's node writes
        # it into the directory without the checks its directory service makes.
        bob_key = bob.identity.whoami().user_key
        carol_cert = alice.directory.current.user_by_name("carol")
        assert carol_cert is not None
        forged = certs.issue_certificate(
            bob.identity.keys.users[bob_key], workspace=carol_cert.workspace, kind=certs.SubjectKind.USER, key=carol_cert.key, name="carol",
            role=certs.Role.MEMBER, issued_at=carol_cert.issued_at + 1, home=carol_cert.home, attributes=SECRET,
        )  # fmt: skip
        await alice.directory.add_entries([forged], AuditAction.USER_ADDED, {})
        with pytest.raises(AttributesRefused, match="carries attributes issued by .*who is not an admin"):
            await sync_all(alice, bob)
        refused = [e for e in await bob.audit.entries() if e.action == AuditAction.ATTRIBUTES_REFUSED]
        assert len(refused) == 1 and refused[0].detail["user"] == "carol"
        assert bob.directory.current.user_by_name("carol") is not None and bob.directory.current.user_by_name("carol").attributes == ()


async def test_attributes_set_by_an_admin_since_demoted_still_count(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    async with alice, bob, carol:
        await alice.directory.set_role("bob", "admin")
        await sync_all(alice, bob)
        await bob.directory.set_attributes("carol", SECRET)
        await sync_all(bob, alice)
        await alice.directory.set_role("bob", "member")
        await sync_all(alice, carol)  # both certificates arrive together
        cert = carol.directory.current.user_by_name("carol")
        assert cert is not None and cert.attributes == SECRET
        assert carol.directory.current.user_by_name("bob").role == "member"  # type: ignore[union-attr]
