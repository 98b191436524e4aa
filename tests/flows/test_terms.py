"""Terms of service across nodes (issue 16 points 3 and 8): published on one node, carried by
bundle, enforced on another until its user accepts; the acceptance travels back and the admin
sees it with the node it was made on; forged terms and forged acceptances arriving by bundle are
refused, audited, and change nothing; a newer version must be accepted again."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from appliance import cbor, crypto, documents, terms
from appliance import schema as t
from appliance.errors import InvalidInput, PermissionDenied, TermsNotAccepted
from appliance.node import Node
from sync.sneakernet import export_bundles, import_bundles
from tests.conftest import FAST, PASSPHRASE, connect_node_db, make_workspace, store_at_revision

TEXT = "1. Be kind.\n2. Report lost sticks at once.\n"


def stick(tmp_path: Path) -> Path:
    root = tmp_path / "stick"
    root.mkdir(exist_ok=True)
    return root


async def carry(source: Node, target: Node, root: Path) -> None:
    """Everything `source` has for `target`, by bundle; every bundle accepted."""
    await export_bundles(source, root)
    report = await import_bundles(target, root)
    assert report.rejected == (), [f.reason for f in report.rejected]


async def entry_count(node: Node) -> int:
    async with node.store.reading() as conn:
        return int((await conn.execute(select(func.count()).select_from(t.directory_entries))).scalar_one())


async def test_terms_travel_bind_the_other_user_and_the_acceptance_travels_back(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.post("general", "before the terms")
        published = await alice.directory.terms.publish(1, "Acceptable use", TEXT)
        assert published.version == 1 and published.publisher == "alice"
        await alice.chat.post("general", "the publisher accepted by publishing")
        await carry(alice, bob, root)

        assert bob.directory.terms.pending() == published
        for refused in (
            bob.chat.post("general", "hello"),
            bob.views.read("general"),
            bob.views.search("terms"),
            bob.views.list_channels(),
            bob.chat.create_channel("bobs"),
        ):
            with pytest.raises(TermsNotAccepted) as caught:
                await refused
            assert "rallypoint terms show" in str(caught.value) and "rallypoint terms accept" in str(caught.value)
        message_id = (await alice.views.read("general"))[0].id
        for write in (bob.chat.react(message_id, "👍"), bob.chat.edit(message_id, "x"), bob.chat.delete(message_id)):
            with pytest.raises(TermsNotAccepted):
                await write

        with pytest.raises(InvalidInput, match="version 1, not 2"):
            await bob.directory.terms.accept(2)
        standing = await bob.directory.terms.accept(1)
        assert standing.current and standing.accepted_version == 1 and standing.node_name == "bob-node"
        assert bob.directory.terms.pending() is None
        assert [m.text for m in await bob.views.read("general")] == ["before the terms", "the publisher accepted by publishing"]
        await bob.chat.post("general", "accepted")
        (accepted,) = [e for e in await bob.audit.entries() if e.action == "terms_accepted"]
        assert accepted.detail["version"] == 1 and accepted.detail["node"] == bob.identity.node_id

        with pytest.raises(PermissionDenied):
            await bob.directory.terms.status()  # admins only

        await carry(bob, alice, root)
        rows = {s.user: s for s in await alice.directory.terms.status()}
        assert rows["bob"].current and rows["bob"].accepted_version == 1
        assert rows["bob"].node_name == "bob-node" and rows["bob"].node_id == bob.identity.node_id
        assert rows["bob"].accepted_at == standing.accepted_at
        assert rows["alice"].current and rows["alice"].node_name == "alpha"
        assert (await alice.views.read("general"))[-1].text == "accepted"


async def test_a_newer_version_must_be_accepted_again(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        assert alice.directory.terms.current() is None
        await alice.directory.terms.publish(1, "Acceptable use", TEXT)
        await carry(alice, bob, root)
        await bob.directory.terms.accept()
        await bob.views.read("general")
        await carry(bob, alice, root)
        with pytest.raises(InvalidInput, match="not newer"):
            await alice.directory.terms.publish(1, "Again", TEXT)
        await alice.directory.terms.publish(2, "Acceptable use, revised", TEXT + "3. Keep the stick dry.\n")
        await carry(alice, bob, root)
        assert bob.directory.terms.current() is not None and bob.directory.terms.current().version == 2  # type: ignore[union-attr]
        with pytest.raises(TermsNotAccepted, match="version 2"):
            await bob.views.read("general")
        rows = {s.user: s for s in await alice.directory.terms.status()}
        assert not rows["bob"].current and rows["bob"].accepted_version == 1  # until the acceptance of 2 arrives: still at 1
        assert rows["alice"].current and rows["alice"].accepted_version == 2
        await bob.directory.terms.accept(2)
        await bob.views.read("general")
        await carry(bob, alice, root)
        rows = {s.user: s for s in await alice.directory.terms.status()}
        assert rows["bob"].current and rows["bob"].accepted_version == 2


async def test_without_terms_nothing_changes_and_a_member_cannot_publish(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        await carry(alice, bob, root)
        await bob.chat.post("general", "no terms: as before")
        assert [m.text for m in await bob.views.read("general")] == ["no terms: as before"]
        with pytest.raises(PermissionDenied, match="terms publish needs the admin role"):
            await bob.directory.terms.publish(1, "Mine", TEXT)
        assert [e.detail for e in await bob.audit.entries() if e.action == "permission_denied"] == [{"action": "terms publish"}]
        with pytest.raises(Exception, match="no terms of service"):
            await bob.directory.terms.accept()


async def held_terms(node: Node) -> terms.Terms:
    """The one terms record in the node's directory document."""
    (entry,) = documents.directory_entries(await node.replica.document(documents.DIRECTORY_DOC), (terms.TERMS_PREFIX,))
    return terms.decode_terms(entry.data)


