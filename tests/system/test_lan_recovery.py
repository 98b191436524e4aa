"""A node recovered from its kit - its own, or the one the admin made at its enrollment - is
refilled by one LAN session over real loopback sockets: the peer it synced with before still
believes it holds everything, until the recovered node's opening heads say otherwise (and, for
the enrollment-time kit, accepts the kit's incarnation in place of the one it knew)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from appliance.node import Attachment, Node
from appliance.recovery import recover
from tests.conftest import FAST, PASSPHRASE
from tests.system.test_lan import eventually, serving

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("made_by", ["node", "admin at enrollment"])
async def test_a_recovered_node_is_refilled_by_one_session_with_a_peer_that_believed_it_full(tmp_path: Path, made_by: str) -> None:
    alpha = await Node.init(tmp_path / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    enrollment = await alpha.enrollment.invite("bravo", "bob", kdf=FAST)
    bravo = await Node.join(tmp_path / "bravo", enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST)
    async with alpha:
        await alpha.chat.create_channel("general")
        await alpha.chat.create_channel("ops", private=True)
        await alpha.chat.add_member("ops", "bob")
        await alpha.chat.post_many("general", [f"before {i}" for i in range(300)])
        with_file = await alpha.chat.post("ops", "the plan", attachments=[Attachment("plan.txt", b"step one " * 5000)])
        async with bravo:
            async with serving(alpha) as (a, _), serving(bravo) as (b, _):
                b.dial("127.0.0.1", a.port)
                await eventually(lambda: _count(bravo, "general", 300), what="initial sync")
                await eventually(lambda: _has_blob(bravo, with_file), what="the attachment")
            assert await alpha.exchange.changes_behind(bravo.identity.node_key) == 0
            kit = await bravo.custody.recovery_kit(PASSPHRASE, kdf=FAST) if made_by == "node" else enrollment.kit
            assert kit is not None
        shutil.rmtree(tmp_path / "bravo")
        async with await recover(tmp_path / "bravo-new", kit.data, kit.code, "another passphrase", user_secret=PASSPHRASE) as again:
            assert again.identity.whoami().user_name == "bob"
            async with serving(alpha) as (a, _), serving(again) as (b, _):
                b.dial("127.0.0.1", a.port)
                await eventually(lambda: _count(again, "general", 300), what="the refill")
                await eventually(lambda: _has_blob(again, with_file), what="the attachment again")
            assert {c.name for c in await again.views.list_channels()} == {"general", "ops"}
        back = [e.detail.get("via") for e in await alpha.audit.entries() if e.action == "peer_recovered"]
        assert back == ([] if made_by == "node" else ["lan"])


async def _count(node: Node, channel: str, expected: int) -> bool:
    try:
        return len(await node.views.read(channel, limit=10_000, mark_read=False)) >= expected
    except Exception:  # noqa: BLE001 - the channel is not there yet
        return False


async def _has_blob(node: Node, message_id: str) -> bool:
    try:
        message = await node.views.message(message_id)
        return bool(message.files) and len(await node.blobs.blob(message.files[0].hash)) == len(b"step one " * 5000)
    except Exception:  # noqa: BLE001 - not there yet
        return False
