"""The node through its public API: identity, enrollment, channels, messages, verification."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from appliance import documents, segments
from appliance import node as node_module
from appliance.changes import SignedChange
from appliance.errors import (
    BlobTooLarge,
    ChangeRejected,
    EnrollmentRejected,
    InvalidInput,
    NotFound,
    PermissionDenied,
    SignInRefused,
    WrongPassphrase,
)
from appliance.ids import normalise_key_id
from appliance.node import Attachment, Node
from appliance.services import chat as chat_module
from appliance.services import replica as replica_module
from tests.conftest import FAST, PASSPHRASE, connect_node_db, make_workspace, run_cli, sync_all


async def test_secret_keys_are_sealed_on_disk(tmp_path: Path) -> None:
    seeds = []

    def recording_rng(n: int) -> bytes:
        value = node_module.crypto.random_bytes(n)
        seeds.append(value)
        return value

    node = await Node.init(tmp_path / "a", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, rng=recording_rng)
    await node.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "a").iterdir() if p.is_file())
    key_seeds = [s for s in seeds if len(s) == 32]
    assert len(key_seeds) >= 4  # workspace, node, user and data key
    assert not any(seed in raw for seed in key_seeds)


async def test_wrong_passphrase_is_a_clear_error_and_changes_nothing_but_the_audit_log(tmp_path: Path) -> None:
    node = await Node.init(tmp_path / "a", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    await node.chat.create_channel("general")
    await node.chat.post("general", "before")
    await node.close()
    db = tmp_path / "a" / "node.db"

    def snapshot() -> dict[str, list[tuple]]:
        with connect_node_db(db) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'messages_fts%'")]
            return {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in tables if t != "audit_log"}

    before = snapshot()
    with pytest.raises(WrongPassphrase):
        await Node.open(tmp_path / "a", "not the passphrase")
    assert snapshot() == before
    async with await Node.open(tmp_path / "a", PASSPHRASE) as node:
        assert [m.text for m in await node.views.read("general")] == ["before"]
        assert [e.action for e in await node.audit.entries()][-1] == "unlock_failed"


async def test_whoami_shows_checkable_ids(alice: Node) -> None:
    me = alice.identity.whoami()
    assert (me.user_name, me.role, me.node_name) == ("alice", "admin", "alpha")
    assert normalise_key_id(me.node_id) == me.node_id


async def test_invite_and_join_need_the_one_time_code(tmp_path: Path, alice: Node) -> None:
    enrollment = await alice.enrollment.invite("bravo", "bob", kdf=FAST)
    assert len(enrollment.code.replace("-", "")) == 12
    assert b"bob" not in enrollment.data  # everything but the KDF parameters is sealed
    wrong = "0000-0000-0000" if enrollment.code != "0000-0000-0000" else "1111-1111-1111"
    with pytest.raises(EnrollmentRejected, match="wrong enrollment code"):
        await Node.join(tmp_path / "b", enrollment.data, wrong, PASSPHRASE)
    assert not (tmp_path / "b" / "node.db").exists()
    tampered = bytearray(enrollment.data)
    tampered[-5] ^= 1
    with pytest.raises(EnrollmentRejected):
        await Node.join(tmp_path / "b", bytes(tampered), enrollment.code, PASSPHRASE)
    async with await Node.join(tmp_path / "b", enrollment.data, enrollment.code.lower(), PASSPHRASE, kdf=FAST) as bob:
        me = bob.identity.whoami()
        assert (me.user_name, me.role, me.node_id, me.workspace_id) == ("bob", "member", enrollment.node_id, alice.identity.workspace_id)
        assert {u.name for u in bob.directory.users()} == {"alice", "bob"}
    assert [e.action for e in await alice.audit.entries()][-2:] == ["invited", "recovery_kit_made"]  # the node's kit, made with the invitation


async def test_only_admins_administer_and_refusals_are_audited(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        with pytest.raises(PermissionDenied):
            await bob.directory.add_user("mallory")
        with pytest.raises(PermissionDenied):
            await bob.enrollment.invite("evil", "eve", kdf=FAST)
        assert [e.action for e in await bob.audit.entries()][-2:] == ["permission_denied", "permission_denied"]
        carol = await alice.directory.add_user("carol", "observer")
        assert carol.local
        await alice.directory.set_role("carol", "member")
        assert alice.directory.current.user_by_name("carol").role == "member"
        actions = [e.action for e in await alice.audit.entries()]
        assert {"init", "invited", "user_added", "role_changed"} <= set(actions)


async def test_messages_threads_edits_reactions_deletes(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.chat.create_channel("general", purpose="all hands")
        root = await alice.chat.post("general", "hello @bob and @nobody")
        await sync_all(alice, bob)
        reply = await bob.chat.post("general", "hi alice", reply_to=root)
        nested = await bob.chat.post("general", "reply to a reply lands in the same thread", reply_to=reply)
        await bob.chat.react(root, "👍")
        await sync_all(bob, alice)
        await alice.chat.react(root, "👍")
        await alice.chat.react(root, ":tada:")
        await alice.chat.react(root, ":tada:", remove=True)
        await alice.chat.edit(root, "hello again @bob")
        (top,) = await alice.views.read("general")
        assert top.text == "hello again @bob" and top.edited_at is not None
        assert top.reactions == {"👍": ["alice", "bob"]} or top.reactions == {"👍": ["bob", "alice"]}
        assert top.mentions == ["bob"] and top.reply_count == 2
        thread = await alice.views.read("general", thread=root)
        assert [m.id for m in thread] == [root, reply, nested]
        assert all(m.root_id == root for m in thread[1:])
        with pytest.raises(PermissionDenied):
            await alice.chat.edit(reply, "not mine")
        await alice.chat.delete(reply)  # admins may delete anyone's message
        deleted = (await alice.views.read("general", thread=root))[1]
        assert deleted.deleted and deleted.text == ""
        with pytest.raises(InvalidInput):
            await alice.chat.edit(root, "   ")


async def test_attachments_are_stored_once_and_limited(alice: Node, tmp_path: Path) -> None:
    await alice.chat.create_channel("files")
    data = b"report contents " * 1000
    first = await alice.chat.post("files", "v1", attachments=[Attachment("report.txt", data)])
    await alice.chat.post("files", "same file again", attachments=[Attachment("copy.txt", data)])
    assert await alice.blobs.blob_count() == 1
    (view,) = [m for m in await alice.views.read("files") if m.id == first]
    assert view.files[0].name == "report.txt" and view.files[0].size == len(data)
    assert await alice.blobs.blob(view.files[0].hash) == data
    await alice.blobs.set_max_blob_bytes(100)
    with pytest.raises(BlobTooLarge):
        await alice.chat.post("files", "too big", attachments=[Attachment("big.bin", bytes(101))])
    assert await alice.blobs.blob_count() == 1


async def test_private_channels_are_for_members_only(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.chat.create_channel("secret", private=True)
        await alice.chat.post("secret", "for members")
        await sync_all(alice, bob)
        assert "secret" not in [c.name for c in await bob.views.list_channels()]
        with pytest.raises(NotFound):
            await bob.views.read("secret")
        await alice.chat.add_member("secret", "bob")
        await sync_all(alice, bob)
        assert [m.text for m in await bob.views.read("secret")] == ["for members"]


async def test_observers_read_but_cannot_write_even_through_sync(tmp_path: Path) -> None:
    alice, olga = await make_workspace(tmp_path, "olga")
    async with alice, olga:
        await alice.chat.create_channel("general")
        await sync_all(alice, olga)
        await olga.chat.post("general", "written while still a member")
        await alice.directory.set_role("olga", "observer")
        await sync_all(alice, olga)
        with pytest.raises(PermissionDenied):
            await olga.chat.post("general", "observers cannot post")
        # A change olga made before learning of her demotion is refused by alice now.
        with pytest.raises(ChangeRejected, match="observer"):
            await sync_all(olga, alice)


async def test_revocation_is_a_signed_entry_and_bars_the_revoked_author(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.chat.create_channel("general")
        await sync_all(alice, bob)
        await bob.chat.post("general", "bob's message")
        bob_key = bob.identity.whoami().user_key
        await alice.directory.revoke(bob_key, "left the team")
        assert bob_key in alice.directory.current.revoked
        assert "bob" not in {u.name for u in alice.directory.users()}
        assert [(u.name, u.revoked) for u in alice.directory.users(revoked=True)] == [("alice", False), ("bob", True)]
        with pytest.raises(ChangeRejected, match="revoked"):
            await sync_all(bob, alice)
        assert [m.text for m in await alice.views.read("general")] == []
        await sync_all(alice, bob)  # the revocation travels with the directory document
        assert bob_key in bob.directory.current.revoked
        with pytest.raises(PermissionDenied):
            await bob.chat.post("general", "after revocation")


async def test_a_tampered_batch_is_rejected_whole_and_stores_nothing(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.chat.create_channel("general")
        await sync_all(alice, bob)
        for i in range(5):
            await alice.chat.post("general", f"message {i}")
        (segment,) = [d for d in await alice.replica.document_ids() if "/seg/" in d]
        batch = await alice.replica.changes_for(segment, [])
        bad = bytearray(batch[2].data)
        bad[-3] ^= 0x40
        tampered = batch[:2] + [SignedChange(bytes(bad), batch[2].signature)] + batch[3:]
        with pytest.raises(ChangeRejected):
            await bob.intake.import_changes(segment, tampered, alice.identity.node_id)
        assert await bob.views.read("general") == []
        result = await bob.intake.import_changes(segment, batch, alice.identity.node_id)
        assert result.applied == 5
        again = await bob.intake.import_changes(segment, batch, alice.identity.node_id)
        assert (again.applied, again.duplicates) == (0, 5)


async def test_changes_from_an_unknown_workspace_user_are_rejected(tmp_path: Path) -> None:
    (alice,) = await make_workspace(tmp_path / "one")
    (eve,) = await make_workspace(tmp_path / "two")
    async with alice, eve:
        await eve.chat.create_channel("general")
        (head,) = [d for d in await eve.replica.document_ids() if d.endswith("/head")]
        with pytest.raises(ChangeRejected, match="not a user of this workspace"):
            await alice.intake.import_changes(head, await eve.replica.changes_for(head, []), eve.identity.node_id)
        with pytest.raises(ChangeRejected):
            await alice.intake.import_changes(documents.DIRECTORY_DOC, await eve.replica.changes_for(documents.DIRECTORY_DOC, []), eve.identity.node_id)


async def test_segments_bound_every_document(alice: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat_module, "SEGMENT_SIZE", 8)
    await alice.chat.create_channel("busy")
    ids = await alice.chat.post_many("busy", [f"bulk {i}" for i in range(30)])
    ids += [await alice.chat.post("busy", f"single {i}") for i in range(5)]
    segment_ids = [d for d in await alice.replica.document_ids() if "/seg/" in d]
    assert len(segment_ids) == 5
    for doc_id in segment_ids:
        doc = await alice.replica.document(doc_id)
        assert len(segments.read_messages(doc, frozenset())) <= 8
    assert [m.id for m in await alice.views.read("busy", limit=100)] == ids


async def test_a_deleted_message_is_never_resurrected_by_a_concurrent_edit(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.chat.create_channel("general")
        await sync_all(alice, bob)
        message = await bob.chat.post("general", "original")
        await sync_all(bob, alice)
        await alice.chat.delete(message)  # admin deletes
        await bob.chat.edit(message, "edited concurrently")  # bob has not seen the delete
        await sync_all(alice, bob)
        await sync_all(bob, alice)
        for node in (alice, bob):
            (view,) = await node.views.read("general")
            assert view.deleted and view.text == ""


async def test_unread_and_mention_counts(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.chat.create_channel("general")
        await sync_all(alice, bob)
        await bob.chat.post("general", "one")
        await bob.chat.post("general", "hey @alice")
        first = (await bob.views.read("general"))[0].id
        await bob.chat.post("general", "a reply does not count as unread, a mention in it does: @alice", reply_to=first)
        await sync_all(bob, alice)
        (summary,) = await alice.views.list_channels()
        assert (summary.unread, summary.mentions) == (2, 2)
        await alice.views.read("general")
        (summary,) = await alice.views.list_channels()
        assert (summary.unread, summary.mentions) == (0, 0)


async def test_search_finds_words_across_readable_channels_only(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.chat.create_channel("ops")
        await alice.chat.create_channel("hidden", private=True)
        await alice.chat.post("ops", "generator fuel is low at checkpoint bravo")
        await alice.chat.post("hidden", "generator secret")
        await sync_all(alice, bob)  # every document, the private channel's too: bob's node holds but cannot show it
        assert [m.channel for m in await bob.views.search("generator")] == ["ops"]
        assert [m.text for m in await bob.views.search("checkp")] == ["generator fuel is low at checkpoint bravo"]
        assert len(await alice.views.search("generator")) == 2


async def test_the_passphrase_signs_in_the_nodes_own_user_only(tmp_path: Path) -> None:
    """The passphrase unlocks the node and is its own user's secret; another local user's key
    opens only with that user's secret (tests/flows/test_signin.py has the rest)."""
    home = tmp_path / "alpha"
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as alice:
        await alice.directory.add_user("bob", secret="bob-initial-1")
        await alice.chat.create_channel("general")
    with pytest.raises(SignInRefused, match="wrong user name or secret"):
        await Node.open(home, PASSPHRASE, as_user="bob")
    async with await Node.open(home, PASSPHRASE, as_user="alice") as again:
        assert again.identity.whoami().user_name == "alice"
        assert [(e.action, e.detail.get("user")) for e in await again.audit.entries()][-2:] == [("sign_in_failed", "bob"), ("signed_in", "alice")]
    refused = run_cli(home, "post", "general", "as bob", "--as", "bob")
    assert refused.returncode == 1 and "no secret for bob" in refused.stderr
    assert "sign in as this local user, with their secret" in " ".join(run_cli(home, "post", "--help").stdout.split())