async def forge_into_directory(node: Node, key: str, data: bytes) -> None:
    """Writes an entry into the node's directory document as its user, past the services' checks
    (what a tampered node could send)."""

    def put(doc: documents.Document) -> None:
        with doc.transaction() as tx:
            tx.put(documents.ROOT, key, documents.Bytes, data)

    await node.replica.commit_local(documents.DIRECTORY_DOC, put)


async def refused_by(target: Node, source: Node, root: Path) -> str:
    """Carries `source`'s bundle to `target`, which must refuse it; returns the reason."""
    await export_bundles(source, root)
    report = await import_bundles(target, root)
    (rejected,) = report.rejected
    assert rejected.outcome == "ChangeRejected"
    (entry,) = [e for e in await target.audit.entries() if e.action == "bundle_rejected"]
    assert entry.detail["reason"] == rejected.reason
    return rejected.reason


async def test_terms_signed_by_a_member_are_refused_audited_and_change_nothing(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        await carry(alice, bob, root)
        await carry(bob, alice, root)  # alice knows what bob holds
        bob_key = bob.identity.keys.users[bob.identity.user_key]
        forged = terms.publish_terms(bob_key, workspace=bob.identity.workspace_key, version=7, title="Bob rules", text="obey bob", published_at=1)
        await forge_into_directory(bob, forged.key, forged.encoded)
        before = await entry_count(alice)
        reason = await refused_by(alice, bob, root)
        assert "terms version 7 signed by bob, who is not an admin" in reason
        assert alice.directory.terms.current() is None and await entry_count(alice) == before
        await alice.chat.post("general", "still free to post")


async def test_acceptances_forged_for_another_user_are_refused_audited_and_change_nothing(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    root = stick(tmp_path)
    async with alice, bob, carol:
        published = await alice.directory.terms.publish(1, "Acceptable use", TEXT)
        await carry(alice, bob, root)
        await carry(bob, alice, root)
        record = await held_terms(bob)
        assert record.version == published.version
        bob_key = bob.identity.keys.users[bob.identity.user_key]

        # Carol's name on a record Bob signed: the signature is not Carol's.
        body = cbor.encode(
            {"v": 1, "kind": "acceptance", "workspace": record.workspace, "terms": record.fingerprint, "version": 1, "user": carol.identity.user_key, "node": bob.identity.node_key, "accepted_at": 5}
        )
        signed_by_bob = cbor.encode([body, crypto.sign(bob_key, terms.ACCEPTANCE_DOMAIN + body)])
        with pytest.raises(terms.TermsInvalid, match="not signed by the user it names"):
            terms.decode_acceptance(signed_by_bob)
        await forge_into_directory(bob, f"accept:{crypto.sha256(signed_by_bob).hex()}", signed_by_bob)
        before = await entry_count(alice)
        reason = await refused_by(alice, bob, root)
        assert "not signed by the user it names" in reason
        assert await entry_count(alice) == before
        assert not {s.user: s for s in await alice.directory.terms.status()}["carol"].current


async def test_a_genuine_acceptance_written_by_someone_else_is_refused(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    root = stick(tmp_path)
    async with alice, bob, carol:
        await alice.directory.terms.publish(1, "Acceptable use", TEXT)
        await carry(alice, bob, root)
        await carry(bob, alice, root)
        record = await held_terms(bob)
        carol_key = carol.identity.keys.users[carol.identity.user_key]
        carols = terms.accept_terms(carol_key, terms=record, node=carol.identity.node_key, accepted_at=9)
        await forge_into_directory(bob, carols.key, carols.encoded)
        reason = await refused_by(alice, bob, root)
        assert "acceptance of the terms by carol written by bob: each user records only their own" in reason
        assert not {s.user: s for s in await alice.directory.terms.status()}["carol"].current


async def test_a_member_may_write_nothing_else_into_the_directory(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick(tmp_path)
    async with alice, bob:
        await alice.directory.terms.publish(1, "Acceptable use", TEXT)
        await carry(alice, bob, root)
        await carry(bob, alice, root)
        await forge_into_directory(bob, "note", b"bob was here")
        reason = await refused_by(alice, bob, root)
        assert "bob, who is not an admin" in reason


async def test_a_node_that_joins_later_gets_the_terms_and_every_acceptance(tmp_path: Path) -> None:
    """The directory an enrollment file carries holds a member's own acceptance change: the new
    node admits it, and binds its own user to the terms at once."""
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick(tmp_path)
    async with alice, bob:
        await alice.directory.terms.publish(1, "Acceptable use", TEXT)
        await carry(alice, bob, root)
        await bob.directory.terms.accept()
        await carry(bob, alice, root)
        enrollment = await alice.enrollment.invite("carol-node", "carol", kdf=FAST)
        carol = await Node.join(tmp_path / "carol", enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST)
        async with carol:
            assert carol.directory.terms.pending() is not None
            with pytest.raises(TermsNotAccepted):
                await carol.views.list_channels()
            await carol.directory.terms.accept(1)
            assert await carol.views.list_channels() == []
            await carry(carol, alice, root)
            assert all(s.current for s in await alice.directory.terms.status())


BEFORE_TERMS_MIGRATION = "0013"  # the revision migration 0014 upgrades from


async def test_an_upgraded_node_finds_the_terms_its_directory_already_held(tmp_path: Path) -> None:
    """Migration 0014: a node of an earlier release stored the directory changes that carried
    terms and acceptances but not their entries; upgrading adds them, so the terms bind there."""
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick(tmp_path)
    async with alice, bob:
        await alice.directory.terms.publish(1, "Acceptable use", TEXT)
        await carry(alice, bob, root)
        await bob.directory.terms.accept()
    store_at_revision(tmp_path / "bob" / "node.db", BEFORE_TERMS_MIGRATION)
    with connect_node_db(tmp_path / "bob" / "node.db") as conn:  # as the earlier release left it
        conn.execute("DELETE FROM directory_entries WHERE kind IN ('terms', 'acceptance')")
    async with await Node.open(tmp_path / "bob", PASSPHRASE) as bob:
        current = bob.directory.terms.current()
        assert current is not None and current.version == 1
        assert bob.directory.terms.pending() is None  # bob's own acceptance came back too
    store_at_revision(tmp_path / "bob" / "node.db", BEFORE_TERMS_MIGRATION)
    with connect_node_db(tmp_path / "bob" / "node.db") as conn:
        conn.execute("DELETE FROM directory_entries WHERE kind = 'acceptance'")
        conn.execute("DELETE FROM snapshots WHERE doc_id = 'directory'")  # from the change log alone
    async with await Node.open(tmp_path / "bob", PASSPHRASE) as bob:
        assert bob.directory.terms.pending() is None


async def test_an_acceptance_of_terms_the_directory_does_not_hold_is_refused(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick(tmp_path)
    async with alice, bob:
        await alice.directory.terms.publish(1, "Acceptable use", TEXT)
        await carry(alice, bob, root)
        await carry(bob, alice, root)
        bob_key = bob.identity.keys.users[bob.identity.user_key]
        elsewhere = terms.publish_terms(bob_key, workspace=bob.identity.workspace_key, version=5, title="Not published", text="x", published_at=1)
        own = terms.accept_terms(bob_key, terms=elsewhere, node=bob.identity.node_key, accepted_at=2)
        await forge_into_directory(bob, own.key, own.encoded)
        reason = await refused_by(alice, bob, root)
        assert "bob accepted terms version 5, which the directory does not hold" in reason
        assert not {s.user: s for s in await alice.directory.terms.status()}["bob"].current
