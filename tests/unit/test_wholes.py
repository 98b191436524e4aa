"""The rule that admits a segment carried whole (appliance/wholes.py): pure, over the change
headers listed from real Automerge documents, without a store."""

from __future__ import annotations

import nacl.signing
import pytest
from automerge._automerge import Document

from appliance import crypto, documents, ids, segments
from appliance.changes import ChangeHeader, sign_change
from appliance.errors import ChangeRejected
from appliance.wholes import vouch_for_whole

DOC = "c0ffee0000c0ffee0000/seg/000000"


def author(n: int) -> nacl.signing.SigningKey:
    return crypto.new_signing_key(bytes([n]) * 32)


def actor_of(who: nacl.signing.SigningKey, suffix: int = 0) -> bytes:
    return bytes(who.verify_key) + bytes([suffix]) * 16


def post(doc: Document, actor: bytes, writer: nacl.signing.SigningKey, count: int, text: str = "hi") -> None:
    """`count` messages under `actor`, each its own change, naming `writer` as their author."""
    doc.set_actor(actor)
    for _ in range(count):
        message_id = f"{len(doc.keys(documents.ROOT)):026d}"
        segments.post_message(doc, message_id=message_id, author=bytes(writer.verify_key).hex(), created_at=1, text=text, root_id=None, files=[], mentions=[])


def listed(doc: Document) -> list[ChangeHeader]:
    """What a worker lists from the loaded document: every change's header."""
    return [ChangeHeader(hash=c.hash, actor=c.actor_id, seq=c.seq, deps=tuple(c.deps)) for c in documents.load_document(doc.save(), bytes(48)).get_changes([])]


def newest_signatures(doc: Document, keys: dict[bytes, nacl.signing.SigningKey]) -> dict[bytes, bytes]:
    """Each actor's newest change, signed by the key `keys` gives for that actor."""
    newest: dict[bytes, ChangeHeader] = {}
    for header in listed(doc):
        if header.actor not in newest or header.seq > newest[header.actor].seq:
            newest[header.actor] = header
    return {header.hash: sign_change(keys[actor], DOC, header.hash) for actor, header in newest.items()}


def allow_all(_author: bytes) -> None:
    return None


def two_authors() -> tuple[Document, nacl.signing.SigningKey, nacl.signing.SigningKey]:
    alice, bob = author(1), author(2)
    doc = Document()
    post(doc, actor_of(alice), alice, 5)
    post(doc, actor_of(bob), bob, 3)
    post(doc, actor_of(alice), alice, 2)
    return doc, alice, bob


def test_a_whole_signed_by_each_actor_on_its_newest_change_is_admitted() -> None:
    doc, alice, bob = two_authors()
    signatures = newest_signatures(doc, {actor_of(alice): alice, actor_of(bob): bob})
    vouched = vouch_for_whole(DOC, listed(doc), signatures, allow_all)
    headers = listed(doc)
    assert set(vouched) == {h.hash for h in headers}
    assert set(vouched.values()) == set(signatures)
    for header in headers:  # each change is vouched for by its own actor's signed change
        assert next(h for h in headers if h.hash == vouched[header.hash]).actor == header.actor


def test_a_change_slipped_in_under_another_authors_actor_id_is_rejected_naming_that_author() -> None:
    """THE attack: member M writes a change under author A's actor id, signs its own newest
    change on top (which depends on it), and sends the segment whole with A's genuine
    signature over A's earlier newest change. M's signature covers the slipped change through
    the hash chain - but only A's own signature may vouch for A's actor."""
    a, m = author(1), author(2)
    doc = Document()
    post(doc, actor_of(a), a, 4)
    genuine = newest_signatures(doc, {actor_of(a): a})
    post(doc, actor_of(a), a, 1)  # M, holding A's actor id, writes as A
    post(doc, actor_of(m), m, 1)  # then its own change on top, which it signs
    m_newest = max((h for h in listed(doc) if h.actor == actor_of(m)), key=lambda h: h.seq)
    signatures = {**genuine, m_newest.hash: sign_change(m, DOC, m_newest.hash)}
    with pytest.raises(ChangeRejected, match=f"actor {ids.key_id(bytes(a.verify_key))} has 5 change\\(s\\) but its author signed change 4"):
        vouch_for_whole(DOC, listed(doc), signatures, allow_all)


def test_a_duplicate_sequence_number_is_rejected() -> None:
    """Two different changes under one actor with the same sequence number (forks that both
    continued the actor): the count no longer equals the signed change's sequence."""
    alice = author(1)
    doc = Document()
    post(doc, actor_of(alice), alice, 2)
    fork = documents.load_document(doc.save(), actor_of(alice))
    post(doc, actor_of(alice), alice, 1)
    post(fork, actor_of(alice), alice, 1, text="the other fork")
    headers = listed(doc) + [h for h in listed(fork) if h.seq == 3]
    assert sorted(h.seq for h in headers) == [1, 2, 3, 3]
    tip = next(h for h in listed(doc) if h.seq == 3)
    with pytest.raises(ChangeRejected, match="has 4 change\\(s\\) but its author signed change 3"):
        vouch_for_whole(DOC, headers, {tip.hash: sign_change(alice, DOC, tip.hash)}, allow_all)


