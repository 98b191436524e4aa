"""The terms-of-service codecs and their resolution (appliance/terms.py): round trips of both
records for any valid content, and every tampered, forged or malformed record refused with a
clear reason; which version is current and whose acceptance counts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import cbor, crypto, terms
from appliance.errors import InvalidInput

WORKSPACE = crypto.new_signing_key(b"w" * 32)
ADMIN = crypto.new_signing_key(b"a" * 32)
MEMBER = crypto.new_signing_key(b"m" * 32)
NODE = bytes(crypto.new_signing_key(b"n" * 32).verify_key)
WS = bytes(WORKSPACE.verify_key)

titles = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cn", "Co", "Zs", "Cf")), min_size=1, max_size=terms.MAX_TITLE)
texts = st.text(min_size=1, max_size=2000).filter(lambda s: bool(s.strip()))


def publish(version: int = 1, *, key: object = ADMIN, title: str = "Use", text: str = "Be kind.", at: int = 1000) -> terms.Terms:
    assert key is ADMIN or key is MEMBER or key is WORKSPACE
    return terms.publish_terms(key, workspace=WS, version=version, title=title, text=text, published_at=at)  # type: ignore[arg-type]


@settings(max_examples=80, deadline=None)
@given(version=st.integers(1, terms.MAX_VERSION), title=titles, text=texts, at=st.integers(0, 2**53))
def test_terms_round_trip(version: int, title: str, text: str, at: int) -> None:
    record = terms.publish_terms(ADMIN, workspace=WS, version=version, title=title, text=text, published_at=at)
    again = terms.decode_terms(record.encoded)
    assert again == record and again.encoded == record.encoded
    assert (again.version, again.title, again.text, again.issuer, again.published_at) == (version, title.strip(), text, bytes(ADMIN.verify_key), at)
    assert again.key == "terms:" + crypto.sha256(record.encoded).hex()


@settings(max_examples=80, deadline=None)
@given(version=st.integers(1, terms.MAX_VERSION), at=st.integers(0, 2**53), node=st.binary(min_size=32, max_size=32))
def test_acceptance_round_trip(version: int, at: int, node: bytes) -> None:
    record = publish(version)
    acceptance = terms.accept_terms(MEMBER, terms=record, node=node, accepted_at=at)
    again = terms.decode_acceptance(acceptance.encoded)
    assert again == acceptance
    assert (again.terms, again.version, again.user, again.node, again.accepted_at) == (record.fingerprint, version, bytes(MEMBER.verify_key), node, at)


@settings(max_examples=100, deadline=None)
@given(position=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_any_flipped_byte_is_refused(position: int, flip: int) -> None:
    for encoded, decode in ((publish().encoded, terms.decode_terms), (terms.accept_terms(MEMBER, terms=publish(), node=NODE, accepted_at=5).encoded, terms.decode_acceptance)):
        tampered = bytearray(encoded)
        tampered[position % len(tampered)] ^= flip
        with pytest.raises(terms.TermsInvalid):
            decode(bytes(tampered))  # type: ignore[operator]


def resign(encoded: bytes, key: object, domain: bytes, **changes: object) -> bytes:
    """The record's body with `changes`, signed by `key` under `domain`."""
    body_bytes, _ = cbor.decode(encoded, "test")
    body = cbor.decode(body_bytes, "test") | changes
    new_body = cbor.encode(body)
    return cbor.encode([new_body, crypto.sign(key, domain + new_body)])  # type: ignore[arg-type]


def test_an_acceptance_naming_another_user_is_refused() -> None:
    genuine = terms.accept_terms(MEMBER, terms=publish(), node=NODE, accepted_at=5)
    forged = resign(genuine.encoded, ADMIN, terms.ACCEPTANCE_DOMAIN)  # the member's name, the admin's signature
    with pytest.raises(terms.TermsInvalid, match="not signed by the user it names"):
        terms.decode_acceptance(forged)


