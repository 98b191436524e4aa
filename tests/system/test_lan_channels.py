"""Channel rules over a LAN session (real loopback sockets, one process): a membership change by
a non-admin is refused, audited and changes nothing; a removed member's node gets nothing new
of the channel; a direct conversation started on both nodes apart becomes one."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import documents
from appliance.errors import NotFound
from appliance.node import Node
from tests.conftest import make_workspace, sync_all
from tests.system.test_lan import eventually, serving

pytestmark = pytest.mark.timeout(120)


async def test_a_non_admins_membership_change_over_the_lan_is_refused_and_audited(tmp_path: Path) -> None:
    alpha, bravo, charlie = await make_workspace(tmp_path, "bob", "carol")
    async with alpha, bravo, charlie:
        await sync_all(alpha, bravo)
        ops = await alpha.chat.create_channel("ops", private=True)
        await alpha.chat.add_member("ops", "bob")
        await sync_all(alpha, bravo)
        carol = charlie.identity.whoami().user_key.hex()
        await bravo.replica.commit_local(documents.head_doc_id(ops.channel_id), lambda doc: documents.set_member(doc, carol, documents.ChannelRole.MEMBER))

        async def refused() -> bool:
            return "head_change_refused" in [e.action for e in await alpha.audit.entries()]

        async with serving(alpha) as (a, _), serving(bravo) as (b, _):
            b.dial("127.0.0.1", a.port)
            await eventually(refused, what="alpha to refuse bob's change")
        (summary,) = [c for c in await alpha.views.list_channels() if c.name == "ops"]
        assert summary.members == ("alice", "bob")
        entry = next(e for e in await alpha.audit.entries() if e.action == "head_change_refused")
        assert "bob is not a channel admin of #ops" in str(entry.detail["reason"]) and entry.detail["from"] == bravo.identity.node_id


async def test_a_removed_members_node_gets_nothing_new_over_the_lan(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bob")
    async with alpha, bravo:
        await alpha.chat.create_channel("ops", private=True)
        await alpha.chat.add_member("ops", "bob")
        await alpha.chat.post("ops", "before")
        await alpha.chat.create_channel("general")
        async with serving(alpha) as (a, _), serving(bravo) as (b, _):
            b.dial("127.0.0.1", a.port)

            async def has(text: str, channel: str) -> bool:
                try:
                    return text in [m.text for m in await bravo.views.read(channel, mark_read=False)]
                except NotFound:
                    return False

            await eventually(lambda: has("before", "ops"), what="the first sync")
            await alpha.chat.admin.remove_member("ops", "bob")
            await alpha.chat.post("ops", "after bob left")
            await alpha.chat.post("general", "a later post elsewhere")
            await eventually(lambda: has("a later post elsewhere", "general"), what="the later post")

            async def gone() -> bool:
                return "ops" not in [c.name for c in await bravo.views.list_channels()]

            await eventually(gone, what="bravo to learn bob was removed")
        channel_id = next(c.channel_id for c in await alpha.views.list_channels() if c.name == "ops")
        segment = documents.segment_doc_id(channel_id, 0)
        texts = [m.text for m in await alpha.views.read("ops")]
        assert texts == ["before", "after bob left"]
        assert len(await bravo.replica.changes_for(segment, [])) == 1  # "before" only


async def test_a_direct_conversation_started_apart_is_one_after_a_lan_session(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bob")
    async with alpha, bravo:
        await sync_all(alpha, bravo)
        await alpha.chat.admin.start_direct(["bob"])
        await bravo.chat.admin.start_direct(["alice"])
        await alpha.chat.post("@bob", "from alpha")
        await bravo.chat.post("@alice", "from bravo")
        async with serving(alpha) as (a, _), serving(bravo) as (b, _):
            b.dial("127.0.0.1", a.port)

            async def both(node: Node, spec: str) -> bool:
                return sorted(m.text for m in await node.views.read(spec, mark_read=False)) == ["from alpha", "from bravo"]

            await eventually(lambda: both(alpha, "@bob"), what="alpha to hold both")
            await eventually(lambda: both(bravo, "@alice"), what="bravo to hold both")
        assert [c.label for c in await alpha.views.list_channels() if c.is_direct] == ["@bob"]


async def test_an_attribute_policy_keeps_a_channel_from_a_node_over_the_lan_across_three_nodes(tmp_path: Path) -> None:
    """Alice's node serves; bob's (cleared) and carol's (not yet) dial it. #intel requires a
    clearance: it reaches bravo and never charlie, until carol's new certificate clears her."""
    secret = (("clearance", "secret"),)
    alpha, bravo, charlie = await make_workspace(tmp_path, "bob", "carol")
    async with alpha, bravo, charlie:
        await alpha.directory.set_attributes("alice", secret)
        await alpha.directory.set_attributes("bob", secret)
        intel = await alpha.chat.create_channel("intel")
        await alpha.chat.admin.set_requirements("intel", secret)
        await alpha.chat.post("intel", "briefing")
        await alpha.chat.create_channel("general")

        async def reads(node: Node, channel: str, text: str) -> bool:
            try:
                return text in [m.text for m in await node.views.read(channel, mark_read=False)]
            except NotFound:
                return False

        async with serving(alpha) as (a, _), serving(bravo) as (b, _), serving(charlie) as (c, _):
            b.dial("127.0.0.1", a.port)
            c.dial("127.0.0.1", a.port)
            await eventually(lambda: reads(bravo, "intel", "briefing"), what="#intel to reach bob's node")
            await alpha.chat.post("general", "after the briefing")  # sent after #intel: every session has passed it
            await eventually(lambda: reads(charlie, "general", "after the briefing"), what="#general to reach carol's node")
            assert not [d for d in await charlie.replica.document_ids() if d.startswith(intel.channel_id)]  # never left alpha for charlie
            await alpha.directory.set_attributes("carol", secret)  # a new certificate, travelling with the directory
            await eventually(lambda: reads(charlie, "intel", "briefing"), what="#intel to reach carol's node once she is cleared")


async def test_a_member_added_during_a_session_gets_the_channels_history_at_once(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bob")
    async with alpha, bravo:
        await alpha.chat.create_channel("ops", private=True)
        await alpha.chat.post("ops", "written before bob was in")
        await alpha.chat.create_channel("general")
        async with serving(alpha) as (a, _), serving(bravo) as (b, _):
            b.dial("127.0.0.1", a.port)
            await alpha.chat.post("general", "session up")

            async def reads(channel: str, text: str) -> bool:
                try:
                    return text in [m.text for m in await bravo.views.read(channel, mark_read=False)]
                except NotFound:
                    return False

            await eventually(lambda: reads("general", "session up"), what="the session to sync")
            await alpha.chat.add_member("ops", "bob")  # the head changes; the old segment does not
            await eventually(lambda: reads("ops", "written before bob was in"), what="#ops's history to reach bob's node")