def test_an_actor_without_a_signature_is_rejected() -> None:
    doc, alice, bob = two_authors()
    signatures = newest_signatures(doc, {actor_of(alice): alice, actor_of(bob): bob})
    bob_tip = next(h for h in signatures if next(x for x in listed(doc) if x.hash == h).actor == actor_of(bob))
    del signatures[bob_tip]
    with pytest.raises(ChangeRejected, match=f"actor {ids.key_id(bytes(bob.verify_key))} carry no signature"):
        vouch_for_whole(DOC, listed(doc), signatures, allow_all)


def test_a_signature_by_the_wrong_key_is_rejected() -> None:
    doc, alice, bob = two_authors()
    signatures = newest_signatures(doc, {actor_of(alice): alice, actor_of(bob): alice})  # alice signs bob's tip
    with pytest.raises(ChangeRejected, match="is not signed by its author"):
        vouch_for_whole(DOC, listed(doc), signatures, allow_all)


def test_a_signature_for_another_document_is_rejected() -> None:
    """The signing payload binds the document id: a signature from another segment does not count."""
    doc, alice, bob = two_authors()
    elsewhere = {h: sign_change(alice if h in _tips(doc, alice) else bob, "c0ffee0000c0ffee0000/seg/000001", h) for h in _tips(doc, alice) | _tips(doc, bob)}
    with pytest.raises(ChangeRejected, match="is not signed by its author"):
        vouch_for_whole(DOC, listed(doc), elsewhere, allow_all)


def _tips(doc: Document, who: nacl.signing.SigningKey) -> set[bytes]:
    mine = [h for h in listed(doc) if h.actor == actor_of(who)]
    return {max(mine, key=lambda h: h.seq).hash}


def test_a_signature_naming_a_change_the_document_lacks_is_rejected() -> None:
    doc, alice, bob = two_authors()
    signatures = newest_signatures(doc, {actor_of(alice): alice, actor_of(bob): bob})
    stray = crypto.sha256(b"not in this document")
    signatures[stray] = sign_change(alice, DOC, stray)
    with pytest.raises(ChangeRejected, match=f"change {stray.hex()[:12]}, which the document does not hold"):
        vouch_for_whole(DOC, listed(doc), signatures, allow_all)


def test_two_signatures_for_one_actor_are_rejected() -> None:
    doc, alice, bob = two_authors()
    signatures = newest_signatures(doc, {actor_of(alice): alice, actor_of(bob): bob})
    older = next(h for h in listed(doc) if h.actor == actor_of(alice) and h.seq == 3)
    signatures[older.hash] = sign_change(alice, DOC, older.hash)
    with pytest.raises(ChangeRejected, match="two signatures for actor"):
        vouch_for_whole(DOC, listed(doc), signatures, allow_all)


def test_a_refused_author_rejects_the_whole_with_the_authorisers_reason() -> None:
    doc, alice, bob = two_authors()
    signatures = newest_signatures(doc, {actor_of(alice): alice, actor_of(bob): bob})

    def revoked_bob(who: bytes) -> str | None:
        return f"author {ids.key_id(who)} is revoked" if who == bytes(bob.verify_key) else None

    with pytest.raises(ChangeRejected, match=f"author {ids.key_id(bytes(bob.verify_key))} is revoked"):
        vouch_for_whole(DOC, listed(doc), signatures, revoked_bob)


def test_an_actor_id_that_names_no_author_is_rejected() -> None:
    alice = author(1)
    doc = Document()
    post(doc, b"\x07" * 16, alice, 2)
    signatures = {h.hash: sign_change(alice, DOC, h.hash) for h in listed(doc) if h.seq == 2}
    with pytest.raises(ChangeRejected, match="actor id that names no author"):
        vouch_for_whole(DOC, listed(doc), signatures, allow_all)


def test_a_change_listed_twice_is_rejected() -> None:
    doc, alice, bob = two_authors()
    signatures = newest_signatures(doc, {actor_of(alice): alice, actor_of(bob): bob})
    headers = listed(doc)
    with pytest.raises(ChangeRejected, match="lists a change twice"):
        vouch_for_whole(DOC, [*headers, headers[0]], signatures, allow_all)


def test_an_actors_change_outside_its_signed_changes_ancestry_is_rejected() -> None:
    """Counts and sequences can add up while a change still hangs off another actor's
    history only: a header list whose first alice change is not an ancestor of her tip."""
    doc, alice, bob = two_authors()
    signatures = newest_signatures(doc, {actor_of(alice): alice, actor_of(bob): bob})
    headers = listed(doc)
    first = next(h for h in headers if h.actor == actor_of(alice) and h.seq == 1)
    # Cut the dependency edges to alice's first change: nothing signed reaches it any more.
    cut = [ChangeHeader(h.hash, h.actor, h.seq, tuple(d for d in h.deps if d != first.hash)) for h in headers]
    with pytest.raises(ChangeRejected, match=f"change {first.hash.hex()[:12]} is not covered"):
        vouch_for_whole(DOC, cut, signatures, allow_all)
