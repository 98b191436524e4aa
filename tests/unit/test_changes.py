"""The change codec and the batch verifier: pure functions, tested without a store."""

from __future__ import annotations

import pytest
from automerge._automerge import Document
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import changes, crypto, documents, segments
from appliance.changes import SignedChange, parse_change, sign_change, verify_batch
from appliance.errors import ChangeRejected

DOC = "c0ffee/seg/000000"


def author(n: int) -> crypto.nacl.signing.SigningKey:
    return crypto.new_signing_key(bytes([n]) * 32)


def write(doc: Document, who: crypto.nacl.signing.SigningKey, texts: list[str]) -> list[SignedChange]:
    """Posts each text as one change by `who`; returns every change signed. Deterministic
    (fixed actor suffix, counted message ids) so Hypothesis sees the same bytes each run."""
    doc.set_actor(bytes(who.verify_key) + bytes(16))
    out = []
    for text in texts:
        message_id = f"{len(segments.read_messages(doc, frozenset())):026d}"
        segments.post_message(doc, message_id=message_id, author=bytes(who.verify_key).hex(), created_at=1, text=text, root_id=None, files=[], mentions=[])
        change = doc.get_last_local_change()
        assert change is not None
        out.append(SignedChange(change.bytes, sign_change(who, DOC, parse_change(change.bytes).hash)))
    return out


def allow_all(_author: bytes) -> None:
    return None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=400), min_size=1, max_size=5))
def test_parsed_header_matches_the_library_including_compressed_changes(texts: list[str]) -> None:
    doc = Document(actor_id=b"\x01" * 48)
    write(doc, author(1), texts)
    for change in doc.get_changes([]):
        header = parse_change(change.bytes)
        assert header.hash == change.hash == crypto.sha256(change.raw_bytes[8:])
        assert header.actor == change.actor_id and header.seq == change.seq
        assert list(header.deps) == list(change.deps)
        assert changes.uncompressed_chunk(change.bytes) == change.raw_bytes


def test_one_signature_vouches_for_a_run_of_the_authors_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = author(1), author(2)
    doc = Document()
    batch = write(doc, alice, [f"a{i}" for i in range(50)]) + write(doc, bob, [f"b{i}" for i in range(30)]) + write(doc, alice, ["last"])
    # Strip every signature except the newest of each actor run: still verifies.
    stripped = [SignedChange(c.data, None) for c in batch]
    for tip in (49, 79, 80):
        stripped[tip] = batch[tip]
    calls = []
    real_verify = crypto.verify
    monkeypatch.setattr(crypto, "verify", lambda *a: calls.append(1) or real_verify(*a))
    verified = verify_batch(DOC, reversed(stripped), set(), allow_all)
    assert len(verified) == 81
    # alice's two runs share one actor, so her newest change vouches for all 51 of them:
    # one verification per actor, not one per change.
    assert len(calls) == 2
    order = [v.header.hash for v in verified]
    for v in verified:  # causal order: every dependency precedes its dependant
        assert all(order.index(d) < order.index(v.header.hash) for d in v.header.deps if d in order)


def test_a_change_nobody_vouches_for_is_rejected() -> None:
    alice = author(1)
    doc = Document()
    batch = write(doc, alice, ["one", "two"])
    with pytest.raises(ChangeRejected, match="not signed"):
        verify_batch(DOC, [batch[0], SignedChange(batch[1].data, None)], set(), allow_all)


def test_signature_by_someone_else_or_for_another_document_is_rejected() -> None:
    alice, mallory = author(1), author(3)
    doc = Document()
    (change,) = write(doc, alice, ["hi"])
    header = parse_change(change.data)
    with pytest.raises(ChangeRejected):
        verify_batch(DOC, [SignedChange(change.data, sign_change(mallory, DOC, header.hash))], set(), allow_all)
    with pytest.raises(ChangeRejected):
        verify_batch(DOC, [SignedChange(change.data, sign_change(alice, "other/seg/000000", header.hash))], set(), allow_all)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_flipped_byte_is_rejected_before_it_reaches_a_document(data: st.DataObject) -> None:
    """Uncompressed and deflated changes alike. A flip inside deflate's padding bits leaves the
    change itself intact; then the verifier must hand back exactly the original change."""
    doc = Document()
    (short, long) = write(doc, author(1), ["the text that must not change", "long " * 200])
    change = data.draw(st.sampled_from([short, long]))
    original = parse_change(change.data)
    position = data.draw(st.integers(min_value=0, max_value=len(change.data) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    tampered = bytearray(change.data)
    tampered[position] ^= flip
    try:
        (verified,) = verify_batch(DOC, [SignedChange(bytes(tampered), change.signature)], {original.deps[0]} if original.deps else set(), allow_all)
    except ChangeRejected:
        return
    assert verified.header == original
    assert verified.data == changes.uncompressed_chunk(change.data)


def test_missing_dependency_unknown_author_and_duplicates() -> None:
    alice = author(1)
    doc = Document()
    first, second = write(doc, alice, ["one", "two"])
    with pytest.raises(ChangeRejected, match="lacks"):
        verify_batch(DOC, [second], set(), allow_all)
    with pytest.raises(ChangeRejected, match="no such user"):
        verify_batch(DOC, [first], set(), lambda a: "no such user")
    known = {parse_change(first.data).hash}
    assert [v.header.hash for v in verify_batch(DOC, [first, second, second], known, allow_all)] == [parse_change(second.data).hash]


def test_an_actor_id_that_names_no_author_is_rejected() -> None:
    doc = Document(actor_id=b"\x07" * 16)
    with doc.transaction() as tx:
        tx.put(documents.ROOT, "x", documents.Int, 1)
    change = doc.get_last_local_change()
    with pytest.raises(ChangeRejected, match="names no author"):
        verify_batch(DOC, [SignedChange(change.bytes, bytes(64))], set(), allow_all)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_rejected_cleanly(blob: bytes) -> None:
    with pytest.raises(ChangeRejected):
        verify_batch(DOC, [SignedChange(changes.MAGIC + blob, None)], set(), allow_all)
