"""Audit trails as feeds (appliance/audit_feed.py) and their place in the bundle payload
(format 4's `audit` field): round trips, truncation and garbage refused, and the checks a
receiver makes - gaps, forks, forged or uncovered entries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import audit, cbor, crypto
from appliance.audit_feed import AuditCarry, FeedHead, FeedPart, HeldBranch, Restore, TrailAck, carried_bytes, extend_feed, up_to_signed, verify_feed, within
from sync import bundle_payload, errors, messages
from sync.bundle_payload import BundleContent, Limits, decode_payload, encode_payload

KEY = crypto.new_signing_key(bytes([7]) * 32)
ORIGIN = bytes(KEY.verify_key)
OTHER = crypto.new_signing_key(bytes([8]) * 32)
LIMITS = Limits()


def feed(n: int, unsigned: frozenset[int] = frozenset()) -> list[audit.AuditEntry]:
    """`n` entries; those whose seq is in `unsigned` are failed unlocks written while locked."""
    out: list[audit.AuditEntry] = []
    for seq in range(1, n + 1):
        locked = seq in unsigned
        out.append(audit.make_entry(out[-1] if out else None, 1000 + seq, "-" if locked else "ab" * 32, "unlock_failed" if locked else "user_added", {"n": seq, "ü": "x"}, None if locked else KEY))
    return out


entries_st = st.builds(
    lambda n, unsigned: up_to_signed(feed(n, frozenset(unsigned)), n),
    st.integers(min_value=1, max_value=8),
    st.sets(st.integers(min_value=1, max_value=7), max_size=3),
)


hashes = st.binary(min_size=32, max_size=32)
restores_st = st.lists(st.tuples(st.integers(min_value=1, max_value=2**40), hashes, st.integers(min_value=0, max_value=2**62)), max_size=4, unique_by=lambda r: r[0])
acks_st = st.builds(
    lambda seq, digest, restores: TrailAck(FeedHead(seq, digest), tuple(Restore(*r) for r in sorted(restores) if r[0] <= seq)),
    st.integers(min_value=0, max_value=2**40),
    hashes,
    restores_st,
)


def branch(entries: list[audit.AuditEntry]) -> HeldBranch:
    """What a node holding `entries` passes `extend_feed`."""
    return HeldBranch(FeedHead(entries[-1].seq, entries[-1].hash), {e.seq: e for e in entries}) if entries else HeldBranch()


@settings(max_examples=40, deadline=None)
@given(entries_st, st.dictionaries(hashes, acks_st, max_size=3))
def test_the_audit_field_round_trips_in_format_4(entries: tuple[audit.AuditEntry, ...], held: dict[bytes, TrailAck]) -> None:
    carry = AuditCarry(held, (FeedPart(ORIGIN, entries),) if entries else ())
    content = BundleContent(audit=carry)
    version = bundle_payload.version_for(content)
    assert version == (4 if carry else 3)
    assert decode_payload(encode_payload(content, version), LIMITS, version) == content


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=400), st.data())
def test_a_truncated_or_damaged_format_4_payload_is_refused(cut: int, data: st.DataObject) -> None:
    content = BundleContent(audit=AuditCarry({ORIGIN: TrailAck(FeedHead(3, bytes(32)))}, (FeedPart(ORIGIN, tuple(feed(3))),)))
    raw = cbor.encode(bundle_payload.content_to_wire(content, 4))
    truncated = raw[: max(0, len(raw) - cut)]
    with pytest.raises(errors.BundleRejected):
        decode_payload(bundle_payload.compress(truncated), LIMITS, 4)
    garbage = bytearray(raw)
    at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    garbage[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        decoded = decode_payload(bundle_payload.compress(bytes(garbage)), LIMITS, 4)
    except errors.BundleRejected:
        return
    # A flip the codec cannot see (inside a hash, a text) must then fail the feed's own checks.
    if decoded.audit.parts and decoded.audit.parts[0].entries != content.audit.parts[0].entries:
        part = decoded.audit.parts[0]
        assert part.origin != ORIGIN or not verify_feed(part.entries, part.origin).ok


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({"held": {}}, "exactly held and feeds"),
        ({"held": {"AB" * 32: [1, b"\0" * 32, []]}, "feeds": {}}, "64 lowercase hex"),
        ({"held": {"ab" * 32: 1}, "feeds": {}}, "is not \\[seq, hash, restores\\]"),
        ({"held": {"ab" * 32: [-1, b"\0" * 32, []]}, "feeds": {}}, "sequence number"),
        ({"held": {"ab" * 32: [1, b"\0" * 31, []]}, "feeds": {}}, "head hash must be 32 bytes"),
        ({"held": {"ab" * 32: [1, b"\0" * 32, None]}, "feeds": {}}, "not a list of at most 16"),
        ({"held": {"ab" * 32: [1, b"\0" * 32, [[2, b"\0" * 32, 5]]]}, "feeds": {}}, "restore's seq or time"),
        ({"held": {"ab" * 32: [3, b"\0" * 32, [[2, b"\0" * 32]]]}, "feeds": {}}, "not \\[seq, hash, at\\]"),
        ({"held": {"ab" * 32: [3, b"\0" * 32, [[2, b"\0" * 32, 5], [1, b"\0" * 32, 6]]]}, "feeds": {}}, "not in order"),
        ({"held": {}, "feeds": {"ab" * 32: []}}, "non-empty list"),
        ({"held": {}, "feeds": {"ab" * 32: [[1, 2, "a", "b", "{}", b"\0" * 32, b"\0" * 32]]}}, "list of 8 fields"),
        ({"held": {}, "feeds": {"ab" * 32: [[1, 2, "a" * 65, "b", "{}", b"\0" * 32, b"\0" * 32, None]]}}, "too long"),
        ({"held": {}, "feeds": {"ab" * 32: [[1, 2, "a", "b", "{}", b"\0" * 31, b"\0" * 32, None]]}}, "prev_hash must be 32 bytes"),
        ({"held": {}, "feeds": {"ab" * 32: [[0, 2, "a", "b", "{}", b"\0" * 32, b"\0" * 32, None]]}}, "seq or time"),
    ],
)
def test_a_malformed_audit_field_is_refused_with_its_reason(wire: object, message: str) -> None:
    content = bundle_payload.content_to_wire(BundleContent(), 4)
    content["audit"] = wire
    with pytest.raises(errors.Malformed, match=message):
        decode_payload(bundle_payload.compress(cbor.encode(content)), LIMITS, 4)


def test_format_3_cannot_carry_trails_and_refuses_the_field() -> None:
    content = BundleContent(audit=AuditCarry({ORIGIN: TrailAck(FeedHead(1, bytes(32)))}))
    with pytest.raises(ValueError, match="format 3 cannot carry audit trails"):
        encode_payload(content, 3)
    wire = bundle_payload.content_to_wire(BundleContent(), 3) | {"audit": {"held": {}, "feeds": {}}}
    with pytest.raises(errors.Malformed, match="exactly the fields"):
        decode_payload(bundle_payload.compress(cbor.encode(wire)), LIMITS, 3)


@given(st.integers(min_value=1, max_value=10), st.sets(st.integers(min_value=1, max_value=10), max_size=4), st.data())
def test_a_feed_verifies_and_an_edit_with_recomputed_hashes_is_named(n: int, unsigned: set[int], data: st.DataObject) -> None:
    entries = list(up_to_signed(feed(n, frozenset(unsigned)), n))
    if not entries:
        return
    assert verify_feed(entries, ORIGIN).ok and verify_feed(entries, ORIGIN).count == len(entries)
    assert not verify_feed(entries, bytes(OTHER.verify_key)).ok
    i = data.draw(st.integers(min_value=0, max_value=len(entries) - 1))
    edited, prev = entries[:i], entries[i].prev_hash
    for entry in entries[i:]:
        text = '{"forged":1}' if entry.seq == i + 1 else entry.detail
        digest = audit.entry_hash(entry.seq, entry.at, entry.actor, entry.action, text, prev)
        edited.append(audit.AuditEntry(entry.seq, entry.at, entry.actor, entry.action, text, prev, digest, entry.signature))
        prev = digest
    verdict = verify_feed(edited, ORIGIN)
    first_signed_from_i = next(e.seq for e in entries[i:] if e.signature is not None)
    assert not verdict.ok and verdict.problem is not None
    assert verdict.problem.startswith(f"entry {first_signed_from_i} ")
    if first_signed_from_i != i + 1:  # the edited entry was unsigned: named with the signed one covering it
        since = first_signed_from_i
        while since > 1 and entries[since - 2].signature is None:
            since -= 1
        assert f"(or an unsigned entry from {since} on before it)" in verdict.problem


def test_unsigned_entries_count_only_once_a_signature_covers_them() -> None:
    entries = feed(4, frozenset({3, 4}))
    verdict = verify_feed(entries, ORIGIN)
    assert not verdict.ok and verdict.count == 2 and verdict.problem == "entries from 3 on are not covered by a signature of their node's key"
    assert up_to_signed(entries, 10) == tuple(entries[:2])
    # An entry rewritten without the key, its signature dropped, is not "legacy": it needs cover.
    stripped = [*entries[:1], audit.AuditEntry(**{**entries[1].__dict__, "signature": None})]
    assert not verify_feed(stripped, ORIGIN).ok


def test_extending_a_held_feed_skips_what_is_held_and_refuses_gaps_forks_and_forgeries() -> None:
    entries = feed(6, frozenset({2}))
    held = branch(entries[:3])
    assert extend_feed(held, FeedPart(ORIGIN, tuple(entries))).new == tuple(entries[3:])
    assert extend_feed(held, FeedPart(ORIGIN, tuple(entries[3:]))).new == tuple(entries[3:])
    assert extend_feed(branch(entries), FeedPart(ORIGIN, tuple(entries))).new == ()
    gap = extend_feed(held, FeedPart(ORIGIN, tuple(entries[4:])))
    assert (gap.new, gap.problem, gap.recoverable) == ((), "entries 4 to 4 are missing (a gap)", True)
    forked = feed(3)  # another history under the same key (no restore): entry 2 differs from the one held
    fork = extend_feed(branch(forked), FeedPart(ORIGIN, tuple(entries)))
    assert fork.recoverable and fork.new == () and fork.supersedes is None
    assert fork.problem == "entry 2 differs from the one held here: the trail forked, and neither branch was restored from a backup there (a rewritten or cloned store), so the held one is kept"
    # Another history from entry 4 on, signed by the node's key, sent from the 5 this node
    # acknowledged: entry 6 does not follow the held entry 5, and the part does not reach back.
    other = entries[:3]
    for seq in (4, 5, 6):
        other.append(audit.make_entry(other[-1], 9000 + seq, "-", "backup", {"other": seq}, KEY))
    unseen = extend_feed(branch(entries[:5]), FeedPart(ORIGIN, (other[5],)))
    assert unseen.recoverable and unseen.new == () and unseen.problem is not None and "the trail forked" in unseen.problem
    unsigned_fork = audit.make_entry(other[4], 9100, "-", "backup", {}, OTHER)
    assert extend_feed(branch(entries[:5]), FeedPart(ORIGIN, (unsigned_fork,))).recoverable is False  # not its node's: a forgery
    forged = audit.make_entry(entries[3], 5000, "-", "backup", {}, OTHER)
    bad = extend_feed(branch(entries[:4]), FeedPart(ORIGIN, (forged,)))
    assert (bad.problem, bad.recoverable) == ("entry 5 was altered: its signature by its node's key does not verify", False)
    # A branch that parts from the held one must verify too: a forged one is refused, not skipped.
    forged_branch = extend_feed(branch(entries[:5]), FeedPart(ORIGIN, (entries[3], forged)))
    assert not forged_branch.recoverable and forged_branch.problem is not None and "does not verify" in forged_branch.problem
    assert extend_feed(held, FeedPart(ORIGIN, (entries[3], entries[5]))).problem == "its entries are not consecutive"
    tail = feed(3, frozenset({3}))
    assert extend_feed(HeldBranch(), FeedPart(ORIGIN, tuple(tail))).problem == "its last entry 3 is not signed"


@given(st.integers(min_value=1, max_value=12), st.integers(min_value=0, max_value=4000))
def test_a_part_is_cut_to_its_byte_budget_and_ends_signed(n: int, max_bytes: int) -> None:
    entries = feed(n, frozenset({2, 5}))
    fit = within(entries, max_bytes)
    assert carried_bytes(entries[:fit]) <= max_bytes and (fit == n or carried_bytes(entries[: fit + 1]) > max_bytes)
    part = up_to_signed(entries, fit)
    assert part == tuple(entries[: len(part)]) and (not part or part[-1].signature is not None)
    assert all(e.signature is None for e in entries[len(part) : fit])


@settings(max_examples=30, deadline=None)
@given(entries_st, st.integers(min_value=1, max_value=60))
def test_the_lan_trails_message_round_trips_and_refuses_truncation(entries: tuple[audit.AuditEntry, ...], cut: int) -> None:
    message = messages.Trails(AuditCarry({ORIGIN: TrailAck(FeedHead(len(entries), entries[-1].hash if entries else bytes(32)))}, (FeedPart(ORIGIN, entries),) if entries else ()))
    raw = messages.encode_message(message)
    assert messages.decode_message(raw) == message
    with pytest.raises(errors.MessageMalformed):
        messages.decode_message(raw[: max(0, len(raw) - cut)])
    with pytest.raises(errors.MessageMalformed, match="exactly the fields"):
        messages.decode_message(cbor.encode({"t": "audit", "held": {}}))
