"""JS Automerge (the reference implementation, pinned in tests/js/package.json) reads a channel
segment as `channel export --automerge` writes it: format 2, a message and its parts."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance import cbor, segments
from tests.conftest import TESTS, make_workspace

JS = TESTS / "js"
NODE = shutil.which("node")
pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node (Node.js) is not installed: .ci/run installs nodejs and npm"),
    pytest.mark.skipif(not (JS / "node_modules" / "@automerge" / "automerge").is_dir(), reason="JS Automerge is not installed: npm ci --prefix tests/js"),
]


async def test_js_automerge_reads_an_exported_format_2_segment(tmp_path: Path) -> None:
    (alice,) = await make_workspace(tmp_path)
    async with alice:
        await alice.chat.create_channel("general")
        first = await alice.chat.post("general", "hello @alice")
        reply = await alice.chat.post("general", "a reply", reply_to=first)
        await alice.chat.edit(first, "hello again")
        await alice.chat.react(first, "👍")
        exported = await alice.replica.export_channel("general")
        me = alice.identity.user_key.hex()
    (segment_id,) = [doc_id for doc_id in exported if "/seg/" in doc_id]
    saved = tmp_path / "segment.automerge"
    saved.write_bytes(exported[segment_id])
    assert NODE is not None
    read = subprocess.run([NODE, str(JS / "read_document.mjs"), str(saved)], capture_output=True, text=True, timeout=60, check=False)
    assert read.returncode == 0, read.stderr
    root = json.loads(read.stdout)
    assert root[segments.FORMAT_KEY] == segments.FORMAT_2
    assert root[f"{first}/r/{me}/👍"] is True
    author, _, text, root_id, _, _ = segments.decode_message(bytes.fromhex(root[first]["bytes"]))
    assert (author, text, root_id) == (me, "hello @alice", None)
    assert segments.decode_message(bytes.fromhex(root[reply]["bytes"]))[2:4] == ("a reply", first)
    edited_at, text, _ = cbor.decode(bytes.fromhex(root[f"{first}/e/{me}"]["bytes"]), "edit")
    assert text == "hello again" and isinstance(edited_at, int)