async def test_the_search_index_follows_every_way_a_message_arrives(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.chat.create_channel("general")
        posted = await alice.chat.post("general", "posted kestrel")
        batch = await alice.chat.post_many("general", ["batch heron one", "batch heron two"])
        await sync_all(alice, bob)  # a segment bob never had
        later = await alice.chat.post("general", "later osprey")
        await sync_all(alice, bob)  # into a segment bob has
        await alice.chat.edit(posted, "edited falcon")
        await sync_all(alice, bob)
        for node in (alice, bob):
            assert {m.id for m in await node.views.search("heron")} == set(batch)
            assert [m.id for m in await node.views.search("osprey")] == [later]
            assert [m.id for m in await node.views.search("falcon")] == [posted]
            assert await node.views.search("kestrel") == []


async def test_refresh_sees_what_another_process_wrote(tmp_path: Path) -> None:
    async with await Node.init(tmp_path / "a", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as first:
        await first.chat.create_channel("general")
        await first.views.read("general")
        async with await Node.open(tmp_path / "a", PASSPHRASE) as second:
            await second.chat.post("general", "from the CLI")
        general = (await first.views.list_channels())[0].channel_id
        assert await first.feed.poll() == {general}
        assert [m.text for m in await first.views.read("general")] == ["from the CLI"]
        await first.chat.post("general", "own post")
        assert await first.feed.poll() == frozenset()


async def test_refresh_after_imports_misses_nothing_another_process_wrote(tmp_path: Path) -> None:
    """An import lets `refresh` skip its own rows, never another process's before or after."""
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.create_channel("ops")
        await sync_all(alice, bob)
        ops = {c.name: c.channel_id for c in await bob.views.list_channels()}["ops"]
        async with await Node.open(tmp_path / "bob", PASSPHRASE) as cli:
            await cli.chat.post("ops", "before the import")  # waiting when bob imports
            await alice.chat.post("general", "from alice")
            await sync_all(alice, bob)
            assert await bob.feed.poll() == {ops}
            await alice.chat.post("general", "from alice again")
            await sync_all(alice, bob)
            assert await bob.feed.poll() == frozenset()
            await cli.chat.post("ops", "after the import")
        assert await bob.feed.poll() == {ops}
        assert [m.text for m in await bob.views.read("ops")] == ["before the import", "after the import"]


async def test_export_gives_loadable_automerge_documents(alice: Node) -> None:
    await alice.chat.create_channel("general")
    message = await alice.chat.post("general", "exported")
    exported = await alice.replica.export_channel("general")
    (head_id,) = [d for d in exported if d.endswith("/head")]
    (segment_id,) = [d for d in exported if "/seg/" in d]
    head = documents.load_document(exported[head_id], bytes(48))
    assert documents.read_head(head, "x").name == "general"
    segment = documents.load_document(exported[segment_id], bytes(48))
    assert [state.message_id for state in segments.read_messages(segment, frozenset())] == [message]


async def test_memory_holds_a_bounded_number_of_documents(alice: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica_module, "CACHED_DOCUMENTS", 3)
    monkeypatch.setattr(chat_module, "SEGMENT_SIZE", 4)
    posted: dict[str, list[str]] = {}
    for name in ("one", "two", "three"):
        await alice.chat.create_channel(name)
    for round_ in range(6):
        for name in ("one", "two", "three"):
            posted.setdefault(name, []).append(await alice.chat.post(name, f"{name} {round_}"))
            assert len(alice.replica.in_memory()) <= 3
    for name, expected in posted.items():
        assert [m.id for m in await alice.views.read(name)] == expected
    await alice.chat.react(posted["one"][0], "👍")  # edits a segment that was evicted long ago
    assert (await alice.views.read("one"))[0].reactions == {"👍": ["alice"]}


async def test_each_process_writes_under_a_fresh_actor_of_the_same_author(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
        await node.chat.create_channel("general")
        await node.chat.post("general", "first run")
    backup = tmp_path / "backup"
    shutil.copytree(home, backup)
    async with await Node.open(home, PASSPHRASE) as node:
        await node.chat.post("general", "second run")
    async with await Node.open(backup, PASSPHRASE) as restored:  # the box restored from its backup
        await restored.chat.post("general", "after the restore")
        async with await Node.open(home, PASSPHRASE) as original:
            await sync_all(restored, original)  # would fail on "duplicate seq" with a reused actor
            assert [m.text for m in await original.views.read("general")] == ["first run", "second run", "after the restore"]
    with connect_node_db(home / "node.db") as conn:
        actors = {row[0] for row in conn.execute("SELECT DISTINCT actor FROM changes WHERE doc_id LIKE '%/seg/%'")}
    assert len(actors) == 3 and len({actor[:32] for actor in actors}) == 1
