"""Disaster recovery: a node lost with no backup comes back on new hardware from its recovery
kit - the same node identity and users, an empty store - and a peer's bundles (or a LAN
session) refill it with what its users may read: public and their private channels, attachments."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from appliance.errors import InvalidInput, NotFound, PermissionDenied, SignInRefused, WrongPassphrase
from appliance.node import Attachment, Node
from appliance.recovery import recover
from appliance.recovery_kit import KitRejected
from sync.sneakernet import export_bundles, import_bundles
from tests.conftest import FAST, PASSPHRASE, run_cli

NEW_PASSPHRASE = "a brand new passphrase"


async def two_nodes(root: Path) -> tuple[Node, Node]:
    """alpha (alice, admin) and bravo (bob, member), in step."""
    alpha = await Node.init(root / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    enrollment = await alpha.enrollment.invite("bravo", "bob", kdf=FAST)
    bravo = await Node.join(root / "bravo", enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST)
    return alpha, bravo


async def carry(source: Node, target: Node, stick: Path) -> None:
    stick.mkdir(exist_ok=True)
    await export_bundles(source, stick, for_nodes=[target.identity.node_id])
    report = await import_bundles(target, stick)
    assert not report.rejected, [(f.outcome, f.reason) for f in report.rejected]


async def test_a_lost_node_comes_back_from_its_kit_and_a_peer_refills_it_by_bundle(tmp_path: Path) -> None:
    alpha, bravo = await two_nodes(tmp_path)
    stick = tmp_path / "stick"
    async with alpha:
        async with bravo:
            await alpha.chat.create_channel("general")
            await alpha.chat.create_channel("ops", private=True)
            await alpha.chat.add_member("ops", "bob")
            await alpha.chat.create_channel("admins", private=True)  # bob is not in it
            posted = [await alpha.chat.post("general", f"news {i}") for i in range(20)]
            report = await alpha.chat.post("ops", "see the report", attachments=[Attachment("report.txt", b"quarterly figures " * 100)])
            await alpha.chat.post("admins", "for admins only")
            await carry(alpha, bravo, stick)
            mine = await bravo.chat.post("general", "bob was here")
            await carry(bravo, alpha, stick)
            kit = await bravo.custody.recovery_kit(PASSPHRASE, kdf=FAST)
            node_id, node_key, incarnation = bravo.identity.node_id, bravo.identity.node_key, bravo.identity.incarnation
            assert (await bravo.audit.entries())[-1].action == "recovery_kit_made"
        shutil.rmtree(tmp_path / "bravo")  # the box is gone, with no backup

        with pytest.raises(KitRejected, match="wrong recovery code"):
            await recover(tmp_path / "new", kit.data, "0000-0000-0000-0000", NEW_PASSPHRASE)
        assert not Node.exists(tmp_path / "new")
        # Bob's secret is still his own: the kit carries his key sealed under it.
        with pytest.raises(SignInRefused):
            await recover(tmp_path / "new", kit.data, kit.code, NEW_PASSPHRASE, user_secret="not bob's secret")
        assert not Node.exists(tmp_path / "new")
        async with await recover(tmp_path / "new", kit.data, kit.code, NEW_PASSPHRASE, user_secret=PASSPHRASE) as again:
            me = again.identity.whoami()
            assert (me.node_id, me.node_key, me.user_name, again.identity.incarnation) == (node_id, node_key, "bob", incarnation)
            assert [c.name for c in await again.views.list_channels()] == []  # an empty store
            assert (await again.audit.entries())[-1].action == "recovered"
            # Its first bundle tells alpha it holds nothing; alpha's answer holds everything bob may read.
            await carry(again, alpha, stick)
            assert await alpha.exchange.changes_behind(again.identity.node_key) > 20
            await carry(alpha, again, stick)
            assert {c.name for c in await again.views.list_channels()} == {"general", "ops"}
            texts = {m.id: m.text for m in await again.views.read("general", limit=100, mark_read=False)}
            assert set(posted) | {mine} <= set(texts)
            with_file = await again.views.message(report)
            assert with_file.files and await again.blobs.blob(with_file.files[0].hash) == b"quarterly figures " * 100
            assert await again.views.search("admins") == []
            # And it works on: bob posts, alpha receives it.
            after = await again.chat.post("general", "back again")
            await carry(again, alpha, stick)
            assert (await alpha.views.message(after)).text == "back again"
        # The same kit and code cannot install over a node.
        with pytest.raises(Exception, match="already holds a node"):
            await recover(tmp_path / "new", kit.data, kit.code, NEW_PASSPHRASE, user_secret=PASSPHRASE)


async def test_a_kit_needs_the_node_passphrase_and_is_audited(tmp_path: Path) -> None:
    alpha, bravo = await two_nodes(tmp_path)
    await alpha.close()
    async with bravo:
        with pytest.raises(WrongPassphrase):
            await bravo.custody.recovery_kit("not the passphrase", kdf=FAST)
        assert (await bravo.audit.entries())[-1].action == "permission_denied"
        with pytest.raises(KitRejected, match="not a Rallypoint recovery kit"):
            await recover(tmp_path / "new", b"\xa1\x66format\x63bad", "X", NEW_PASSPHRASE)
        with pytest.raises(InvalidInput):
            await recover(tmp_path / "new", b"", "X", "short")


def test_the_commands_write_a_kit_and_recover_from_it(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    assert run_cli(home, "init", "--workspace", "acme", "--user", "alice").returncode == 0
    kit = tmp_path / "alpha.kit"
    made = run_cli(home, "recovery-kit", "--to", str(kit), "--json")
    assert made.returncode == 0, made.stderr
    assert kit.stat().st_mode & 0o077 == 0
    import json

    code = json.loads(made.stdout)["code"]
    node_id = json.loads(run_cli(home, "whoami", "--json").stdout)["node_id"]
    shutil.rmtree(home)
    new = tmp_path / "new"
    done = run_cli(new, "recover", str(kit), "--code", code, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(run_cli(new, "whoami", "--json").stdout)["node_id"] == node_id
    wrong = run_cli(tmp_path / "other", "recover", str(kit), "--code", "0000-0000-0000-0000")
    assert wrong.returncode == 1 and "wrong recovery code" in wrong.stderr


async def test_not_found_is_what_a_recovered_node_says_before_it_is_refilled(tmp_path: Path) -> None:
    alpha, bravo = await two_nodes(tmp_path)
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        posted = await alpha.chat.post("general", "hello")
        await carry(alpha, bravo, tmp_path / "stick")
        kit = await bravo.custody.recovery_kit(PASSPHRASE, kdf=FAST)
    async with await recover(tmp_path / "new", kit.data, kit.code, NEW_PASSPHRASE, user_secret=PASSPHRASE) as again:
        with pytest.raises(NotFound):
            await again.views.message(posted)


async def test_a_node_whose_hardware_was_taken_comes_back_as_a_new_identity_for_the_same_users(tmp_path: Path) -> None:
    """The admin replaces it from its kit: the old key is revoked (the box wipes itself when the
    news reaches it), a new node key is certified for bob, whose own key stays his; the new node
    is refilled by one bundle from alpha, which never knew it."""
    alpha, bravo = await two_nodes(tmp_path)
    stick = tmp_path / "stick"
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.create_channel("ops", private=True)
        await alpha.chat.add_member("ops", "bob")
        await alpha.chat.post("ops", "private plan")
        posted = await alpha.chat.post("general", "hello all")
        await carry(alpha, bravo, stick)
        kit = await bravo.custody.recovery_kit(PASSPHRASE, kdf=FAST)
        old_id, bob = bravo.identity.node_id, bravo.identity.user_key
        with pytest.raises(PermissionDenied):  # bob is no admin
            await bravo.custody.replace_node(kit.data, kit.code, kdf=FAST)
        replaced = await alpha.custody.replace_node(kit.data, kit.code, kdf=FAST)
        assert replaced.node_id != old_id and (await alpha.audit.entries())[-1].action == "node_replaced"
        assert alpha.directory.trust_of(bravo.identity.node_key) == "revoked"
        with pytest.raises(InvalidInput, match="nothing to replace"):  # once is enough
            await alpha.custody.replace_node(kit.data, kit.code, kdf=FAST)
        with pytest.raises(KitRejected):
            await recover(tmp_path / "new", replaced.data, kit.code, NEW_PASSPHRASE, user_secret=PASSPHRASE)
        async with await recover(tmp_path / "new", replaced.data, replaced.code, NEW_PASSPHRASE, user_secret=PASSPHRASE) as fresh:
            assert (fresh.identity.node_id, fresh.identity.user_key) == (replaced.node_id, bob)
            assert fresh.identity.incarnation != bravo.identity.incarnation
            await carry(alpha, fresh, stick)  # one bundle: alpha never heard of this node
            assert {c.name for c in await fresh.views.list_channels()} == {"general", "ops"}
            assert (await fresh.views.message(posted)).text == "hello all"
            mine = await fresh.chat.post("ops", "bob again, on a new box")
            await carry(fresh, alpha, stick)
            assert (await alpha.views.message(mine)).author == "bob"
        # The taken box, when it next meets the workspace, learns it is revoked and wipes itself.
        await export_bundles(alpha, stick, for_nodes=[old_id])
        report = await import_bundles(bravo, stick)
        assert report.wiped


def test_an_admin_replaces_a_taken_node_from_the_command_line(tmp_path: Path) -> None:
    import json

    alpha, bravo = tmp_path / "alpha", tmp_path / "bravo"
    assert run_cli(alpha, "init", "--workspace", "acme", "--user", "alice").returncode == 0
    invited = json.loads(run_cli(alpha, "invite", "bravo", "--user", "bob", "--out", str(tmp_path / "bravo.enroll"), "--json").stdout)
    assert run_cli(bravo, "join", str(tmp_path / "bravo.enroll"), "--code", invited["code"]).returncode == 0
    kit = json.loads(run_cli(bravo, "recovery-kit", "--to", str(tmp_path / "bravo.kit"), "--json").stdout)
    refused = run_cli(bravo, "replace-node", str(tmp_path / "bravo.kit"), "--code", kit["code"], "--to", str(tmp_path / "x.kit"))
    assert refused.returncode == 1 and "needs the admin role" in refused.stderr
    done = run_cli(alpha, "replace-node", str(tmp_path / "bravo.kit"), "--code", kit["code"], "--to", str(tmp_path / "new.kit"), "--json")
    assert done.returncode == 0, done.stderr
    replaced = json.loads(done.stdout)
    assert replaced["node_id"] != invited["node_id"]
    recovered = run_cli(tmp_path / "new", "recover", str(tmp_path / "new.kit"), "--code", replaced["code"], "--json")
    assert recovered.returncode == 0, recovered.stderr
    me = json.loads(run_cli(tmp_path / "new", "whoami", "--json").stdout)
    assert (me["node_id"], me["user"]) == (replaced["node_id"], "bob")
