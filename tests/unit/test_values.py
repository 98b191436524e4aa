"""The enums that replaced strings keep every stored and printed string as it was, and the rules
that decide them (trust of a node, an import's outcome) live in one place."""

from __future__ import annotations

import json
from enum import StrEnum

import pytest

from appliance import certs, crypto, documents, netpolicy
from appliance.errors import InvalidInput
from appliance.model import Carrier, ImportOutcome, ImportSummary
from sync import errors as sync_errors

NOW = 1_800_000_000_000
WS = crypto.new_signing_key(bytes([1]) * 32)
WS_PUB = bytes(WS.verify_key)

# Every value as the store, the documents, certificates and `--json` have always spelled it.
SPELLED: dict[type[StrEnum], list[str]] = {
    certs.Role: ["admin", "member", "observer", "node", "revoked"],
    certs.SubjectKind: ["user", "node"],
    certs.Trust: ["trusted", "unknown", "revoked", "other workspace"],
    documents.DocumentKind: ["directory", "head", "segment"],
    documents.ChannelKind: ["public", "private", "direct"],
    documents.ChannelRole: ["owner", "admin", "member", "removed"],
    netpolicy.RuleAction: ["allow", "deny"],
    Carrier: ["bundle", "lan"],
    ImportOutcome: [
        "accepted", "duplicate", "seen", "not for this node", "waiting", "Unreadable", "Tampered", "Truncated", "UnknownSender",
        "RevokedSender", "UnsupportedVersion", "TooLarge", "Malformed", "ChangeRejected", "IdentityConflict", "AuditTrailRefused",
    ],
}  # fmt: skip


@pytest.mark.parametrize("enum", list(SPELLED), ids=lambda enum: enum.__name__)
def test_members_are_the_strings_they_replaced(enum: type[StrEnum]) -> None:
    members = list(enum)
    assert [str(m) for m in members] == SPELLED[enum]
    assert [f"{m}" for m in members] == SPELLED[enum]
    assert json.loads(json.dumps(members)) == SPELLED[enum]
    assert all(m == text and hash(m) == hash(text) for m, text in zip(members, SPELLED[enum], strict=True))


def node_cert(subject: int) -> certs.Certificate:
    key = bytes(crypto.new_signing_key(bytes([subject]) * 32).verify_key)
    return certs.issue_certificate(WS, workspace=WS_PUB, kind=certs.SubjectKind.NODE, key=key, name=f"n{subject}", role=certs.Role.NODE, issued_at=NOW)


def test_a_certificate_signs_the_same_bytes_for_an_enum_or_its_string() -> None:
    alice = bytes(crypto.new_signing_key(bytes([2]) * 32).verify_key)
    by_enum = certs.issue_certificate(WS, workspace=WS_PUB, kind=certs.SubjectKind.USER, key=alice, name="alice", role=certs.Role.ADMIN, issued_at=NOW)
    by_text = certs.issue_certificate(WS, workspace=WS_PUB, kind="user", key=alice, name="alice", role="admin", issued_at=NOW)  # type: ignore[arg-type]
    assert by_enum.encoded == by_text.encoded
    decoded = certs.decode_certificate(by_text.encoded)
    assert type(decoded.role) is certs.Role and decoded.role is certs.Role.ADMIN
    assert type(decoded.kind) is certs.SubjectKind and decoded.kind is certs.SubjectKind.USER
    assert node_cert(3).role is certs.Role.NODE


def test_a_revoked_pseudo_role_is_never_granted() -> None:
    alice = bytes(crypto.new_signing_key(bytes([2]) * 32).verify_key)
    assert certs.Role.REVOKED not in certs.ROLES and certs.Role.NODE not in certs.ROLES
    with pytest.raises(InvalidInput, match="unknown role 'revoked'"):
        certs.issue_certificate(WS, workspace=WS_PUB, kind=certs.SubjectKind.USER, key=alice, name="alice", role=certs.Role.REVOKED, issued_at=NOW)


def test_trust_of_a_node_key_comes_from_the_directory() -> None:
    kept, revoked, stranger = node_cert(3), node_cert(4), node_cert(5)
    revocation = certs.issue_revocation(WS, workspace=WS_PUB, subject=revoked.key, reason="lost", revoked_at=NOW + 1)
    directory = certs.resolve_directory(WS_PUB, [kept, revoked], [revocation], NOW + 2)
    assert directory.trust_of(kept.key) is certs.Trust.TRUSTED
    assert directory.trust_of(revoked.key) is certs.Trust.REVOKED
    assert directory.trust_of(stranger.key) is certs.Trust.UNKNOWN


def test_document_ids_name_their_kind() -> None:
    channel = "0123456789abcdef0123"
    assert documents.parse_doc_id(documents.DIRECTORY_DOC) == (documents.DocumentKind.DIRECTORY, "", 0)
    head = documents.parse_doc_id(documents.head_doc_id(channel))
    assert head.kind is documents.DocumentKind.HEAD and head.channel_id == channel and head.segment == 0
    segment = documents.parse_doc_id(documents.segment_doc_id(channel, 7))
    kind, channel_id, index = segment  # still unpacks as the triple it was
    assert (kind, channel_id, index) == ("segment", channel, 7) and segment.kind is documents.DocumentKind.SEGMENT


def test_a_channel_head_reads_back_its_kind_as_the_enum() -> None:
    doc = documents.new_document(bytes(48))
    documents.create_head(doc, name="ops", purpose="", kind=documents.ChannelKind.PUBLIC, created_by="ab", created_at=NOW)
    head = documents.read_head(doc, "c")
    assert head is not None and head.kind is documents.ChannelKind.PUBLIC and head.members == {"ab": "owner"}
    documents.set_member(doc, "cd", documents.ChannelRole.MEMBER)
    head = documents.read_head(doc, "c")
    assert head is not None and head.members == {"ab": "owner", "cd": "member"}
    assert all(type(role) is str for role in head.members.values())  # what the document says, as it says it


def test_every_bundle_refusal_has_its_outcome() -> None:
    """A bundle refused by a BundleRejected subclass is recorded under that class's name."""
    refusals, pending = set(), [sync_errors.BundleRejected]
    while pending:
        cls = pending.pop()
        refusals.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    refusals -= {"BundleRejected", "NotAddressedToMe"}  # the base is never raised; not-for-me is not a refusal
    assert refusals <= {str(outcome) for outcome in ImportOutcome if outcome.rejected}


def test_an_import_that_stored_nothing_new_is_a_duplicate() -> None:
    def summary(changes: int, blobs: int) -> ImportSummary:
        return ImportSummary(changes=changes, duplicates=3, directory_entries=0, channels=(), blobs=blobs, preview=False)

    assert summary(0, 0).outcome is ImportOutcome.DUPLICATE
    assert summary(2, 0).outcome is ImportOutcome.ACCEPTED and summary(0, 1).outcome is ImportOutcome.ACCEPTED
    assert not ImportOutcome.DUPLICATE.rejected and ImportOutcome.TAMPERED.rejected and ImportOutcome.UNREADABLE.rejected
