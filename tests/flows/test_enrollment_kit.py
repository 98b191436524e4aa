"""The recovery kit an admin makes at enrollment: a node lost with no backup, and no kit made by
itself, comes back on new hardware with the same identity and first user; its peers accept it
(its certificate commits to the kit's incarnation) and refill it by bundle; the lost machine's
own incarnation is refused from then on. Users added on it later are re-keyed by an admin."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from appliance import certs, crypto, recovery_kit
from appliance.errors import InvalidInput, NotFound, SignInRefused
from appliance.node import Node
from appliance.recovery import recover
from appliance.recovery_kit import KitKind, KitRejected
from sync.sneakernet import export_bundles, import_bundles
from tests.conftest import FAST, PASSPHRASE, run_cli

NEW_PASSPHRASE = "a brand new passphrase"
BOBS_SECRET = "bob's own new secret"


async def carry(source: Node, target: Node, stick: Path) -> None:
    stick.mkdir(exist_ok=True)
    await export_bundles(source, stick, for_nodes=[target.identity.node_id])
    report = await import_bundles(target, stick)
    assert not report.rejected, [(f.outcome, f.reason) for f in report.rejected]


async def enrolled(root: Path, role: str = "member") -> tuple[Node, Node, recovery_kit.KitContents, bytes, str]:
    """alpha (alice, admin) and bravo (bob) joined from alpha's invitation, whose kit is returned
    with its bytes and code."""
    alpha = await Node.init(root / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    enrollment = await alpha.enrollment.invite("bravo", "bob", role, kdf=FAST)
    assert enrollment.kit is not None
    bravo = await Node.join(root / "bravo", enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST)
    return alpha, bravo, recovery_kit.open_kit(enrollment.kit.data, enrollment.kit.code), enrollment.kit.data, enrollment.kit.code


async def test_a_lost_node_comes_back_from_the_kit_made_at_its_enrollment_and_a_peer_refills_it(tmp_path: Path) -> None:
    alpha, bravo, contents, kit, code = await enrolled(tmp_path)
    stick = tmp_path / "stick"
    async with alpha:
        made = [e for e in await alpha.audit.entries() if e.action == "recovery_kit_made"]
        assert len(made) == 1 and made[0].detail["at_enrollment"] is True and made[0].detail["node"] == bravo.identity.node_id
        assert made[0].actor == alpha.identity.user_key.hex()
        assert code not in json.dumps([e.detail for e in await alpha.audit.entries()])  # never the code
        async with bravo:
            assert contents.kind == KitKind.ENROLLMENT and contents.node_seed and contents.default_user == bravo.identity.user_key
            assert bravo.identity.incarnation != contents.incarnation  # the join picked its own
            await alpha.chat.create_channel("general")
            await alpha.chat.create_channel("ops", private=True)
            await alpha.chat.add_member("ops", "bob")
            await alpha.chat.create_channel("admins", private=True)  # bob is not in it
            posted = [await alpha.chat.post("general", f"news {i}") for i in range(10)]
            await alpha.chat.post("admins", "for admins only")
            await carry(alpha, bravo, stick)
            mine = await bravo.chat.post("ops", "bob was here")
            await carry(bravo, alpha, stick)  # alpha now knows bravo by the join's incarnation
            node_id, node_key, lost_incarnation = bravo.identity.node_id, bravo.identity.node_key, bravo.identity.incarnation
        shutil.copytree(tmp_path / "bravo", tmp_path / "old-box")  # the lost machine, should it ever turn up
        shutil.rmtree(tmp_path / "bravo")  # burnt, no backup, no kit of its own

        with pytest.raises(KitRejected, match="wrong recovery code"):
            await recover(tmp_path / "new", kit, "0000-0000-0000-0000", NEW_PASSPHRASE, user_secret=BOBS_SECRET)
        assert not Node.exists(tmp_path / "new")
        async with await recover(tmp_path / "new", kit, code.lower(), NEW_PASSPHRASE, user_secret=BOBS_SECRET) as again:
            me = again.identity.whoami()
            assert (me.node_id, me.node_key, me.user_name, me.role) == (node_id, node_key, "bob", "member")
            assert again.identity.incarnation == contents.incarnation != lost_incarnation
            assert [c.name for c in await again.views.list_channels()] == []  # an empty store
            recovered = (await again.audit.entries())[-1]
            assert recovered.action == "recovered" and recovered.detail["kind"] == "enrollment"
            # alpha accepts the kit's incarnation in place of the one it knew, and says so.
            await carry(again, alpha, stick)
            back = [e for e in await alpha.audit.entries() if e.action == "peer_recovered"]
            assert [(e.detail["node"], e.detail["replaced"]) for e in back] == [(node_id, lost_incarnation.hex())]
            await carry(alpha, again, stick)
            assert {c.name for c in await again.views.list_channels()} == {"general", "ops"}
            texts = {m.id: m.text for m in await again.views.read("general", limit=100, mark_read=False)}
            assert set(posted) <= set(texts)
            assert (await again.views.message(mine)).text == "bob was here"
            assert await again.views.search("admins") == []
            after = await again.chat.post("general", "back again")
            await carry(again, alpha, stick)
            assert (await alpha.views.message(after)).author == "bob"

        # bob's secret is the one given at recovery, as at join; nothing else opens his key.
        with pytest.raises(SignInRefused):
            await Node.open(tmp_path / "new", NEW_PASSPHRASE, user_secret=PASSPHRASE)
        async with await Node.open(tmp_path / "new", NEW_PASSPHRASE, user_secret=BOBS_SECRET) as again:
            assert again.identity.whoami().user_name == "bob"

        # The lost machine, turning up again with the join's incarnation, is refused as a copy.
        async with await Node.open(tmp_path / "old-box", PASSPHRASE) as old:
            await export_bundles(old, stick, for_nodes=[alpha.identity.node_id])
        report = await import_bundles(alpha, stick)
        assert report.rejected and all("identity conflict" in (f.reason or "") for f in report.rejected)
        for leftover in (stick / "rallypoint").rglob("*.rpb"):
            leftover.unlink()
        # ... while the recovered node is still accepted, with no second `peer_recovered`.
        async with await Node.open(tmp_path / "new", NEW_PASSPHRASE, user_secret=BOBS_SECRET) as again:
            later = await again.chat.post("general", "still here")
            await carry(again, alpha, stick)
            assert (await alpha.views.message(later)).text == "still here"
        assert [e.action for e in await alpha.audit.entries()].count("peer_recovered") == 1


async def test_users_added_after_enrollment_are_not_in_the_kit_and_an_admin_re_keys_them(tmp_path: Path) -> None:
    alpha, bravo, _, kit, code = await enrolled(tmp_path, role="admin")
    stick = tmp_path / "stick"
    async with alpha:
        async with bravo:
            await bravo.directory.add_user("carol", secret="carol's first secret")
            await alpha.chat.create_channel("general")
            await carry(bravo, alpha, stick)
            await carry(alpha, bravo, stick)
        shutil.rmtree(tmp_path / "bravo")
        async with await recover(tmp_path / "new", kit, code, NEW_PASSPHRASE, user_secret=BOBS_SECRET) as again:
            await carry(again, alpha, stick)
            await carry(alpha, again, stick)  # the directory: carol, homed on this node, whose key went with the box
            assert "carol" in {u.name for u in again.directory.users()}
            with pytest.raises(SignInRefused):
                await again.signin.sign_in("carol", "carol's first secret")
            reset = await again.signin.reset_secret("carol", "carol's one-time secret")
            assert reset.rekeyed
            assert (await again.audit.entries())[-1].action == "secret_reset"
            result = await again.signin.sign_in("carol", "carol's one-time secret")
            assert result.steps  # she must set her own secret first
            await carry(again, alpha, stick)
            assert alpha.directory.trust_of(again.identity.node_key) == certs.Trust.TRUSTED
            renewed = {u.name: u for u in alpha.directory.users()}["carol"]
            assert renewed.key == {u.name: u for u in again.directory.users()}["carol"].key
        with pytest.raises(NotFound):  # a user of another node is not re-keyed here
            async with await Node.open(tmp_path / "new", NEW_PASSPHRASE, user_secret=BOBS_SECRET) as again:
                await again.signin.reset_secret("alice")


async def test_bad_kits_are_refused_and_leave_no_node(tmp_path: Path) -> None:
    alpha, bravo, contents, kit, code = await enrolled(tmp_path)
    await bravo.close()
    async with alpha:
        for damaged in (kit[: len(kit) // 2], kit[:-1] + bytes([kit[-1] ^ 1]), b""):
            with pytest.raises(KitRejected):
                await recover(tmp_path / "new", damaged, code, NEW_PASSPHRASE)
            assert not Node.exists(tmp_path / "new")
        # A kit of another workspace: replace-node refuses it.
        other = await Node.init(tmp_path / "other", workspace_name="other", user_name="olga", node_name="omega", passphrase=PASSPHRASE, kdf=FAST)
        async with other:
            foreign = await other.enrollment.invite("x-ray", "xavier", kdf=FAST)
            assert foreign.kit is not None
            with pytest.raises(InvalidInput, match="another workspace"):
                await alpha.custody.replace_node(foreign.kit.data, foreign.kit.code, kdf=FAST)
        # A kit whose contents name a node certificate that does not commit to it (not the kit
        # made at enrollment) would be refused by every peer: recover refuses it first.
        forged = recovery_kit.seal_kit(
            recovery_kit.encode_contents(contents.__class__(**{**contents.__dict__, "incarnation": b"\x01" * 16})), "A" * 16, b"\x00" * 16, b"\x00" * 24, FAST
        )
        with pytest.raises(KitRejected, match="does not name this kit"):
            await recover(tmp_path / "new", forged, "A" * 16, NEW_PASSPHRASE)
        assert not Node.exists(tmp_path / "new")
        # An invitation without a kit certifies no recovery incarnation.
        plain = await alpha.enrollment.invite("charlie", "chuck", kdf=FAST, with_kit=False)
        assert plain.kit is None
        charlie = {n.name: n for n in alpha.directory.nodes()}["charlie"]
        assert alpha.directory.current.nodes[charlie.key].recovery is None


async def test_a_kit_of_a_replaced_node_is_refused_and_a_copy_recovered_wipes_itself(tmp_path: Path) -> None:
    alpha, bravo, _, kit, code = await enrolled(tmp_path)
    stick = tmp_path / "stick"
    async with alpha:
        await bravo.close()
        shutil.rmtree(tmp_path / "bravo")
        lost_id = bravo.identity.node_id
        replaced = await alpha.custody.replace_node(kit, code, kdf=FAST)
        assert replaced.replaces == lost_id and replaced.node_id != lost_id
        # The new identity's kit comes back and is accepted (it is an admin's kit too).
        async with await recover(tmp_path / "fresh", replaced.data, replaced.code, NEW_PASSPHRASE, user_secret=BOBS_SECRET) as fresh:
            assert fresh.identity.whoami().user_name == "bob"
            await carry(alpha, fresh, stick)
            await carry(fresh, alpha, stick)
        # A copy of the old kit still opens (it cannot know), but the first news from a peer
        # is its revocation: it wipes itself.
        async with await recover(tmp_path / "stale", kit, code, NEW_PASSPHRASE, user_secret=BOBS_SECRET) as stale:
            stale_id = stale.identity.node_id
        await export_bundles(alpha, stick, for_nodes=[stale_id])
        async with await Node.open(tmp_path / "stale", NEW_PASSPHRASE, user_secret=BOBS_SECRET) as stale:
            report = await import_bundles(stale, stick)
            assert report.wiped


def test_invite_writes_the_kit_in_the_admins_home_and_recover_says_who_is_not_in_it(tmp_path: Path) -> None:
    alpha = tmp_path / "alpha"
    assert run_cli(alpha, "init", "--workspace", "acme", "--user", "alice").returncode == 0
    done = run_cli(alpha, "invite", "bravo", "--user", "bob", "--out", str(tmp_path / "bravo.enroll"), "--json")
    assert done.returncode == 0, done.stderr
    invited = json.loads(done.stdout)
    kit_file = Path(invited["recovery_kit"]["file"])
    assert kit_file.parent == alpha / "recovery-kits" and kit_file.stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alpha", "bravo.enroll"]  # nothing beside the enrollment file
    # Sealed at the invitation's cost; the node it rebuilds seals secrets at a join's cost.
    assert recovery_kit.open_kit(kit_file.read_bytes(), invited["recovery_kit"]["code"]).kdf == crypto.INTERACTIVE
    audit = run_cli(alpha, "audit", "--json")
    assert invited["recovery_kit"]["code"] not in audit.stdout and '"at_enrollment": true' in audit.stdout.replace("True", "true")
    elsewhere = tmp_path / "safe" / "bravo.kit"
    elsewhere.parent.mkdir()
    other = run_cli(alpha, "invite", "charlie", "--user", "chuck", "--out", str(tmp_path / "c.enroll"), "--recovery-kit", str(elsewhere), "--json")
    assert other.returncode == 0 and json.loads(other.stdout)["recovery_kit"]["file"] == str(elsewhere) and elsewhere.exists()
    clash = run_cli(alpha, "invite", "echo", "--user", "eve", "--out", str(tmp_path / "e.enroll"), "--recovery-kit", str(tmp_path / "e.enroll"))
    assert clash.returncode == 2 and "two files" in clash.stderr and not (tmp_path / "e.enroll").exists()
    beside = run_cli(alpha, "invite", "echo", "--user", "eve", "--out", str(tmp_path / "e.enroll"), "--recovery-kit", str(tmp_path / "e.kit"))
    assert beside.returncode == 0 and "keep it off the stick" in beside.stderr
    none = run_cli(alpha, "invite", "delta", "--user", "dan", "--out", str(tmp_path / "d.enroll"), "--no-recovery-kit", "--json")
    assert none.returncode == 0 and "recovery_kit" not in json.loads(none.stdout)
    assert run_cli(tmp_path / "bravo", "join", str(tmp_path / "bravo.enroll"), "--code", invited["code"]).returncode == 0
    shutil.rmtree(tmp_path / "bravo")
    recovered = run_cli(tmp_path / "new", "recover", str(kit_file), "--code", invited["recovery_kit"]["code"])
    assert recovered.returncode == 0, recovered.stderr
    assert "users added on this node after its enrollment are not in this kit" in recovered.stdout and "user reset-secret" in recovered.stdout
    me = json.loads(run_cli(tmp_path / "new", "whoami", "--json").stdout)
    assert (me["node_id"], me["user"]) == (invited["node_id"], "bob")
    # replace-node leaves the lost node's kit naming its replacement.
    assert run_cli(alpha, "replace-node", str(elsewhere), "--code", json.loads(other.stdout)["recovery_kit"]["code"], "--to", str(tmp_path / "c2.kit")).returncode == 0
    stale = run_cli(tmp_path / "c-new", "recover", str(elsewhere), "--code", json.loads(other.stdout)["recovery_kit"]["code"])
    assert stale.returncode == 1 and "was revoked and replaced by node" in stale.stderr
