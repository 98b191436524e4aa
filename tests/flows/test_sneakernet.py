"""Courier bundles end to end, in one process: deltas, routing, all-or-nothing and idempotent
import, quarantine, preview, size caps, blobs, revocation and remote wipe."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from appliance import crypto, documents
from appliance.changes import (
    SignedChange,
    parse_change,
    relay_units,
    sign_change,
    verify_batch,
)
from appliance.errors import NodeLocked, NotFound
from appliance.model import Delta
from appliance.node import Attachment, Node
from sync import packing, sneakernet, stick
from sync.bundle import build_bundle
from sync.defaults import DEFAULT_MAX_BYTES
from sync.errors import ExportRefused
from sync.memory_medium import MemoryMedium
from sync.sneakernet import export_bundles, import_bundles
from tests import format1_writer
from tests.conftest import FAST, PASSPHRASE, connect_node_db, make_workspace


def stick_dir(tmp_path: Path) -> Path:
    root = tmp_path / "stick"
    root.mkdir(exist_ok=True)
    return root


def bundle_files(root: Path) -> list[Path]:
    return sorted((root / stick.STICK_DIR).glob("*/*.rpb"))


async def texts(node: Node, channel: str) -> list[str]:
    return [m.text for m in await node.views.read(channel, limit=10_000, mark_read=False)]


async def test_a_bundle_brings_a_peer_exactly_what_it_lacks(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick_dir(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.post_many("general", [f"first {i}" for i in range(30)])
        first = await export_bundles(alice, root)
        assert first.changes == (await alice.exchange.delta_for([bob.identity.signing_key.verify_key.encode()])).change_count
        report = await import_bundles(bob, root)
        assert [f.outcome for f in report.files] == ["accepted"]
        assert await texts(bob, "general") == [f"first {i}" for i in range(30)]
        assert bundle_files(root) == []  # an imported bundle leaves the stick

        # Bob's answer acknowledges what he holds: Alice's next bundle carries only the new post.
        await export_bundles(bob, root)
        await import_bundles(alice, root)
        await alice.chat.post("general", "second")
        second = await export_bundles(alice, root)
        assert second.changes == 1
        await import_bundles(bob, root)
        assert (await texts(bob, "general"))[-1] == "second"


async def test_the_courier_runs_over_the_in_memory_medium(tmp_path: Path) -> None:
    """Export and import use only the Medium port: the in-memory twin carries a bundle, a
    rejected one is quarantined in memory, and no stick folder or quarantine folder appears."""
    alice, bob = await make_workspace(tmp_path, "bob")
    medium = MemoryMedium(tmp_path / "no-such-stick")
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.post_many("general", ["over", "memory"])
        exported = await export_bundles(alice, medium)
        (written,) = exported.bundles
        medium.place(stick.BUNDLES, stick.anonymous_file_name(bytes(16)), b"\x89RPBNDL\n\x02" + bytes(100))  # sorts first
        report = await import_bundles(bob, medium)
        assert [f.outcome for f in report.files] == ["Malformed", "accepted"]
        assert await texts(bob, "general") == ["over", "memory"]
        kept = report.files[0].quarantined
        assert kept is not None and medium.kept(kept.name)[1].startswith("Malformed: ")
        left = (await medium.scan([stick.BUNDLES], max_file_bytes=1 << 20)).files
        assert [f.name for f in left] == [stick.anonymous_file_name(bytes(16))]  # the junk stays: its stanzas cannot be read, it may be for others
        assert written.path.is_relative_to(tmp_path / "no-such-stick") and not (tmp_path / "no-such-stick").exists()
        assert not (bob.home / sneakernet.QUARANTINE_DIR).exists()


async def test_reimporting_in_any_order_changes_nothing(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick_dir(tmp_path)
    saved: list[tuple[str, bytes]] = []
    async with alice, bob:
        await alice.chat.create_channel("general")
        for round_ in range(3):
            await alice.chat.post_many("general", [f"round {round_} message {i}" for i in range(5)])
            await export_bundles(alice, root)
            saved.extend((p.parent.name + "/" + p.name, p.read_bytes()) for p in bundle_files(root))
        # Only the newest bundle survives on the stick (it supersedes the older ones): put all back, shuffled.
        for name, data in reversed(saved):
            (root / stick.STICK_DIR / name).write_bytes(data)
        first = await import_bundles(bob, root)
        assert len(first.files) == 3 and {f.outcome for f in first.files} <= {"accepted", "duplicate"}
        state = await texts(bob, "general")
        audit_before = len(await bob.audit.entries())
        for name, data in saved:
            (root / stick.STICK_DIR / name).write_bytes(data)
        again = await import_bundles(bob, root)
        assert {f.outcome for f in again.files} == {sneakernet.SEEN}
        assert await texts(bob, "general") == state
        assert len(await bob.audit.entries()) == audit_before
        assert len(state) == 15


async def test_a_deleted_message_stays_deleted_when_an_old_bundle_returns(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick_dir(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        message = await alice.chat.post("general", "regrettable")
        await export_bundles(alice, root)
        (old,) = bundle_files(root)
        old_bytes, old_name = old.read_bytes(), old.relative_to(root)
        await alice.chat.delete(message)
        await export_bundles(alice, root)
        await import_bundles(bob, root)
        (root / old_name).write_bytes(old_bytes)
        await import_bundles(bob, root)
        (view,) = await bob.views.read("general")
        assert view.deleted and view.text == ""


async def test_preview_changes_nothing_on_the_node_or_the_stick(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick_dir(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.post_many("general", ["one", "two", "three"])
        await export_bundles(alice, root)
        before = [(p, p.read_bytes()) for p in bundle_files(root)]
        audit_before = len(await bob.audit.entries())
        preview = await import_bundles(bob, root, preview=True)
        assert preview.preview and preview.changes_applied > 0
        (general,) = [c for c in preview.channels if c.name == "general"]
        assert general.new_messages == 3
        assert [(p, p.read_bytes()) for p in bundle_files(root)] == before
        assert len(await bob.audit.entries()) == audit_before
        assert [c.name for c in await bob.views.list_channels()] == []
        real = await import_bundles(bob, root)
        assert real.changes_applied == preview.changes_applied


async def test_tampered_bundles_are_quarantined_audited_and_store_nothing(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick_dir(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.post("general", "hello")
        await export_bundles(alice, root)
        (path,) = bundle_files(root)
        data = bytearray(path.read_bytes())
        data[-100] ^= 0x01
        path.write_bytes(bytes(data))
        report = await import_bundles(bob, root)
        (outcome,) = report.rejected
        assert outcome.outcome == "Tampered" and outcome.quarantined is not None
        assert outcome.quarantined.read_bytes() == bytes(data)
        assert "Tampered" in Path(str(outcome.quarantined) + ".reason.txt").read_text()
        assert bundle_files(root) == []
        assert await bob.views.list_channels() == []
        (entry,) = [e for e in await bob.audit.entries() if e.action == "bundle_rejected"]
        assert entry.detail["outcome"] == "Tampered"


async def test_truncated_bundle_is_rejected_as_truncated(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick_dir(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        await export_bundles(alice, root)
        (path,) = bundle_files(root)
        path.write_bytes(path.read_bytes()[:-500])
        (outcome,) = (await import_bundles(bob, root)).rejected
        assert outcome.outcome == "Truncated"


async def test_a_route_converges_and_private_channels_reach_only_their_members(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    root = stick_dir(tmp_path)
    async with alice, bob, carol:
        await alice.chat.create_channel("general")
        await alice.chat.create_channel("ops", private=True)
        await alice.chat.add_member("ops", "carol")
        await alice.chat.post("ops", "for carol only")
        await alice.chat.post("general", "from alice")
        await sneakernet.courier(alice, root)
        await sneakernet.courier(bob, root)
        await bob.chat.post("general", "from bob")
        await sneakernet.courier(bob, root)
        await sneakernet.courier(carol, root)
        await carol.chat.post("general", "from carol")
        await carol.chat.post("ops", "carol answers")
        await sneakernet.courier(carol, root)
        await sneakernet.courier(alice, root)
        await sneakernet.courier(bob, root)
        await sneakernet.courier(carol, root)
        await sneakernet.courier(alice, root)
        for node in (alice, bob, carol):
            assert sorted(await texts(node, "general")) == ["from alice", "from bob", "from carol"]
        assert await texts(carol, "ops") == ["for carol only", "carol answers"]
        assert await texts(alice, "ops") == ["for carol only", "carol answers"]
        ops_id = next(c.channel_id for c in await alice.views.list_channels() if c.name == "ops")
        assert not any(d.startswith(ops_id) for d in await bob.replica.document_ids())  # never sent to bob


async def test_max_bytes_splits_into_bundles_that_import_in_any_order(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick_dir(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        # Text that does not compress, in three segments: they travel whole, in more than one bundle.
        await alice.chat.post_many("general", [f"message number {i} " + os.urandom(40).hex() for i in range(1_200)])
        report = await export_bundles(alice, root, max_bytes=64 * 1024)
        assert len(report.bundles) >= 2
        assert all(b.size <= 64 * 1024 for b in report.bundles)
        files = bundle_files(root)
        # Rename so that the last part sorts first: the importer retries what lacks an earlier part.
        for index, path in enumerate(files):
            path.rename(path.with_name(stick.anonymous_file_name(bytes([255 - index]) + bytes(15))))
        result = await import_bundles(bob, root)
        assert {f.outcome for f in result.files} == {"accepted"}
        assert len(await texts(bob, "general")) == 1_200


async def test_max_bytes_holds_for_a_bundle_addressed_to_hundreds_of_nodes(tmp_path: Path) -> None:
    """Each recipient adds a stanza and a key in the inner header, and padding adds up to a
    sixteenth: the cap must account for them."""
    (alice,) = await make_workspace(tmp_path)
    async with alice:
        await alice.chat.create_channel("general")
        await alice.chat.post_many("general", [f"message {i} " + os.urandom(100).hex() for i in range(2_000)])  # four segments, whole
        recipients = [crypto.new_signing_key(i.to_bytes(2, "big") * 16).verify_key.encode() for i in range(1, 301)]
        delta = await alice.exchange.delta_for(recipients)
        max_bytes = 128 * 1024
        parts = sneakernet._split(delta, max_bytes, len(recipients))
        assert len(parts) > 2
        for content in parts:
            data = build_bundle(
                content, sender_key=alice.identity.signing_key, workspace=alice.directory.current.workspace, recipients=recipients,
                heads=sneakernet._header_heads(delta, content), created_at=0, incarnation=alice.identity.incarnation, randomness=bytes(32),
            )  # fmt: skip
            assert len(data) <= max_bytes


def test_a_document_that_fits_in_a_part_is_not_cut_one_that_does_not_is() -> None:
    def changes(count: int) -> tuple[SignedChange, ...]:
        return tuple(SignedChange(bytes(1_000), bytes(64)) for _ in range(count))

    delta = Delta(documents=(("c/seg/000002", changes(30)), ("c/seg/000001", changes(50)), ("c/seg/000000", changes(150))), blobs=(), heads={})
    parts = packing.pack_delta(delta, 64 * 1024)
    placed: dict[str, list[tuple[int, int]]] = {}
    for index, part in enumerate(parts):
        for doc_id, part_changes in part.docs:
            placed.setdefault(doc_id, []).append((index, len(part_changes)))
    # 30 and 50 would share a part only by cutting the 50: each starts a part and stays whole;
    # 150 cannot fit in one part, so it fills what is left and spans the next ones.
    assert placed["c/seg/000002"] == [(0, 30)] and placed["c/seg/000001"] == [(1, 50)]
    assert placed["c/seg/000000"][0][0] == 1 and len(placed["c/seg/000000"]) > 1
    assert sum(n for _, n in placed["c/seg/000000"]) == 150


async def test_directory_goes_first_and_a_new_nodes_bundles_are_accepted_after_it(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick_dir(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        await export_bundles(alice, root)
        await import_bundles(bob, root)
        enrollment = await alice.enrollment.invite("carol-node", "carol", kdf=FAST)
        carol = await Node.join(tmp_path / "carol", enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST)
        async with carol:
            await sneakernet.courier(carol, root)  # bob does not know carol yet ...
            await sneakernet.courier(alice, root)  # ... alice's bundle for bob carries carol's certificate
            report = await import_bundles(bob, root)
            assert not report.rejected, report.rejected
            assert carol.identity.node_id in {n.node_id for n in bob.directory.nodes()}


async def test_blobs_travel_once_and_only_to_peers_that_lack_them(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick_dir(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        payload = crypto.random_bytes(20_000)
        await alice.chat.post("general", "see file", attachments=[Attachment("map.bin", payload)])
        first = await export_bundles(alice, root)
        assert [b.blobs for b in first.bundles] == [1]
        await import_bundles(bob, root)
        (view,) = await bob.views.read("general")
        assert await bob.blobs.blob(view.files[0].hash) == payload
        again = await export_bundles(alice, root)  # bob has not acknowledged yet: repeated
        assert [b.blobs for b in again.bundles] == [1]
        await import_bundles(bob, root)
        await export_bundles(bob, root)
        await import_bundles(alice, root)  # bob's heads now cover the message: alice knows he has it
        await alice.chat.post("general", "no file here")
        third = await export_bundles(alice, root)
        assert [b.blobs for b in third.bundles] == [0]


async def test_revocation_travels_and_the_revoked_node_wipes_itself(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    root, late = stick_dir(tmp_path), tmp_path / "late-stick"
    late.mkdir()
    async with alice, bob, carol:
        await alice.chat.create_channel("general")
        await alice.chat.post("general", "zebra-before")
        for node in (alice, bob, carol, alice):
            await sneakernet.courier(node, root)
        bob_node = bob.identity.signing_key.verify_key.encode()
        await alice.directory.revoke(bob_node, "laptop stolen")
        await export_bundles(alice, root)
        await import_bundles(carol, root)  # carol learns of the revocation
        await bob.chat.post("general", "zebra-after")
        await export_bundles(bob, late, for_nodes=[carol.identity.node_id])  # bob has not heard yet
        report = await import_bundles(carol, late)
        assert [f.outcome for f in report.files] == ["RevokedSender"]
        assert "zebra-after" not in await texts(carol, "general")
        assert "bundle_rejected" in [e.action for e in await carol.audit.entries()]

        wipe = await import_bundles(bob, root)
        assert wipe.wiped
        assert bob.signin.result is None and not bob.identity.signed_in  # bob's keys left memory too
        with pytest.raises(NodeLocked):
            await bob.views.read("general")
        with pytest.raises(NodeLocked):
            await export_bundles(bob, root)
    files = b"".join(p.read_bytes() for p in (tmp_path / "bob").glob("node.db*"))
    assert b"zebra" not in files
    with connect_node_db(tmp_path / "bob" / "node.db") as db:  # users' keys went too, sealed or not
        assert [db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("user_secrets", "user_mfa", "recovery_codes")] == [0, 0, 0]
    with pytest.raises(NodeLocked, match="revoked"):
        await Node.open(tmp_path / "bob", PASSPHRASE)


async def test_a_revoked_authors_own_node_is_refused_but_earlier_relayed_posts_flow(tmp_path: Path) -> None:
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    root = stick_dir(tmp_path)
    async with alice, bob, carol:
        await alice.chat.create_channel("general")
        for node in (alice, bob, carol, alice, bob):
            await sneakernet.courier(node, root)
        await bob.chat.post("general", "bob, before")
        await export_bundles(bob, root, for_nodes=[alice.identity.node_id])
        await import_bundles(alice, root)  # alice accepts it: bob is still valid
        bob_user = next(u.key for u in alice.directory.users() if u.name == "bob")
        await alice.directory.revoke(bob_user, "left the team")
        await alice.chat.post("general", "alice, after")  # builds on bob's post
        await export_bundles(alice, root, for_nodes=[carol.identity.node_id])
        relayed = await import_bundles(carol, root)
        assert not relayed.rejected, relayed.rejected
        assert await texts(carol, "general") == ["bob, before", "alice, after"]

        await bob.chat.post("general", "bob, after")  # bob's node is not revoked, bob's user is
        await export_bundles(bob, root, for_nodes=[carol.identity.node_id])
        direct = await import_bundles(carol, root)
        (outcome,) = direct.rejected
        assert outcome.outcome == "ChangeRejected" and "revoked" in outcome.reason
        assert "bob, after" not in await texts(carol, "general")


async def test_hostile_stick_entries_are_reported_not_followed(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick_dir(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        await export_bundles(alice, root)
        outbox = root / stick.STICK_DIR / stick.BUNDLES
        (outbox / "evil.rpb").symlink_to(next(outbox.iterdir()))
        (outbox / "junk.txt").write_text("x")
        report = await import_bundles(bob, root)
        assert [f.outcome for f in report.files] == ["accepted"]
        assert len(report.problems) == 2


async def test_a_revoked_peer_gets_the_directory_only_and_unknown_peers_nothing(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick_dir(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.post("general", "secret plans")
        await alice.directory.revoke(bob.identity.signing_key.verify_key.encode(), "gone")
        delta = await alice.exchange.delta_for([bob.identity.signing_key.verify_key.encode()])
        assert [doc_id for doc_id, _ in delta.documents] == [documents.DIRECTORY_DOC]
        with pytest.raises(ExportRefused, match="revoked"):
            await export_bundles(alice, root, broadcast=True, for_nodes=[bob.identity.node_id])
        with pytest.raises(NotFound, match="no node"):
            await export_bundles(alice, root, for_nodes=["AAAAAAA-AAAAAAA-AAAAAAA"])


def test_one_signature_per_actor_run_is_enough() -> None:
    """The exporter drops all but each actor's last signature; the verifier accepts that."""
    key = crypto.new_signing_key(bytes(32))
    doc = documents.new_document(bytes(key.verify_key) + bytes(16))
    made = []
    for i in range(5):
        with doc.transaction() as tx:
            tx.put(documents.ROOT, f"k{i}", documents.Bytes, b"v")
        change = doc.get_last_local_change()
        assert change is not None
        made.append(SignedChange(change.raw_bytes, sign_change(key, "d", parse_change(change.raw_bytes).hash)))
    stripped = sneakernet._one_signature_per_actor(made)
    assert [c.signature is not None for c in stripped] == [False] * 4 + [True]
    assert len(verify_batch("d", stripped, set(), lambda author: None)) == 5
    assert json.dumps([len(a) for a in relay_units(stripped)]) == "[5]"
    assert list(itertools.chain(*relay_units(made))) == made


