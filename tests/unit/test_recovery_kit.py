"""Recovery kits as bytes: what goes in comes out, only with its code; and the diff that tells
a point-in-time restore which messages a later change touched."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import crypto, documents
from appliance.coded import shown
from appliance.recovery_kit import KitContents, KitRejected, SealedUser, decode_contents, encode_contents, open_kit, seal_kit
from appliance.rewind import taken_at_from_name

FAST = crypto.KdfParams(1, 8192)
STR = documents.core.ScalarType.Str
key = st.binary(min_size=32, max_size=32)
users = st.builds(
    SealedUser,
    key,
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=1, max_size=120),
    st.booleans(),
    st.integers(0, 2**53),
    st.none() | st.tuples(st.binary(min_size=1, max_size=80), st.integers(0, 2**53), st.integers(0, 2**40)),
)
kits = st.builds(
    KitContents,
    workspace_name=st.text(min_size=1, max_size=64),
    workspace_key=key,
    node_name=st.text(min_size=1, max_size=64),
    node_seed=key,
    workspace_seed=st.none() | key,
    default_user=key,
    incarnation=st.binary(min_size=16, max_size=16),
    kdf=st.just(FAST),
    users=st.lists(users, max_size=4).map(tuple),
    directory=st.lists(st.tuples(st.binary(min_size=1, max_size=200), st.none() | st.binary(min_size=64, max_size=64)), max_size=5).map(tuple),
    made_at=st.integers(0, 2**53),
)


@given(kits)
@settings(max_examples=60, deadline=None)
def test_contents_come_back_as_they_went_in(kit: KitContents) -> None:
    assert decode_contents(encode_contents(kit)) == kit


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_arbitrary_bytes_are_refused_as_a_kit_not_crashed_on(data: bytes) -> None:
    with pytest.raises(KitRejected):
        open_kit(data, "ABCD-EFGH-JKMN-PQRS")


def test_a_kit_opens_with_its_code_typed_loosely_and_not_otherwise() -> None:
    kit = KitContents("acme", bytes(32), "bravo", bytes(range(32)), None, bytes(32), bytes(16), FAST, (), (), 5)
    sealed = seal_kit(encode_contents(kit), "0123456789ABCDEF", bytes(16), bytes(24), FAST)
    assert open_kit(sealed, shown("0123456789ABCDEF").lower().replace("1", "l")) == kit
    with pytest.raises(KitRejected, match="wrong recovery code"):
        open_kit(sealed, "0123456789ABCDEE")
    tampered = bytearray(sealed)
    tampered[-5] ^= 1
    with pytest.raises(KitRejected):
        open_kit(bytes(tampered), "0123456789ABCDEF")


def test_the_diff_names_the_root_keys_a_later_change_set_or_removed() -> None:
    doc = documents.new_document(bytes(16))
    with doc.transaction() as tx:
        tx.put(documents.ROOT, "01A/x", STR, "kept")
        tx.put(documents.ROOT, "01B/x", STR, "to be removed")
    before = doc.get_heads()
    with doc.transaction() as tx:
        tx.put(documents.ROOT, "01C", STR, "new")
        tx.put(documents.ROOT, "01A/r/👍", STR, "yes")
        tx.delete(documents.ROOT, "01B/x")
    assert documents.root_keys_changed(doc, before, doc.get_heads()) == {"01C", "01A/r/👍", "01B/x"}
    assert documents.root_keys_changed(doc, doc.get_heads(), doc.get_heads()) == set()
    nested = documents.new_document(bytes(16))
    with nested.transaction() as tx:
        inner = tx.put_object(documents.ROOT, "01D", documents.core.ObjType.Map)
    start = nested.get_heads()
    with nested.transaction() as tx:
        tx.put(inner, "text", STR, "below the root")
    assert documents.root_keys_changed(nested, start, nested.get_heads()) is None  # read as: anything may differ


def test_a_backup_names_when_it_was_taken() -> None:
    when = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)
    assert taken_at_from_name("rallypoint-AAAAAAA-BBBBBBB-CCCCCCC-20261207T083000Z.backup.db") == int(when.timestamp() * 1000)
    assert taken_at_from_name("renamed.db") is None
