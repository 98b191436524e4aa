"""One enrollment, one machine: a join consumes its enrollment file, and two machines that
present one node identity (the file copied before its first use) are detected when they meet
a third node - over real LAN sessions or by bundle - refused, and audited on both sides."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from appliance import identity
from appliance.errors import EnrollmentRejected
from appliance.node import Node
from sync.errors import SessionError
from sync.lan import Refused, SessionUp
from sync.sneakernet import export_bundles, import_bundles
from tests.conftest import FAST, PASSPHRASE, run_cli
from tests.system.test_lan import eventually, serving, texts

pytestmark = pytest.mark.timeout(120)


async def _alpha_and_enrollment(tmp_path: Path) -> tuple[Node, Path, str]:
    alpha = await Node.init(tmp_path / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    enrollment = await alpha.enrollment.invite("bravo", "bob", kdf=FAST)
    file = tmp_path / "bravo.enroll"
    file.write_bytes(enrollment.data)
    return alpha, file, enrollment.code


async def _clones(tmp_path: Path) -> tuple[Node, Node, Node]:
    """alpha, and two homes joined from copies of one enrollment file (copied before its use)."""
    alpha, file, code = await _alpha_and_enrollment(tmp_path)
    copy = tmp_path / "copy.enroll"
    shutil.copyfile(file, copy)
    first = await Node.join(tmp_path / "bravo1", file.read_bytes(), code, PASSPHRASE, kdf=FAST)
    second = await Node.join(tmp_path / "bravo2", copy.read_bytes(), code, PASSPHRASE, kdf=FAST)
    assert first.identity.node_key == second.identity.node_key and first.identity.incarnation != second.identity.incarnation
    await alpha.chat.create_channel("general")
    await alpha.chat.post("general", "for bravo only")
    return alpha, first, second


async def _audited(node: Node, action: str) -> list[dict[str, object]]:
    return [e.detail for e in await node.audit.entries() if e.action == action]


def _audits(node: Node, action: str, at_least: int = 1) -> Callable[[], Awaitable[bool]]:
    """For `eventually`: whether `node` has audited `action` at least `at_least` times."""

    async def check() -> bool:
        return len(await _audited(node, action)) >= at_least

    return check


def test_a_join_consumes_the_enrollment_file_and_a_second_join_of_it_is_refused(tmp_path: Path) -> None:
    async def make() -> tuple[Path, str]:
        alpha, file, code = await _alpha_and_enrollment(tmp_path)
        await alpha.close()
        return file, code

    file, code = asyncio.run(make())
    joined = run_cli(tmp_path / "bravo", "join", str(file), "--code", code)
    assert joined.returncode == 0, joined.stderr
    assert "WARNING" not in joined.stderr
    assert b"node_seed" not in file.read_bytes() and len(file.read_bytes()) < 100  # the sealed keys are gone
    again = run_cli(tmp_path / "elsewhere", "join", str(file), "--code", code)
    assert again.returncode == 1 and "this enrollment file was already used (by node " in again.stderr
    assert not (tmp_path / "elsewhere" / "node.db").exists()

    async def through_the_api() -> None:
        with pytest.raises(EnrollmentRejected, match="already used"):
            await Node.join(tmp_path / "api", file.read_bytes(), code, PASSPHRASE, kdf=FAST)

    asyncio.run(through_the_api())


def test_a_file_that_cannot_be_consumed_is_reported_for_the_operator_to_destroy(tmp_path: Path) -> None:
    assert identity.consume_enrollment_file(tmp_path / "gone.enroll", "NODE", 0) is not None
    assert "Destroy it now" in identity.UNCONSUMED_WARNING


async def test_clones_meeting_a_third_node_on_the_lan_are_refused_and_audited_on_both_sides(tmp_path: Path) -> None:
    alpha, first, second = await _clones(tmp_path)
    async with alpha, first, second:
        async with serving(alpha) as (a, a_events):
            async with serving(first) as (f, _):
                f.dial("127.0.0.1", a.port)  # the first machine alpha meets is accepted
                await eventually(lambda: _has(first, "for bravo only"), what="the first clone's sync")
            assert not await _audited(alpha, "identity_conflict")

            async with serving(second) as (s, s_events):  # the second machine dials alpha
                s.dial("127.0.0.1", a.port)
                await eventually(_audits(second, "identity_conflict_reported"), what="the clone hearing why")
            (seen,) = await _audited(alpha, "identity_conflict")
            assert seen["detected"] is True and seen["via"] == "lan" and seen["incarnation"] == second.identity.incarnation.hex()
            (reported,) = await _audited(second, "identity_conflict_reported")
            assert str(reported["reason"]).startswith("identity conflict: two nodes present the identity of bravo")
            assert "general" not in [c.name for c in await second.views.list_channels()]  # nothing reached it

            # alpha dialling the clone: refused as soon as the RESPONSE shows who answers, and told
            async with serving(second) as (s, _):
                connected = len(a_events.of(SessionUp))
                with pytest.raises(SessionError, match="identity conflict"):
                    await a.connect("127.0.0.1", s.port)
                await eventually(_audits(second, "identity_conflict_reported", 2), what="the second report")
                assert len(a_events.of(SessionUp)) == connected
                assert any("identity conflict" in e.reason for e in a_events.of(Refused))

            # the first machine, accepted before, is now refused too: the identity is compromised
            async with serving(first) as (f, _):
                f.dial("127.0.0.1", a.port)
                await eventually(_audits(first, "identity_conflict_reported"), what="the first clone refused")
        (row,) = [p for p in await alpha.peers.peer_overview() if p.key == first.identity.node_key]
        assert row.conflict is not None and "rallypoint node revoke bravo" in row.conflict
        assert "identity conflict: two nodes present the identity of bravo" in run_cli(alpha.home, "peers").stdout

        # once the admin revokes that node, it is simply a revoked node
        await alpha.directory.revoke(first.identity.node_key, "identity conflict")
        (row,) = [p for p in await alpha.peers.peer_overview() if p.key == first.identity.node_key]
        assert row.trust == "revoked" and row.conflict is None
        assert (await alpha.audit.verify()).ok and (await second.audit.verify()).ok


async def test_a_clone_meeting_its_twin_is_refused_on_both_sides(tmp_path: Path) -> None:
    alpha, first, second = await _clones(tmp_path)
    async with alpha, first, second:
        async with serving(first) as (f, _), serving(second) as (s, _):
            s.dial("127.0.0.1", f.port)
            await eventually(_audits(first, "identity_conflict"), what="the first clone seeing its twin")
            await eventually(_audits(second, "identity_conflict"), what="the second clone seeing its twin")
        for node, other in ((first, second), (second, first)):
            (seen, *_) = await _audited(node, "identity_conflict")
            assert seen["node"] == node.identity.node_id and seen["incarnation"] == other.identity.incarnation.hex()


async def test_clones_by_bundle_are_refused_quarantined_and_audited(tmp_path: Path) -> None:
    alpha, first, second = await _clones(tmp_path)
    async with alpha, first, second:
        sticks = [tmp_path / f"stick{i}" for i in range(3)]
        for root in sticks:
            root.mkdir()
        await export_bundles(first, sticks[0], for_nodes=[alpha.identity.node_id])
        await export_bundles(second, sticks[1], for_nodes=[alpha.identity.node_id])
        accepted = await import_bundles(alpha, sticks[0])
        assert [f.outcome for f in accepted.files] in (["accepted"], ["duplicate"])
        refused = await import_bundles(alpha, sticks[1])
        (outcome,) = refused.files
        assert outcome.outcome == "IdentityConflict" and outcome.reason.startswith("identity conflict: two nodes present the identity of bravo")
        assert outcome.quarantined is not None and outcome.quarantined.exists()
        (seen,) = await _audited(alpha, "identity_conflict")
        assert seen["via"] == "bundle" and seen["incarnation"] == second.identity.incarnation.hex()
        # later bundles of the first machine are refused as well
        await export_bundles(first, sticks[0], for_nodes=[alpha.identity.node_id])
        (later,) = (await import_bundles(alpha, sticks[0])).files
        assert later.outcome == "IdentityConflict"

        # a bundle signed with this node's own key, from the other machine (addressed to that key)
        await export_bundles(second, sticks[2], for_nodes=[second.identity.node_id])
        (own,) = (await import_bundles(first, sticks[2])).files
        assert own.outcome == "IdentityConflict" and "another machine presents this node's own identity" in own.reason
        (mine,) = await _audited(first, "identity_conflict")
        assert mine["via"] == "bundle" and mine["incarnation"] == second.identity.incarnation.hex()


async def test_a_restored_node_keeps_its_incarnation(tmp_path: Path) -> None:
    alpha, _, _ = await _alpha_and_enrollment(tmp_path)
    backups = tmp_path / "backups"
    backups.mkdir()
    async with alpha:
        info = await alpha.custody.backup(backups)
        incarnation = alpha.identity.incarnation
    async with await Node.restore(tmp_path / "restored", info.path, PASSPHRASE) as restored:
        assert restored.identity.incarnation == incarnation


async def _has(node: Node, text: str) -> bool:
    try:
        return text in await texts(node)
    except Exception:
        return False

