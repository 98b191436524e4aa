"""Audit trails that travel: each node's trail reaches the nodes that serve an admin by bundle,
relayed too, never a member-only node; each copy is verified against its origin's key, so an
edit of the stored rows with the hashes recomputed is named; a bundle with a forged or gapped
trail is refused, audited, and nothing of it is stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance import audit, crypto
from appliance.audit_feed import AuditCarry, FeedPart, verify_feed
from appliance.errors import PermissionDenied
from appliance.model import NodeTrail
from appliance.node import Node
from sync import stick
from sync.bundle import BundleContent, build_bundle
from sync.sneakernet import export_bundles, import_bundles, medium_for
from tests.conftest import FAST, PASSPHRASE, connect_node_db, run_cli, sync_all


async def admin_workspace(root: Path) -> tuple[Node, Node, Node, Node]:
    """alpha (alice, admin), bravo (bob, admin), charlie (carol, member), delta (dave, admin);
    every node knows every other's certificate (the directory synced directly, no trails)."""
    alpha = await Node.init(root / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    joined = []
    for node_name, user, role in (("bravo", "bob", "admin"), ("charlie", "carol", "member"), ("delta", "dave", "admin")):
        enrollment = await alpha.enrollment.invite(node_name, user, role, kdf=FAST)
        joined.append(await Node.join(root / node_name, enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST))
    for node in joined:
        await sync_all(alpha, node)
    bravo, charlie, delta = joined
    return alpha, bravo, charlie, delta


def stick_at(root: Path) -> Path:
    path = root / "stick"
    path.mkdir(exist_ok=True)
    return path


async def carry(source: Node, target: Node, root: Path) -> None:
    """Bundles from `source` for `target` only, imported by `target`."""
    where = stick_at(root)
    await export_bundles(source, where, for_nodes=[target.identity.node_id])
    report = await import_bundles(target, where)
    assert not report.rejected, [(f.outcome, f.reason) for f in report.rejected]


def trail_of(trails: list[NodeTrail], node: Node) -> NodeTrail:
    return next(t for t in trails if t.node_id == node.identity.node_id)


def stored_rows(node: Node, origin: Node) -> list[tuple[int, str, str]]:
    with connect_node_db(node.home / "node.db") as conn:
        return conn.execute("SELECT seq, action, received_from FROM workspace_audit WHERE origin = ? ORDER BY seq", (origin.identity.node_key,)).fetchall()


async def test_a_trail_reaches_admin_nodes_relayed_and_never_a_member_only_node(tmp_path: Path) -> None:
    alpha, bravo, charlie, delta = await admin_workspace(tmp_path)
    async with alpha, bravo, charlie, delta:
        await alpha.directory.add_user("erin")
        own = [e.action for e in await alpha.audit.entries()]
        await carry(alpha, bravo, tmp_path)
        await carry(alpha, charlie, tmp_path)
        at_bravo = trail_of(await bravo.audit.workspace(), alpha)
        assert at_bravo.ok and at_bravo.problem is None and not at_bravo.this_node
        assert [e.action for e in at_bravo.entries][: len(own)] == own  # then the export audited itself
        assert {e.received_from for e in at_bravo.entries} == {alpha.identity.node_id}
        assert [t.node_id for t in await charlie.audit.verify_all()] == [charlie.identity.node_id]  # its own only
        with pytest.raises(PermissionDenied):  # and the workspace view is for admins
            await charlie.audit.workspace()
        assert (await charlie.audit.entries())[-1].action == "permission_denied"
        assert stored_rows(charlie, alpha) == []
        # bravo relays alpha's trail, and its own, to delta; delta checks both against their keys.
        await carry(bravo, delta, tmp_path)
        at_delta = {t.node_id: t for t in await delta.audit.workspace()}
        assert at_delta[alpha.identity.node_id].ok and at_delta[bravo.identity.node_id].ok
        assert at_delta[alpha.identity.node_id].count == at_bravo.count
        assert {e.received_from for e in at_delta[alpha.identity.node_id].entries} == {bravo.identity.node_id}
        assert at_delta[alpha.identity.node_id].entries[0].actor_name == "alice"
        # What charlie itself writes reaches bravo (an admin's node), through alpha too.
        await carry(charlie, alpha, tmp_path)
        await carry(alpha, bravo, tmp_path)
        assert trail_of(await bravo.audit.workspace(), charlie).ok
        assert stored_rows(charlie, bravo) == [] and stored_rows(charlie, charlie) == []


async def test_what_a_peer_holds_comes_from_its_acknowledgement_so_a_lost_bundle_leaves_no_gap(tmp_path: Path) -> None:
    alpha, bravo, charlie, delta = await admin_workspace(tmp_path)
    async with alpha, bravo, charlie, delta:
        lost = tmp_path / "lost"
        lost.mkdir()
        await export_bundles(alpha, lost, for_nodes=[bravo.identity.node_id])  # this stick never arrives
        await alpha.directory.add_user("erin")
        sent = await alpha.audit.feeds.carry_for(bravo.identity.node_key)
        assert sent.parts[0].entries[0].seq == 1  # nothing acknowledged yet: from the start again
        small = await alpha.audit.feeds.carry_for(bravo.identity.node_key, max_bytes=900)  # a LAN message's share, say
        assert 0 < len(small.parts[0].entries) < len(sent.parts[0].entries) and small.held == sent.held
        await carry(alpha, bravo, tmp_path)
        assert trail_of(await bravo.audit.workspace(), alpha).ok
        # bravo's bundle back acknowledges what it holds; alpha then sends only what is newer.
        await carry(bravo, alpha, tmp_path)
        held = trail_of(await bravo.audit.workspace(), alpha).count
        again = await alpha.audit.feeds.carry_for(bravo.identity.node_key)
        assert [p.entries[0].seq for p in again.parts if p.origin == alpha.identity.node_key] == [held + 1]
        # The lost stick turning up late changes nothing: the entries bravo holds are skipped.
        report = await import_bundles(bravo, lost)
        assert not report.rejected
        assert trail_of(await bravo.audit.workspace(), alpha).count == held


def recompute(db: Path, origin: bytes, seq: int, detail: str) -> None:
    """The attack on a copy: entry `seq` of `origin`'s trail edited in workspace_audit, every
    later hash recomputed so links and hashes check out (signatures kept)."""
    with connect_node_db(db) as conn:
        rows = conn.execute("SELECT seq, at, actor, action, detail, prev_hash FROM workspace_audit WHERE origin = ? AND seq >= ? ORDER BY seq", (origin, seq)).fetchall()
        prev = rows[0][5]
        for row_seq, at, actor, action, old, _ in rows:
            text = detail if row_seq == seq else old
            digest = audit.entry_hash(row_seq, at, actor, action, text, prev)
            conn.execute("UPDATE workspace_audit SET detail = ?, prev_hash = ?, hash = ? WHERE origin = ? AND seq = ?", (text, prev, digest, origin, row_seq))
            prev = digest


async def test_an_edited_copy_with_its_hashes_recomputed_names_the_first_bad_entry(tmp_path: Path) -> None:
    alpha, bravo, charlie, delta = await admin_workspace(tmp_path)
    async with alpha, bravo, charlie, delta:
        await alpha.directory.add_user("erin")
        await carry(alpha, bravo, tmp_path)
        before = trail_of(await bravo.audit.workspace(), alpha)
        assert before.ok
        edited = next(e.seq for e in before.entries if e.action == "user_added")
    recompute(bravo.home / "node.db", alpha.identity.node_key, edited, '{"user":"mallory"}')
    async with await Node.open(bravo.home, PASSPHRASE) as reopened:
        after = trail_of(await reopened.audit.workspace(), alpha)
        assert not after.ok and after.verified == edited - 1
        assert after.problem is not None and after.problem.startswith(f"entry {edited} ")
        assert trail_of(await reopened.audit.workspace(), reopened).ok  # bravo's own chain is intact
    # The same attack on alpha's own log is named on alpha, and in the copy bravo receives next.
    with connect_node_db(alpha.home / "node.db") as conn:
        rows = conn.execute("SELECT seq, at, actor, action, detail, prev_hash FROM audit_log WHERE seq >= 2 ORDER BY seq").fetchall()
        prev = rows[0][5]
        for seq, at, actor, action, old, _ in rows:
            text = '{"forged":true}' if seq == 2 else old
            digest = audit.entry_hash(seq, at, actor, action, text, prev)
            conn.execute("UPDATE audit_log SET detail = ?, prev_hash = ?, hash = ? WHERE seq = ?", (text, prev, digest, seq))
            prev = digest
    async with await Node.open(alpha.home, PASSPHRASE) as reopened:
        mine = trail_of(await reopened.audit.workspace(), reopened)
        assert not mine.ok and mine.problem is not None and mine.problem.startswith("entry 2 ")


async def forged_bundle(sender: Node, target: Node, part: FeedPart, where: Path) -> None:
    """A bundle properly signed by `sender` (a trusted node gone bad, or its stolen key) that
    carries `part` as the audit trail of some node."""
    data = build_bundle(
        BundleContent(audit=AuditCarry({}, (part,))),
        sender_key=sender.identity.signing_key,
        workspace=sender.directory.current.workspace,
        recipients=[target.identity.node_key],
        heads={},
        created_at=sender.identity.now(),
        incarnation=sender.identity.incarnation,
        randomness=crypto.random_bytes(32),
    )
    where.mkdir(exist_ok=True)
    await medium_for(target, where).write(stick.BUNDLES, stick.anonymous_file_name(crypto.random_bytes(16)), data)


async def test_a_forged_or_gapped_trail_is_refused_audited_and_nothing_stored(tmp_path: Path) -> None:
    alpha, bravo, charlie, delta = await admin_workspace(tmp_path)
    async with alpha, bravo, charlie, delta:
        await alpha.directory.add_user("erin")
        real = (await alpha.audit.feeds.carry_for(bravo.identity.node_key)).parts[0]
        assert real.origin == alpha.identity.node_key and verify_feed(real.entries, real.origin).ok
        first = real.entries[0]
        forged_first = audit.make_entry(None, first.at, first.actor, "user_added", {"user": "mallory"}, delta.identity.signing_key)
        cases = {
            "signature": FeedPart(real.origin, (forged_first, *real.entries[1:])),
            "unknown": FeedPart(bytes(crypto.new_signing_key(bytes(32)).verify_key), (audit.make_entry(None, 1, "-", "init", {}, crypto.new_signing_key(bytes(32))),)),
        }
        for index, (case, part) in enumerate(cases.items()):
            where = tmp_path / f"stick-{case}"
            await forged_bundle(delta, bravo, part, where)
            report = await import_bundles(bravo, where)
            assert [f.outcome for f in report.files] == ["AuditTrailRefused"], case
            reason = report.files[0].reason
            assert {"signature": "entry 1 was altered: its signature", "unknown": "never certified"}[case] in reason, reason
            assert stored_rows(bravo, alpha) == []
            rejected = [e for e in await bravo.audit.entries() if e.action == "bundle_rejected"]
            assert len(rejected) == index + 1 and rejected[-1].detail["outcome"] == "AuditTrailRefused"
        with connect_node_db(bravo.home / "node.db") as conn:
            assert conn.execute("SELECT count(*) FROM workspace_audit").fetchone() == (0,)
        # A gap (bravo holds less than it acknowledged: restored from a backup) skips that
        # trail, stores nothing of it, and the rest of the bundle is accepted and audited so.
        await forged_bundle(alpha, bravo, FeedPart(real.origin, real.entries[2:]), tmp_path / "stick-gap")
        report = await import_bundles(bravo, tmp_path / "stick-gap")
        assert [f.outcome for f in report.files] == ["duplicate"] and stored_rows(bravo, alpha) == []
        accepted = [e for e in await bravo.audit.entries() if e.action in ("bundle_accepted", "bundle_duplicate")][-1]
        assert accepted.detail["audit_skipped"] == {alpha.identity.node_id: "entries 1 to 2 are missing (a gap)"}
        # The real trail is accepted afterwards.
        await carry(alpha, bravo, tmp_path)
        assert trail_of(await bravo.audit.workspace(), alpha).ok


async def test_exporting_bundles_is_audited(tmp_path: Path) -> None:
    alpha, bravo, charlie, delta = await admin_workspace(tmp_path)
    async with alpha, bravo, charlie, delta:
        await export_bundles(alpha, stick_at(tmp_path), for_nodes=[bravo.identity.node_id])
        exported = [e for e in await alpha.audit.entries() if e.action == "bundle_exported"]
        assert len(exported) == 1
        detail = exported[0].detail
        assert detail["for"] == [bravo.identity.node_id] and detail["bundles"] == 1 and json.dumps(detail)
        assert isinstance(detail["audit_entries"], int) and detail["audit_entries"] > 0


def reverify(lines: list[str]) -> dict[str, audit.AuditVerdict]:
    """What an auditor does with the export alone: each origin's entries rebuilt from their
    JSON lines, hashes recomputed by the published rule, signatures checked with the origin's key."""
    by_origin: dict[str, list[dict[str, object]]] = {}
    for line in lines:
        row = json.loads(line)
        by_origin.setdefault(str(row["origin_key"]), []).append(row)
    verdicts = {}
    for origin_hex, rows in by_origin.items():
        entries = [
            audit.AuditEntry(
                int(str(r["seq"])), int(str(r["at_ms"])), str(r["actor"]), str(r["action"]), str(r["detail"]),
                bytes.fromhex(str(r["prev_hash"])), bytes.fromhex(str(r["hash"])), None if r["signature"] is None else bytes.fromhex(str(r["signature"])),
            )
            for r in rows
        ]  # fmt: skip
        verdicts[origin_hex] = verify_feed(entries, bytes.fromhex(origin_hex))
    return verdicts


async def test_the_cli_lists_verifies_and_exports_the_workspace_trail(tmp_path: Path) -> None:
    alpha, bravo, charlie, delta = await admin_workspace(tmp_path)
    async with alpha, bravo, charlie, delta:
        await alpha.directory.add_user("erin")
        await carry(alpha, bravo, tmp_path)
        alpha_key, alpha_id = alpha.identity.node_key, alpha.identity.node_id
    listing = run_cli(bravo.home, "audit", "--workspace")
    assert listing.returncode == 0, listing.stderr
    assert f"{alpha_id} alpha: intact" in listing.stdout and "user_added" in listing.stdout
    exported = run_cli(bravo.home, "audit", "export", "--workspace")
    assert exported.returncode == 0, exported.stderr
    export_file = tmp_path / "trail.jsonl"
    export_file.write_text(exported.stdout)
    verdicts = reverify(export_file.read_text().splitlines())
    assert set(verdicts) == {alpha_key.hex(), bravo.identity.node_key.hex()} and all(v.ok for v in verdicts.values())
    first = json.loads(export_file.read_text().splitlines()[0])
    assert first["origin"] == bravo.identity.node_id and first["at"].endswith("Z") and "." in first["at"]
    alpha_rows = [json.loads(line) for line in export_file.read_text().splitlines() if json.loads(line)["origin"] == alpha_id]
    assert alpha_rows[0]["actor_name"] == "alice" and alpha_rows[0]["received_from"] == alpha_id and alpha_rows[0]["received_at"]
    only = run_cli(bravo.home, "audit", "export", "--node", "alpha", "--since", "2000-01-01")
    assert {json.loads(line)["origin"] for line in only.stdout.splitlines()} == {alpha_id}
    assert run_cli(bravo.home, "audit", "export", "--node", "alpha", "--since", "2999-01-01").stdout == ""
    mine = run_cli(bravo.home, "audit", "export")
    assert {json.loads(line)["origin"] for line in mine.stdout.splitlines()} == {bravo.identity.node_id}
    logged = json.loads(run_cli(bravo.home, "audit", "--json").stdout)[-1]
    assert logged["action"] == "audit_exported" and logged["detail"]["nodes"] == [bravo.identity.node_id]
    assert run_cli(bravo.home, "audit", "--verify").returncode == 0
    # An edited export no longer verifies, offline: the auditor sees it without the node.
    edited = [line.replace('\\"user\\":\\"erin\\"', '\\"user\\":\\"mallory\\"') for line in export_file.read_text().splitlines()]
    assert edited != export_file.read_text().splitlines() and not reverify(edited)[alpha_key.hex()].ok
    # An edited copy in bravo's store: --verify and --workspace fail, naming the entry.
    seq = next(r["seq"] for r in alpha_rows if r["action"] == "user_added")
    recompute(bravo.home / "node.db", alpha_key, int(str(seq)), '{"user":"mallory"}')
    verified = run_cli(bravo.home, "audit", "--verify")
    assert verified.returncode == 1 and f"held of {alpha_id} alpha: BROKEN after {int(str(seq)) - 1} good entries: entry {seq} " in verified.stdout
    assert run_cli(bravo.home, "audit", "--workspace").returncode == 1


async def test_a_revoked_nodes_trail_is_kept_verified_and_marked_revoked(tmp_path: Path) -> None:
    """What a revoked node wrote while it was trusted still verifies against the key the
    directory certified: relayed after the revocation, it is kept and shown as a revoked node's."""
    alpha, bravo, charlie, delta = await admin_workspace(tmp_path)
    async with alpha, bravo, charlie, delta:
        assert (await alpha.audit.feeds.carry_for(charlie.identity.node_key)).parts == ()  # a member's node: none
        await charlie.chat.create_channel("field")
        await carry(charlie, alpha, tmp_path)
        await alpha.directory.revoke(charlie.identity.node_key, "lost in the field")
        await carry(alpha, bravo, tmp_path)  # the revocation and charlie's trail, in one bundle
        trail = trail_of(await bravo.audit.workspace(), charlie)
        assert trail.revoked and trail.ok and any(e.action == "channel_created" for e in trail.entries)
        assert {e.received_from for e in trail.entries} == {alpha.identity.node_id}


async def test_a_node_restored_from_a_backup_supersedes_its_lost_history_on_every_admin_node(tmp_path: Path) -> None:
    """bravo's trail reaches alpha and, relayed, delta; bravo is restored from an older backup
    and goes on: its branch from its signed `restored` entry supersedes the lost history on
    alpha (kept apart, shown, audited), alpha relays it to delta, which held the lost history;
    the lost history offered back changes nothing, and nothing is sent twice."""
    alpha, bravo, charlie, delta = await admin_workspace(tmp_path)
    backups = tmp_path / "backups"
    backups.mkdir()
    async with alpha, charlie, delta:
        async with bravo:
            taken = await bravo.custody.backup(backups)
            for n in range(4):
                await bravo.chat.create_channel(f"before-{n}")
            await carry(bravo, alpha, tmp_path)
            await carry(alpha, delta, tmp_path)
            lost = stored_rows(alpha, bravo)
        assert stored_rows(delta, bravo) == [(seq, action, alpha.identity.node_id) for seq, action, _ in lost]
        restored = await Node.restore(tmp_path / "bravo-again", taken.path, PASSPHRASE)
        async with restored:
            await restored.chat.create_channel("after-0")
            own = [(e.seq, e.action) for e in await restored.audit.entries()]
            at = next(seq for seq, action in own if action == "restored")
            assert at <= len(lost)  # the restored branch parts from what alpha holds
            await carry(restored, alpha, tmp_path)
            assert [(seq, action) for seq, action, _ in stored_rows(alpha, bravo)] == own
            await carry(alpha, delta, tmp_path)
            assert [(seq, action) for seq, action, _ in stored_rows(delta, bravo)] == own
            await carry(delta, alpha, tmp_path)  # delta's copy is alpha's: nothing changes
            await carry(alpha, restored, tmp_path)  # alpha acknowledges bravo's new branch
            held = len(stored_rows(alpha, bravo))
            await carry(restored, alpha, tmp_path)  # only what bravo wrote since: nothing twice
            sent = [e.detail for e in await restored.audit.entries() if e.action == "bundle_exported"][-1]
            assert sent["audit_entries"] == len(stored_rows(alpha, bravo)) - held > 0
            assert [(seq, action) for seq, action, _ in stored_rows(alpha, bravo)] == [(e.seq, e.action) for e in await restored.audit.entries()][:-1]
        trail = trail_of(await alpha.audit.workspace(), bravo)
        assert trail.ok and trail.count == len(stored_rows(alpha, bravo)) > len(own)
        assert [(e.seq, e.action) for e in trail.superseded] == [(seq, action) for seq, action, _ in lost if seq >= at]
        assert {e.superseded_by for e in trail.superseded} == {bravo.identity.node_id}
        superseded = [e.detail for e in await alpha.audit.entries() if e.action == "audit_trail_superseded"]
        assert superseded == [{"node": bravo.identity.node_id, "from_seq": at, "kept_apart": len(lost) - at + 1, "from": bravo.identity.node_id, "restored_at_seq": at}]
        assert len([e for e in await delta.audit.entries() if e.action == "audit_trail_superseded"]) == 1
        # An entry kept apart is evidence: an edit of it is named.
        with connect_node_db(alpha.home / "node.db") as conn:
            conn.execute("UPDATE audit_superseded SET detail = '{}' WHERE seq = ?", (at,))
        edited = trail_of(await alpha.audit.workspace(), bravo)
        assert not edited.ok and edited.problem == f"superseded entry {at} was altered"