async def test_a_lost_stick_names_no_node_user_or_channel(tmp_path: Path) -> None:
    """Nothing on a stick, in its paths or its bytes, says who sends to whom or which channels
    exist; each node finds its own bundles by opening them and leaves the others' in place."""
    alice, bob, carol = await make_workspace(tmp_path, "bob", "carol")
    root = stick_dir(tmp_path)
    async with alice, bob, carol:
        channel = await alice.chat.create_channel("general")
        await alice.chat.post("general", "hello")
        await export_bundles(alice, root)
        files = bundle_files(root)
        assert len(files) == 2 and {p.parent.name for p in files} == {stick.BUNDLES}
        secrets = [n.identity.node_key for n in (alice, bob, carol)] + [alice.directory.current.workspace]
        names = [n.identity.node_id for n in (alice, bob, carol)] + [channel.channel_id, "general", "alice", "bob", "carol", "acme"]
        for path in (root / stick.STICK_DIR).rglob("*"):
            assert not any(name in str(path.relative_to(root)) for name in names)
            if path.is_file():
                data = path.read_bytes()
                assert not any(key in data for key in secrets)
                assert not any(name.encode() in data for name in names)
                assert not any(name.encode().hex().encode() in data for name in names)
        seen_by_bob = await import_bundles(bob, root)
        assert sorted(f.outcome for f in seen_by_bob.files) == ["accepted", sneakernet.NOT_FOR_ME]
        assert len(bundle_files(root)) == 1  # bob's left the stick; carol's stays
        seen_by_carol = await import_bundles(carol, root)
        assert [f.outcome for f in seen_by_carol.files] == ["accepted"]
        assert bundle_files(root) == []
        assert await texts(bob, "general") == await texts(carol, "general") == ["hello"]


async def test_a_stick_an_earlier_release_wrote_still_imports(tmp_path: Path) -> None:
    """Format 1 bundles in to-<NODEID>/ (what the previous release writes) are read: a fleet
    runs two adjacent releases side by side."""
    alice, bob = await make_workspace(tmp_path, "bob")
    root = stick_dir(tmp_path)
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.post_many("general", ["one", "two"])
        delta = await alice.exchange.delta_for([bob.identity.node_key], wholes=False)
        (content,) = sneakernet._split(delta, DEFAULT_MAX_BYTES, 1)
        data = format1_writer.build_bundle(
            content, sender_key=alice.identity.signing_key, workspace=alice.directory.current.workspace, recipients=[bob.identity.node_key],
            heads=sneakernet._header_heads(delta, content), created_at=1_767_225_600_000, randomness=bytes(32),
        )  # fmt: skip
        name = stick.bundle_file_name(alice.identity.node_id, 1_767_225_600_000, bytes(16))
        await sneakernet.medium_for(bob, root).write(stick.outbox_name(bob.identity.node_id), name, data)
        report = await import_bundles(bob, root)
        assert [f.outcome for f in report.files] == ["accepted"]
        assert await texts(bob, "general") == ["one", "two"]
        assert bundle_files(root) == []
