"""Bytes that make the Automerge binding panic (pyo3_runtime.PanicException, a BaseException)
are refused like any bad input: the node neither crashes nor loses anything it stored.

The vectors in tests/automerge_vectors/ were found by fuzzing (see the README there)."""

from __future__ import annotations

from pathlib import Path

import pytest
from automerge._automerge import Document

from appliance import crypto, documents
from appliance.changes import SignedChange, _uleb, parse_change, sign_change, uleb128
from appliance.errors import ChangeRejected
from appliance.node import Node
from sync import stick
from sync.bundle import BundleContent, build_bundle
from sync.sneakernet import import_bundles, medium_for
from tests.conftest import FAST, PASSPHRASE

VECTORS = Path(__file__).parent / "automerge_vectors"


def chunks(data: bytes) -> list[bytes]:
    """Concatenated Automerge chunks, split by the length each one's header gives."""
    out, pos = [], 0
    while pos < len(data):
        length, body = _uleb(data, pos + 9)
        out.append(data[pos : body + length])
        pos = body + length
    return out


def restamped(changes: list[bytes], actor: bytes) -> list[bytes]:
    """The same changes under another actor id, each dependency renamed to its restamped hash
    and every checksum recomputed: what a user with that actor id would sign."""
    out: list[bytes] = []
    renamed: dict[bytes, bytes] = {}
    for change in changes:
        header = parse_change(change)
        _, pos = _uleb(change, 9)
        _, pos = _uleb(change, pos)
        pos += 32 * len(header.deps)
        actor_len, pos = _uleb(change, pos)
        rest = change[pos + actor_len :]
        body = uleb128(len(header.deps)) + b"".join(renamed.get(d, d) for d in header.deps) + uleb128(len(actor)) + actor + rest
        inner = b"\x01" + uleb128(len(body)) + body
        new = change[:4] + crypto.sha256(inner)[:4] + inner
        renamed[header.hash] = parse_change(new).hash
        out.append(new)
    return out


def test_the_vectors_really_panic_the_binding_and_are_translated() -> None:
    saved = (VECTORS / "panic-document.bin").read_bytes()
    pair = chunks((VECTORS / "panic-change-pair.bin").read_bytes())
    with pytest.raises(BaseException) as raw:
        Document.load(saved)
    assert type(raw.value).__name__ == "PanicException" and not isinstance(raw.value, Exception)
    with pytest.raises(documents.DocumentError, match="Automerge library failed"):
        documents.load_document(saved, bytes(48))
    with pytest.raises(documents.DocumentError, match="Automerge library failed"):
        documents.load_document(b"".join(pair), bytes(48))
    doc = documents.new_document(bytes(48))
    with pytest.raises(documents.DocumentError, match="Automerge library failed"):
        documents.apply_changes(doc, pair)


async def _alice_with_known_user_key(home: Path) -> tuple[Node, crypto.nacl.signing.SigningKey]:
    seeds: list[bytes] = []

    def recording_rng(n: int) -> bytes:
        value = crypto.random_bytes(n)
        seeds.append(value)
        return value

    alice = await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, rng=recording_rng)
    (user_key,) = [crypto.new_signing_key(s) for s in seeds if len(s) == 32 and bytes(crypto.new_signing_key(s).verify_key) == alice.identity.user_key]
    return alice, user_key


@pytest.mark.parametrize("threshold", [0, 10**9], ids=["workers", "in-process"])
async def test_a_signed_change_that_panics_automerge_is_rejected_by_import_and_bundle(tmp_path: Path, threshold: int) -> None:
    alice, user_key = await _alice_with_known_user_key(tmp_path / "alpha")
    enrollment = await alice.enrollment.invite("bravo", "bob", kdf=FAST)
    bob = await Node.join(tmp_path / "bob", enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST)
    bob.intake.held.threshold = threshold  # applied by a worker, or by the node's process
    async with alice, bob:
        channel = await alice.chat.create_channel("general")
        await alice.chat.post("general", "kept")
        content = await alice.exchange.delta_for([bob.identity.node_key])
        await bob.intake.import_batches(list(content.documents), wholes=content.wholes, received_from=alice.identity.node_id)
        await bob.chat.post("general", "bob's own")

        # Alice's key signs a crafted change in a new segment: authorised, well-formed, signed.
        doc_id = documents.segment_doc_id(channel.channel_id, 1)
        first, crafted = restamped(chunks((VECTORS / "panic-change-pair.bin").read_bytes()), alice.identity.user_key + bytes(16))
        signed = [SignedChange(first, None), SignedChange(crafted, sign_change(user_key, doc_id, parse_change(crafted).hash))]

        with pytest.raises(ChangeRejected, match="Automerge library failed"):
            await bob.intake.import_batches([(doc_id, signed)], received_from=alice.identity.node_id)

        root = tmp_path / "stick"
        root.mkdir()
        data = build_bundle(
            BundleContent(changes=((doc_id, tuple(signed)),)), sender_key=alice.identity.signing_key, workspace=alice.directory.current.workspace,
            recipients=[bob.identity.node_key], heads={}, created_at=alice.identity.now(), incarnation=alice.identity.incarnation, randomness=crypto.random_bytes(32),
        )  # fmt: skip
        await medium_for(bob, root).write(stick.BUNDLES, stick.anonymous_file_name(crypto.random_bytes(16)), data)
        report = await import_bundles(bob, root)
        (outcome,) = report.files
        assert outcome.outcome == "ChangeRejected" and "Automerge library failed" in outcome.reason
        assert outcome.quarantined is not None and outcome.quarantined.exists()

        # Nothing stored was lost, and the node goes on working.
        assert [m.text for m in await bob.views.read("general")] == ["kept", "bob's own"]
        await bob.chat.post("general", "still posting")
        assert doc_id not in await bob.replica.document_ids()
        assert (await bob.audit.verify()).ok
    async with await Node.open(tmp_path / "bob", PASSPHRASE) as reopened:
        assert [m.text for m in await reopened.views.read("general")] == ["kept", "bob's own", "still posting"]
