"""The audit log's hash chain, signed by the node's key. Pure: entries in, verdict out.

Each entry's hash covers its sequence number, time, actor, action, detail and the previous
entry's hash, so editing, deleting or reordering any entry breaks the chain from there on.
Each entry's hash is also signed with the node's Ed25519 key: a chain edited and recomputed
by someone without the key fails at the first entry whose signature no longer verifies.
(Cutting entries off the end leaves a valid shorter chain; `audit --verify` prints the count
and head hash so an operator can compare with a copy taken earlier.)

Unsigned entries are accepted in two cases only: entries written before this version signed
them (`seq <= legacy_until`, fixed when the store was upgraded), and failed unlocks, written
while the key is still sealed - each is covered by the next signed entry, whose hash chains
over it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import nacl.signing

from appliance import cbor, crypto

GENESIS = bytes(32)
SIGNATURE_DOMAIN = b"rallypoint/audit/v1\x00"
WRITTEN_LOCKED = frozenset({"unlock_failed"})  # actions written before the node's key is unsealed


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: int
    actor: str
    action: str
    detail: str  # canonical JSON object
    prev_hash: bytes
    hash: bytes
    signature: bytes | None = None  # the node's signature over the hash


@dataclass(frozen=True)
class AuditVerdict:
    ok: bool
    count: int
    head: bytes
    problem: str | None  # the first broken link, described
    legacy: int = 0  # entries from before audit signing, unsigned (seq 1..legacy)
    uncovered: int = 0  # failed unlocks at the end, not yet covered by a signed entry


def canonical_detail(detail: dict[str, object]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(seq: int, at: int, actor: str, action: str, detail: str, prev_hash: bytes) -> bytes:
    return crypto.sha256(cbor.encode([seq, at, actor, action, detail, prev_hash]))


def make_entry(
    prev: AuditEntry | None, at: int, actor: str, action: str, detail: dict[str, object], signer: nacl.signing.SigningKey | None
) -> AuditEntry:
    """The next entry; `signer` (the node's key) is None only for actions in WRITTEN_LOCKED."""
    if signer is None and action not in WRITTEN_LOCKED:
        raise ValueError(f"audit action {action!r} must be signed by the node's key")
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS if prev is None else prev.hash
    text = canonical_detail(detail)
    digest = entry_hash(seq, at, actor, action, text, prev_hash)
    signature = None if signer is None else crypto.sign(signer, SIGNATURE_DOMAIN + digest)
    return AuditEntry(seq, at, actor, action, text, prev_hash, digest, signature)


def verify_chain(entries: Iterable[AuditEntry], node_key: bytes, *, legacy_until: int = 0) -> AuditVerdict:
    """Walks the chain: links, hashes, and the signatures of `node_key`. The problem names the
    first bad entry by its sequence number."""
    expected_seq, prev_hash, count, legacy = 1, GENESIS, 0, 0
    unsigned_since: int | None = None  # the first failed unlock not yet covered by a signature
    for entry in entries:
        if entry.seq != expected_seq:
            return AuditVerdict(False, count, prev_hash, f"entry {expected_seq} is missing or out of order (found {entry.seq})", legacy)
        if entry.prev_hash != prev_hash:
            return AuditVerdict(False, count, prev_hash, f"entry {entry.seq} does not link to entry {entry.seq - 1}", legacy)
        if entry_hash(entry.seq, entry.at, entry.actor, entry.action, entry.detail, entry.prev_hash) != entry.hash:
            return AuditVerdict(False, count, prev_hash, f"entry {entry.seq} was altered", legacy)
        if entry.signature is not None:
            if not crypto.verify(node_key, SIGNATURE_DOMAIN + entry.hash, entry.signature):
                also = "" if unsigned_since is None else f" (or an unsigned entry from {unsigned_since} on before it)"
                return AuditVerdict(False, count, prev_hash, f"entry {entry.seq}{also} was altered: its signature by this node's key does not verify", legacy)
            unsigned_since = None
        elif entry.seq <= legacy_until:
            legacy += 1
        elif entry.action in WRITTEN_LOCKED:
            unsigned_since = entry.seq if unsigned_since is None else unsigned_since
        else:
            return AuditVerdict(False, count, prev_hash, f"entry {entry.seq} is not signed by this node's key: it was written or rewritten without it", legacy)
        prev_hash, expected_seq, count = entry.hash, expected_seq + 1, count + 1
    uncovered = 0 if unsigned_since is None else expected_seq - unsigned_since
    return AuditVerdict(True, count, prev_hash, None, legacy, uncovered)