def test_a_record_signed_under_the_other_domain_is_refused() -> None:
    """Domain separation: a terms body signed as an acceptance (or a certificate) does not verify."""
    record = publish()
    with pytest.raises(terms.TermsInvalid, match="signature does not verify"):
        terms.decode_terms(resign(record.encoded, ADMIN, terms.ACCEPTANCE_DOMAIN))
    with pytest.raises(terms.TermsInvalid, match="signature does not verify"):
        terms.decode_terms(resign(record.encoded, ADMIN, b"rallypoint/certificate/v1\x00"))
    acceptance = terms.accept_terms(MEMBER, terms=record, node=NODE, accepted_at=5)
    with pytest.raises(terms.TermsInvalid, match="not signed"):
        terms.decode_acceptance(resign(acceptance.encoded, MEMBER, terms.TERMS_DOMAIN))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"extra": 1}, "unexpected fields"),
        ({"kind": "acceptance"}, "unsupported version or kind"),
        ({"v": 2}, "unsupported version or kind"),
        ({"version": 0}, "invalid terms version"),
        ({"version": "1"}, "wrong type"),
        ({"version": True}, "only null"),
        ({"title": ""}, "invalid terms title"),
        ({"title": "two\nlines"}, "invalid terms title"),
        ({"text": " "}, "no text"),
        ({"text": "x" * (terms.MAX_TEXT_BYTES + 1)}, "too long"),
        ({"issuer": b"short"}, "not 32 bytes"),
    ],
)
def test_malformed_terms_are_refused_with_the_reason(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(terms.TermsInvalid, match=reason):
        terms.decode_terms(resign(publish().encoded, ADMIN, terms.TERMS_DOMAIN, **changes))


def test_garbage_is_refused_as_terms_invalid() -> None:
    for data in (b"", b"\x00", cbor.encode([b"x"]), cbor.encode({"v": 1})):
        with pytest.raises(terms.TermsInvalid):
            terms.decode_terms(data)
        with pytest.raises(terms.TermsInvalid):
            terms.decode_acceptance(data)


def test_publishing_checks_its_input() -> None:
    with pytest.raises(InvalidInput, match="too long"):
        publish(text="é" * (terms.MAX_TEXT_BYTES // 2 + 1))
    with pytest.raises(InvalidInput, match="version"):
        publish(version=0)
    with pytest.raises(InvalidInput, match="title"):
        publish(title="   ")


def test_the_highest_trusted_version_is_current_and_only_its_acceptances_count() -> None:
    admin, member = bytes(ADMIN.verify_key), bytes(MEMBER.verify_key)
    v1, v2 = publish(1), publish(2, at=2000)
    by_member = publish(9, key=MEMBER)
    by_workspace = publish(3, key=WORKSPACE, at=3000)
    other_workspace = terms.publish_terms(ADMIN, workspace=bytes(MEMBER.verify_key), version=50, title="x", text="y", published_at=1)
    accepted_1 = terms.accept_terms(MEMBER, terms=v1, node=NODE, accepted_at=10)
    accepted_member_terms = terms.accept_terms(MEMBER, terms=by_member, node=NODE, accepted_at=11)

    state = terms.resolve_terms(WS, {admin}, [v1, v2, by_member, other_workspace], [accepted_1, accepted_member_terms])
    assert state.current == v2 and [r.version for r in state.published] == [1, 2]
    assert state.binds(member) and state.accepted(member) is None
    assert state.latest(member) == accepted_1  # the member-signed version counts for nothing
    accepted_2 = terms.accept_terms(MEMBER, terms=v2, node=NODE, accepted_at=20)
    state = terms.resolve_terms(WS, {admin}, [v1, v2], [accepted_1, accepted_2])
    assert not state.binds(member) and state.accepted(member) == accepted_2

    state = terms.resolve_terms(WS, {admin}, [v1, v2, by_workspace], [accepted_2])
    assert state.current == by_workspace and state.binds(member)  # the workspace key publishes too
    state = terms.resolve_terms(WS, set(), [v1, v2], [accepted_2])  # the admin is no longer trusted
    assert state.current is None and not state.binds(member) and terms.NO_TERMS.current is None


def test_two_versions_published_apart_resolve_the_same_everywhere() -> None:
    one, two = publish(4, title="A", at=5), publish(4, title="B", at=5)
    for order in ([one, two], [two, one]):
        state = terms.resolve_terms(WS, {bytes(ADMIN.verify_key)}, order, [])
        assert state.current == max(one, two, key=lambda r: r.fingerprint)
