from __future__ import annotations

import pytest

from appliance import cbor, certs, crypto
from appliance.errors import CertificateInvalid, WrongPassphrase
from tests.conftest import FAST

NOW = 1_800_000_000_000


def key(n: int) -> crypto.nacl.signing.SigningKey:
    return crypto.new_signing_key(bytes([n]) * 32)


WS = key(1)
WS_PUB = bytes(WS.verify_key)


def user_cert(issuer, subject, name: str, role: str = "member", at: int = NOW, expires: int | None = None) -> certs.Certificate:
    return certs.issue_certificate(issuer, workspace=WS_PUB, kind="user", key=bytes(subject.verify_key), name=name, role=role, issued_at=at, expires_at=expires)


def test_passphrase_sealing_round_trips_and_rejects_a_wrong_passphrase() -> None:
    salt, nonce = bytes(16), bytes(24)
    sealed = crypto.seal_with_passphrase("a good passphrase", b"secret seed", salt, nonce, FAST)
    assert b"secret seed" not in sealed
    assert crypto.open_with_passphrase("a good passphrase", sealed, salt, FAST) == b"secret seed"
    with pytest.raises(WrongPassphrase):
        crypto.open_with_passphrase("a bad passphrase", sealed, salt, FAST)


def test_certificate_round_trip_and_tamper_detection() -> None:
    cert = user_cert(WS, key(2), "alice", "admin")
    assert certs.decode_certificate(cert.encoded) == cert
    body, signature = cbor.decode(cert.encoded, "t")
    forged_body = body.replace(b"admin", b"ADMIN")
    with pytest.raises(CertificateInvalid):
        certs.decode_certificate(cbor.encode([forged_body, signature]))
    with pytest.raises(CertificateInvalid):
        certs.decode_certificate(cert.encoded + b"\x00")  # trailing bytes


def test_non_canonical_encoding_is_rejected() -> None:
    cert = user_cert(WS, key(2), "alice")
    body, signature = cbor.decode(cert.encoded, "t")
    # the same array, but with a 1-byte length where the canonical form has none
    loose = b"\x98\x02" + cbor.encode(body) + cbor.encode(signature)
    with pytest.raises(CertificateInvalid):
        certs.decode_certificate(loose)


def test_directory_trusts_a_chain_through_admins_only() -> None:
    alice, bob, carol, mallory = key(2), key(3), key(4), key(5)
    issued = [
        user_cert(WS, alice, "alice", "admin"),
        user_cert(alice, bob, "bob", "member"),
        user_cert(bob, carol, "carol", "member"),  # bob is no admin: not trusted
        user_cert(mallory, mallory, "mallory", "admin"),  # self-signed: not trusted
    ]
    directory = certs.resolve_directory(WS_PUB, issued, [], NOW)
    assert {c.name for c in directory.users.values()} == {"alice", "bob"}


def test_revocation_removes_the_subject_and_what_it_issued_and_never_flips_back() -> None:
    alice, bob, carol = key(2), key(3), key(4)
    issued = [user_cert(WS, alice, "alice", "admin"), user_cert(WS, bob, "bob", "admin"), user_cert(bob, carol, "carol")]
    bob_revoked = certs.issue_revocation(alice, workspace=WS_PUB, subject=bytes(bob.verify_key), reason="lost laptop", revoked_at=NOW)
    alice_revoked_by_bob = certs.issue_revocation(bob, workspace=WS_PUB, subject=bytes(alice.verify_key), reason="retaliation", revoked_at=NOW)
    directory = certs.resolve_directory(WS_PUB, issued, [bob_revoked, alice_revoked_by_bob], NOW)
    # Both revocations were issued by admins in good standing at some point: both stick.
    assert directory.users == {}
    directory = certs.resolve_directory(WS_PUB, issued, [bob_revoked], NOW)
    assert {c.name for c in directory.users.values()} == {"alice"}
    assert bytes(bob.verify_key) in directory.revoked


def test_expired_certificates_and_newest_role_wins() -> None:
    alice, bob = key(2), key(3)
    issued = [user_cert(WS, alice, "alice", "admin", expires=NOW - 1), user_cert(WS, bob, "bob", "member"), user_cert(WS, bob, "bob", "observer", at=NOW + 1)]
    directory = certs.resolve_directory(WS_PUB, issued, [], NOW + 10)
    assert {c.name: c.role for c in directory.users.values()} == {"bob": "observer"}


def test_certificates_for_another_workspace_are_ignored() -> None:
    other = key(9)
    foreign = certs.issue_certificate(other, workspace=bytes(other.verify_key), kind="user", key=bytes(key(2).verify_key), name="eve", role="admin", issued_at=NOW)
    assert certs.resolve_directory(WS_PUB, [foreign], [], NOW).users == {}
