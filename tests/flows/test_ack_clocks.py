"""Acknowledgements do not depend on clocks agreeing (issue 13, point 12).

A bundle's header heads and a LAN session's heads tell the receiver what the sender holds;
the receiver's next delta for that sender is what those heads lack. Field boxes drift: a
sender whose clock ran a day ahead once, or whose clock was set back a day, must not freeze
what the receiver believes it holds (its deltas would then re-send everything since)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.node import Node, wall_clock_ms
from sync.sneakernet import export_bundles, import_bundles
from tests.conftest import PASSPHRASE, make_workspace

DAY_MS = 86_400_000
ROUNDS = 6
POSTS_PER_ROUND = 20


def skewed_clock(offset_ms: int) -> Callable[[], int]:
    return lambda: wall_clock_ms() + offset_ms


@pytest.mark.parametrize("acker", ["alice", "bob"])
@pytest.mark.parametrize(
    ("first_offset", "later_offset"),
    [(DAY_MS, 0), (0, -DAY_MS)],
    ids=["ahead-then-right", "right-then-behind"],
)
async def test_a_skewed_senders_acknowledgements_keep_deltas_small(tmp_path: Path, acker: str, first_offset: int, later_offset: int) -> None:
    """The acker's first bundle is written with one clock, its later ones with a clock a day
    earlier than that (a clock a day ahead, then corrected; or a right clock set back a day).
    The other node posts 20 messages a round: each of its bundles carries those 20 changes and
    nothing it sent before, because the acker acknowledged them."""
    alice, bob = await make_workspace(tmp_path, "bob")
    nodes = {"alice": alice, "bob": bob}
    acker_node = nodes[acker]
    poster = bob if acker == "alice" else alice
    root = tmp_path / "stick"
    root.mkdir()
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.post("general", "the segment exists on both nodes before the skew")
        await export_bundles(alice, root)
        await import_bundles(bob, root)
        await export_bundles(bob, root)
        await import_bundles(alice, root)

        await export_bundles(acker_node, root, clock=skewed_clock(first_offset))
        assert [f.outcome for f in (await import_bundles(poster, root)).files] in (["accepted"], ["duplicate"])

        sent: list[int] = []
        for round_ in range(ROUNDS):
            await poster.chat.post_many("general", [f"round {round_} post {i}" for i in range(POSTS_PER_ROUND)])
            sent.append((await export_bundles(poster, root)).changes)
            await import_bundles(acker_node, root)
            await export_bundles(acker_node, root, clock=skewed_clock(later_offset))
            await import_bundles(poster, root)
        assert sent == [POSTS_PER_ROUND] * ROUNDS
        assert await poster.exchange.changes_behind(acker_node.identity.node_key) == 0


async def test_a_lan_acknowledgement_counts_after_a_bundle_from_a_clock_ahead(tmp_path: Path) -> None:
    """A LAN acknowledgement (recorded when it arrives, by the receiver's clock) after a
    bundle whose sender's clock ran a day ahead still moves what the receiver believes."""
    alice, bob = await make_workspace(tmp_path, "bob")
    root = tmp_path / "stick"
    root.mkdir()
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.post("general", "the segment exists on both nodes before the skew")
        await export_bundles(alice, root)
        await import_bundles(bob, root)
        await export_bundles(bob, root, clock=skewed_clock(DAY_MS))
        await import_bundles(alice, root)
        assert await alice.exchange.changes_behind(bob.identity.node_key) == 0

        await alice.chat.post_many("general", [f"post {i}" for i in range(POSTS_PER_ROUND)])
        assert await alice.exchange.changes_behind(bob.identity.node_key) == POSTS_PER_ROUND
        await export_bundles(alice, root)
        await import_bundles(bob, root)
        # What bob's LAN session would tell alice: his heads of every document he may share.
        await alice.exchange.record_peer_heads(bob.identity.node_key, await bob.exchange.heads_for(alice.identity.node_key))
        assert await alice.exchange.changes_behind(bob.identity.node_key) == 0


async def test_a_peer_restored_from_a_backup_is_sent_what_it_lost(tmp_path: Path) -> None:
    """Why the newest report to arrive wins rather than the larger of two: a peer restored
    from a backup holds less than it acknowledged before, and its first bundle says so; were
    the earlier, larger acknowledgement kept, it would never be sent what it lost."""
    alice, bob = await make_workspace(tmp_path, "bob")
    root = tmp_path / "stick"
    root.mkdir()
    backups = tmp_path / "backups"
    backups.mkdir()
    async with bob:
        async with alice:
            await alice.chat.create_channel("general")
            await alice.chat.post("general", "before the backup")
            await export_bundles(alice, root)
            await import_bundles(bob, root)
            taken = await alice.custody.backup(backups)
            await bob.chat.post_many("general", [f"after the backup {i}" for i in range(POSTS_PER_ROUND)])
            await export_bundles(bob, root)
            await import_bundles(alice, root)
            await export_bundles(alice, root)
            await import_bundles(bob, root)
            assert await bob.exchange.changes_behind(alice.identity.node_key) == 0
        async with await Node.restore(tmp_path / "rebuilt", taken.path, PASSPHRASE) as restored:
            assert len(await restored.views.read("general", limit=100, mark_read=False)) == 1
            await export_bundles(restored, root)
            await import_bundles(bob, root)
            assert await bob.exchange.changes_behind(restored.identity.node_key) == POSTS_PER_ROUND
            await export_bundles(bob, root)
            await import_bundles(restored, root)
            assert len(await restored.views.read("general", limit=100, mark_read=False)) == 1 + POSTS_PER_ROUND
