"""Recovery kits as bytes: what goes in comes out, only with its code; and the diff that tells
a point-in-time restore which messages a later change touched."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import cbor, certs, coded, crypto, documents
from appliance.coded import shown
from appliance.errors import CertificateInvalid, InvalidInput
from appliance.recovery_kit import KitContents, KitKind, KitRejected, SealedUser, decode_contents, encode_contents, open_kit, replaced_marker, seal_kit
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

enrollment_kits = st.tuples(kits, key).map(
    lambda pair: dataclasses.replace(
        pair[0], kind=KitKind.ENROLLMENT, first_user_seed=pair[1], default_user=bytes(crypto.new_signing_key(pair[1]).verify_key), users=(), workspace_seed=None
    )
)


@given(kits | enrollment_kits)
@settings(max_examples=60, deadline=None)
def test_contents_come_back_as_they_went_in(kit: KitContents) -> None:
    assert decode_contents(encode_contents(kit)) == kit


def test_an_enrollment_kit_brings_back_its_first_user_and_its_kind_must_match_its_keys() -> None:
    seed = bytes(range(32))
    first = bytes(crypto.new_signing_key(seed).verify_key)
    kit = KitContents("acme", bytes(32), "bravo", bytes(32), None, first, bytes(16), FAST, (), (), 5, KitKind.ENROLLMENT, seed)
    assert decode_contents(encode_contents(kit)).user_keys == (first,)
    for bad in (dataclasses.replace(kit, first_user_seed=None), dataclasses.replace(kit, kind=KitKind.NODE), dataclasses.replace(kit, default_user=bytes(32))):
        with pytest.raises(KitRejected, match="damaged"):
            decode_contents(encode_contents(bad))
    with pytest.raises(KitRejected, match="damaged"):
        decode_contents(encode_contents(dataclasses.replace(kit, first_user_seed=b"short")))


def test_a_node_kit_of_the_previous_format_is_still_read() -> None:
    kit = KitContents("acme", bytes(32), "bravo", bytes(range(32)), None, bytes(32), bytes(16), FAST, (), (), 5)
    fields = cbor.decode(encode_contents(kit), "kit")
    old = {k: v for k, v in fields.items() if k not in ("kind", "first_user_seed")}
    sealed = coded.seal("rallypoint-recovery-kit/1", cbor.encode(old), "0123456789ABCDEF", bytes(16), bytes(24), FAST)
    assert open_kit(sealed, "0123-4567-89AB-CDEF") == kit
    with pytest.raises(KitRejected, match="unsupported version"):
        open_kit(coded.seal("rallypoint-recovery-kit/9", cbor.encode(old), "0123456789ABCDEF", bytes(16), bytes(24), FAST), "0123456789ABCDEF")


def test_the_kit_of_a_replaced_node_says_by_whom() -> None:
    with pytest.raises(KitRejected, match="node OLD was revoked and replaced by node NEW at 2026-12-07 08:30 UTC"):
        open_kit(replaced_marker("OLD", "NEW", int(datetime(2026, 12, 7, 8, 30, tzinfo=UTC).timestamp() * 1000)), "anything")


def test_a_node_certificate_commits_to_its_recovery_incarnation_and_only_a_node_certificate() -> None:
    admin = crypto.new_signing_key(bytes(32))
    incarnation = bytes(range(16))
    cert = certs.issue_certificate(
        admin, workspace=bytes(32), kind=certs.SubjectKind.NODE, key=bytes(31) + b"\x01", name="bravo", role=certs.Role.NODE, issued_at=1,
        recovery=certs.recovery_commitment(incarnation),
    )
    again = certs.decode_certificate(cert.encoded)
    assert again.recovers_as(incarnation) and not again.recovers_as(bytes(16))
    plain = certs.issue_certificate(admin, workspace=bytes(32), kind=certs.SubjectKind.NODE, key=bytes(32), name="bravo", role=certs.Role.NODE, issued_at=1)
    assert plain.recovery is None and not plain.recovers_as(incarnation)
    with pytest.raises(InvalidInput):
        certs.issue_certificate(
            admin, workspace=bytes(32), kind=certs.SubjectKind.USER, key=bytes(32), name="bob", role=certs.Role.MEMBER, issued_at=1, recovery=certs.recovery_commitment(incarnation)
        )
    # A user certificate carrying one, signed by hand, is refused on decoding.
    body = cbor.encode({"v": 1, "kind": "user", "workspace": bytes(32), "key": bytes(32), "name": "bob", "role": "member", "issuer": bytes(admin.verify_key),
                        "issued_at": 1, "expires_at": None, "recovery": bytes(32)})
    with pytest.raises(CertificateInvalid, match="unexpected fields"):
        certs.decode_certificate(cbor.encode([body, crypto.sign(admin, certs.CERT_DOMAIN + body)]))


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
