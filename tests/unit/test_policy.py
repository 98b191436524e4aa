"""Attribute policies: the attribute codec a channel head holds, and attributes as a signed,
optional certificate field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance import cbor, certs, crypto, policy
from appliance.errors import CertificateInvalid, InvalidInput

KEY = st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True)
VALUE = st.from_regex(r"[A-Za-z0-9.:/+_-]{1,64}", fullmatch=True)
ATTRIBUTES = st.dictionaries(KEY, VALUE, max_size=policy.MAX_ATTRIBUTES)
ADMIN = crypto.new_signing_key(bytes([1]) * 32)
WS = bytes(crypto.new_signing_key(bytes([2]) * 32).verify_key)


def user_cert(attributes: policy.Attributes) -> certs.Certificate:
    subject = bytes(crypto.new_signing_key(bytes([3]) * 32).verify_key)
    return certs.issue_certificate(ADMIN, workspace=WS, kind=certs.SubjectKind.USER, key=subject, name="dave", role=certs.Role.MEMBER, issued_at=5, attributes=attributes)


@given(ATTRIBUTES)
def test_a_requirement_round_trips_in_one_spelling(found: dict[str, str]) -> None:
    attributes = policy.check_attributes(found.items())
    text = policy.encode(attributes)
    assert policy.decode(text) == attributes == tuple(sorted(found.items()))
    assert policy.parse_assignments(f"{k}={v}" for k, v in reversed(attributes)) == attributes
    if len(attributes) > 1:
        with pytest.raises(InvalidInput):
            policy.decode(",".join(f"{k}={v}" for k, v in reversed(attributes)))


@given(ATTRIBUTES, ATTRIBUTES)
def test_a_user_qualifies_with_every_required_attribute_exactly(held: dict[str, str], required: dict[str, str]) -> None:
    want = policy.check_attributes(required.items())
    assert policy.satisfies(held, want) == all(held.get(k) == v for k, v in want)
    assert policy.satisfies(held | dict(want), want)
    assert policy.satisfies(held, ())


@pytest.mark.parametrize("word", ["Clearance=x", "a=b c", "a=", "=b", "a=b=c", "a=b,c", "no-equals", "a" * 33 + "=b", "a=" + "b" * 65])
def test_bad_attributes_are_refused_with_a_reason(word: str) -> None:
    with pytest.raises(InvalidInput):
        policy.parse_assignments([word])


def test_too_many_or_repeated_attributes_are_refused() -> None:
    with pytest.raises(InvalidInput, match="twice"):
        policy.parse_assignments(["a=1", "a=2"])
    with pytest.raises(InvalidInput, match="at most"):
        policy.check_attributes((f"k{i}", "v") for i in range(policy.MAX_ATTRIBUTES + 1))


@given(ATTRIBUTES)
def test_attributes_are_a_signed_certificate_field(found: dict[str, str]) -> None:
    attributes = policy.check_attributes(found.items())
    cert = user_cert(attributes)
    assert certs.decode_certificate(cert.encoded).attributes == attributes
    body, signature = cbor.decode(cert.encoded, "certificate")
    fields = cbor.decode(body, "certificate")
    assert ("attrs" in fields) == bool(attributes)  # none: the certificate keeps its old shape and bytes
    fields["attrs"] = dict(attributes) | {"clearance": "top"}  # an attribute added after signing
    with pytest.raises(CertificateInvalid):
        certs.decode_certificate(cbor.encode([cbor.encode(fields), signature]))


def test_only_user_certificates_carry_attributes_and_an_empty_map_is_not_written() -> None:
    with pytest.raises(InvalidInput):
        certs.issue_certificate(ADMIN, workspace=WS, kind=certs.SubjectKind.NODE, key=bytes(32), name="n", role=certs.Role.NODE, issued_at=1, attributes=(("a", "b"),))
    cert = user_cert(())
    body, _ = cbor.decode(cert.encoded, "certificate")
    fields = cbor.decode(body, "certificate")
    fields["attrs"] = {}
    resigned = cbor.encode(fields)
    with pytest.raises(CertificateInvalid, match="empty attribute map"):
        certs.decode_certificate(cbor.encode([resigned, crypto.sign(ADMIN, certs.CERT_DOMAIN + resigned)]))
